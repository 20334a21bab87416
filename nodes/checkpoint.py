"""LeanCheckpointLoader ("Load Checkpoint (mmap)"): a checkpoint loader that keeps one copy of the
weights in memory and reads only the parts that are used.

ComfyUI itself builds everything (quant conversion, config detection, model classes, CLIP, VAE, the
patcher class its own loaders use) and loads the weights with its own code (the modules'
``load_state_dict`` with its ``assign`` semantics), so its memory manager owns the model on every
host, DynamicVRAM included (nodes/_host.py says what the host does).  Lean changes where the tensors
come from: zero-copy views of the mapped file (or a read/pread buffer), handed over one child module
at a time, after which the file pages that were copied leave the process's resident set.  On the CPU,
the weights of the UNet, CLIP and VAE are built in mappings of their own, so they go back to the OS as
soon as the model is freed.  CLIP and VAE are loaded by the host's own code from the same mapping,
only when switched on.
"""
import logging

import torch

import comfy.model_detection
import comfy.model_management as mm
import comfy.ops
import comfy.sd
import comfy.utils
import folder_paths

from ..core import ckpt as core
from ..core import memory
from . import _host

log = logging.getLogger("lean")

DISPLAY = "Load Checkpoint (mmap)"
# load_mode of both Lean loaders (this one and Load Diffusion Model (mmap)), one spec: the modes, then the retired
# values a saved workflow may hold (still accepted: they load with the nearest mode and a note in the report).
LOAD_MODES = list(core.MODES) + list(core.RETIRED_MODES)
LOAD_MODE_TOOLTIP = ("mmap: zero-copy views of the file, only used tensors are read. read: read the needed parts "
                     "with large sequential reads first (network drives). In both, ComfyUI's memory manager then "
                     "moves the model to the GPU, partially if VRAM is small. direct: retired (kept so saved "
                     "workflows load): loads as mmap, and the report says so.")
WEIGHT_DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
                 "fp8_e4m3fn": getattr(torch, "float8_e4m3fn", None)}


class PartNotLoaded(RuntimeError, AttributeError):
    """Raised when a switched-off output is used.  Also an AttributeError so that ``hasattr`` probes
    simply answer False."""


class NotLoaded:
    """What the CLIP/VAE output carries when that part was switched off: nothing was read for it, and
    any use raises a clear error instead of ``'NoneType' object has no attribute ...``."""

    def __init__(self, part, flag, ckpt_name, reason=None):
        self._part, self._flag, self._ckpt = part, flag, ckpt_name
        self._reason = reason or f"{flag} is off"

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_part", "_flag", "_ckpt", "_reason"):
            raise AttributeError(name)
        fix = (f"Switch {self._flag} on in the {DISPLAY} node, or connect a separate {self._part} loader"
               if self._reason.endswith("is off") else f"Connect a separate {self._part} loader")
        raise PartNotLoaded(
            f"{DISPLAY}: there is no {self._part} from '{self._ckpt}' ({self._reason}), so it cannot be used here "
            f"(a node asked for .{name}). {fix}" + (" (or use LoraLoaderModelOnly for LoRAs)." if self._part == "CLIP" else "."))

    def __repr__(self):
        return f"<no {self._part}: {self._reason}>"


def _dtype_name(dt):
    return str(dt).replace("torch.", "") if dt is not None else "none"


def _own_mappings():
    """Around building a model, CLIP or VAE with the host's classes: the (uninitialised) CPU weights of
    ComfyUI's ops get a mapping each, which goes back to the OS the moment the part is freed.  malloc'd
    weights would stay with glibc after an unload, and RSS would creep up over many reloads (issue 9)."""
    return core.weights_in_own_mappings(lambda module: isinstance(module, comfy.ops.CastWeightBiasOp))


GROUP_CAP = 192 << 20  # file bytes handed over in one load_state_dict at most (where the modules allow)


def _nbytes(v):
    try:
        return v.numel() * v.element_size() if isinstance(v, torch.Tensor) else 0
    except (RuntimeError, TypeError, NotImplementedError):
        return 0


def _groups(keys, dm, sizes=None, cap=GROUP_CAP):
    """Keys of the diffusion model's state dict grouped by the module that is handed them in one
    ``load_state_dict``: the first module below a chain of containers (ModuleList/Sequential), e.g.
    ``input_blocks.1.0`` (one ResBlock), so each group is a few tens of MB and its file pages leave the
    resident set before the next group is read.  A group over ``cap`` file bytes (``sizes``: key -> bytes;
    SDXL's SpatialTransformers with 10 blocks at 1280 channels are 0.65 GB of fp16) is split into its child
    modules, recursively; the module's own direct tensors follow its children in a small group of their own,
    so every lazily built child has its weights before the parent's ``load_state_dict`` visits it.  Keys of
    the model's own tensors go last, under ""."""
    containers = (torch.nn.ModuleList, torch.nn.Sequential, torch.nn.ModuleDict)
    groups = {}
    for k in keys:
        parts = k.split(".")
        mod, path = dm, []
        for name in parts[:-1]:
            child = mod._modules.get(name)
            if child is None:
                break
            path.append(name)
            mod = child
            if not isinstance(child, containers):
                break
        groups.setdefault(".".join(path), []).append(k)
    rest = groups.pop("", None)
    if sizes is None:
        out = groups
    else:
        out = {}

        def split(group, gkeys):
            if sum(sizes.get(k, 0) for k in gkeys) <= cap:
                out[group] = gkeys
                return
            owner = dm.get_submodule(group)
            cut = len(group) + 1
            children, own = {}, []
            for k in gkeys:
                name = k[cut:].split(".", 1)
                if len(name) == 2 and name[0] in owner._modules:
                    children.setdefault(f"{group}.{name[0]}", []).append(k)
                else:
                    own.append(k)
            for g, ks in children.items():
                split(g, ks)
            if own:
                out[group] = own

        for group, gkeys in groups.items():
            split(group, gkeys)
    if rest:
        out[""] = rest
    return out


def _data_ptrs(module):
    out = set()
    for t in module.state_dict().values():
        try:
            if isinstance(t, torch.Tensor) and t.numel():
                out.add(t.data_ptr())
        except (RuntimeError, TypeError, NotImplementedError):  # tensor subclasses (quantized) without one
            pass
    return out


def _load_diffusion_model(ck, sd, prefix, model_config, weight_dtype, load_mode):
    """Build the diffusion model with the host's classes and hand it the file's tensors through the host's own
    weight loading (``load_state_dict`` of the model's modules, with the host's ``assign`` semantics), one
    child module at a time: after each, the file pages of the tensors that were copied leave the resident set,
    so the file and the model never add up.  ``sd`` is the (converted) state dict of views."""
    parameters = comfy.utils.calculate_parameters(sd, prefix)
    file_dtype = comfy.utils.weight_dtype(sd, prefix)
    load_device = mm.get_torch_device()
    supported = list(model_config.supported_inference_dtypes)
    quantized = _host.model_is_quantized(model_config)
    if quantized:
        file_dtype = None
    unet_dtype = weight_dtype or mm.unet_dtype(model_params=parameters, supported_dtypes=supported, weight_dtype=file_dtype)
    if quantized and _host.quant_style() == "quant_config":
        manual_cast = mm.unet_manual_cast(None, load_device, supported)
    else:
        manual_cast = mm.unet_manual_cast(unet_dtype, load_device, supported)
    _host.set_inference_dtype(model_config, unet_dtype, manual_cast, load_device)
    # Every mode builds the model where the host would (CPU when it does not fit, partial loading later):
    # the host's memory manager moves it to the device when a sampler needs it.
    init_device = mm.unet_inital_load_device(parameters, unet_dtype)

    # Parameters are allocated uninitialised (ComfyUI's ops skip weight init; with DynamicVRAM they are not
    # allocated at all), so on the CPU they cost no memory until the load writes them.
    with _own_mappings():
        model = model_config.get_model(sd, prefix, device=init_device)
    patcher_cls = _host.patcher_class()
    patcher = patcher_cls(model, load_device=load_device, offload_device=mm.unet_offload_device())
    assign = _host.patcher_is_dynamic(patcher)
    dm = model.diffusion_model
    if load_mode == "read":  # large sequential reads up front
        ck.read_subset([k for k in sd if k.startswith(prefix) and ck.key_of_view(sd[k]) is not None])
    unet = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    unet = model_config.process_unet_state_dict(unet)
    zero_copy, converted, missing, unexpected = set(), 0, [], []
    loaded = set()
    sizes = {k: _nbytes(v) for k, v in unet.items()}
    for group, keys in _groups(list(unet), dm, sizes).items():
        owner = dm.get_submodule(group) if group else dm
        cut = len(group) + 1 if group else 0
        part, file_keys = {}, {}
        for k in keys:
            v = unet.pop(k)
            fk = ck.key_of_view(v) if isinstance(v, torch.Tensor) else None
            if fk is not None:
                del v
                v = ck.tensor(fk)  # counted as read; read mode: from the buffer
                file_keys[k] = (fk, v.data_ptr() if v.numel() else None)
            part[k[cut:]] = v
        if group:
            m, u = owner.load_state_dict(part, strict=False, assign=assign)
            # a split module's own group: its children were handed their keys before it
            missing += [f"{group}.{x}" for x in m if f"{group}.{x}" not in loaded]
            unexpected += [f"{group}.{x}" for x in u]
        else:  # the model's own tensors; every child has its weights by now
            m, u = dm.load_state_dict(part, strict=False, assign=assign)
            unexpected += list(u)
        loaded.update(keys)
        del part
        kept = _data_ptrs(owner)
        for k, (fk, ptr) in file_keys.items():
            if ptr is not None and ptr in kept:
                zero_copy.add(fk)  # the model holds the file's tensor itself (assign, or the same dtype)
            else:
                converted += 1
                ck.release(fk)
    missing += [k for k in dm.state_dict() if k not in loaded and k not in missing]
    if missing:
        log.warning("[Lean Checkpoint] %s: diffusion model keys missing from the file: %s", ck.name, missing)
    if unexpected:
        log.warning("[Lean Checkpoint] %s: file keys the diffusion model has no place for: %s", ck.name, unexpected)
    quant = ""
    if quantized:
        quant = f", {_host.quant_style()} from the file"
    desc = (f"{type(model).__name__} ({type(model_config).__name__}), {parameters / 1e9:.2f} B params, weights "
            f"{_dtype_name(unet_dtype)} (file {_dtype_name(file_dtype)}{quant}), compute "
            f"{_dtype_name(manual_cast or unet_dtype)}, on {init_device}, {patcher_cls.__name__}"
            f"{' (DynamicVRAM)' if _host.dynamic_vram() else ''}; {len(zero_copy)} tensors used as read"
            f"{' (mapped: resident as the sampler uses them)' if zero_copy and load_mode == 'mmap' else ''}, "
            f"{converted} copied or converted")
    return patcher, zero_copy, desc


def _describe(obj, attr, compute=None):
    """Class, the dtype holding most of the weight bytes (and the dtype it is computed in, where that differs),
    and the device of a loaded part."""
    if obj is None:
        return "none in this file"
    try:
        m = getattr(obj, attr)
        size, dev = {}, None
        for p in m.parameters():
            size[p.dtype] = size.get(p.dtype, 0) + p.numel() * p.element_size()
            dev = dev or p.device
        main = max(size, key=size.get)
        cast = "" if compute is None or compute == main else f", computed in {_dtype_name(compute)} (per-layer cast)"
        return f"{type(m).__name__}, weights {_dtype_name(main)}{cast} on {dev}, {sum(size.values()) / 2**30:.2f} GiB"
    except Exception:
        return type(obj).__name__


def _prefixed(keys, prefixes):
    return [k for k in keys if any(k.startswith(p) for p in prefixes)]


def _load_clip_vae(ck, views, model_config, load_clip, load_vae, embedding_directory, dtype=None):
    """CLIP and VAE through the host's own classes and the detected model config's key processing, from
    the mapping (or the read buffers); only the switched-on part's tensors are read.  Their file
    pages leave the resident set before the diffusion model is built."""
    wanted = set()
    # The part's file keys are those the host's own key processing hands its loader: a model config's
    # prefix list need not name them (SDXL's text encoders sit under conditioner.embedders.*, its
    # text_encoder_key_prefix is the default cond_stage_model.), and a key left out here would be read
    # through the mapping uncounted and its pages stay resident beside the diffusion model.
    if load_vae:
        wanted |= set(_prefixed(views, model_config.vae_key_prefix))
        wanted |= ck.keys_viewed_by(model_config.process_vae_state_dict(comfy.utils.state_dict_prefix_replace(
            dict(views), {p: "" for p in model_config.vae_key_prefix}, filter_keys=True)).values())
    if load_clip:
        wanted |= set(_prefixed(views, model_config.text_encoder_key_prefix))
        if model_config.clip_target(state_dict=views) is not None:
            wanted |= ck.keys_viewed_by(model_config.process_clip_state_dict(dict(views)).values())
    wanted = sorted(wanted)
    sd = dict(views)
    sd.update(ck.read_subset(wanted))
    clip = vae = None
    if load_vae:
        vae_sd = comfy.utils.state_dict_prefix_replace(sd, {p: "" for p in model_config.vae_key_prefix}, filter_keys=True)
        vae_sd = model_config.process_vae_state_dict(vae_sd)
        if vae_sd:
            with _own_mappings():
                vae = comfy.sd.VAE(sd=vae_sd, metadata=ck.metadata)
            if _host.keep_vae_weights_in(vae, dtype):
                log.info("[Lean Checkpoint] %s: VAE weights kept in %s, computed in fp32", ck.name, dtype)
        del vae_sd
    if load_clip:
        target = model_config.clip_target(state_dict=sd)
        clip_sd = model_config.process_clip_state_dict(sd) if target is not None else {}
        if clip_sd:
            with _own_mappings():
                clip = comfy.sd.CLIP(target, embedding_directory=embedding_directory, tokenizer_data=clip_sd,
                                     parameters=comfy.utils.calculate_parameters(clip_sd))
            missing, unexpected = clip.load_sd(clip_sd, full_model=True)
            if missing:
                log.debug("[Lean Checkpoint] %s: text encoder keys not in the file: %s", ck.name, missing)
        del clip_sd
    del sd
    for key in wanted:
        ck.release(key)
    return clip, vae


def load_checkpoint(path, load_mode="mmap", weight_dtype="auto", load_clip=True, load_vae=True,
                    embedding_directory=None, name=None):
    """(MODEL, CLIP or NotLoaded, VAE or NotLoaded, report dict).  Usable without the node (bench)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {list(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    dtype = WEIGHT_DTYPES[weight_dtype]
    if weight_dtype != "auto" and dtype is None:
        raise ValueError(f"weight_dtype {weight_dtype} needs a newer torch than {torch.__version__}")
    load_mode, mode_note = core.resolve_load_mode(load_mode)
    meter = core.LoadMeter()
    memory.release_freed_memory()  # pages freed since the last load (e.g. the model it replaced) go back first
    ck = core.open_checkpoint(path, load_mode)
    name = name or ck.name
    try:
        if len(ck) == 0:
            raise core.CheckpointError(f"{ck.name}: holds no tensors; not a checkpoint")
        views = ck.views()
        prefix = comfy.model_detection.unet_prefix_from_state_dict(views)
        metadata = ck.metadata
        convert = _host.convert_old_quants()
        if convert is not None:  # old scaled-fp8 files -> the host's per-layer quantization, as its loader does
            views, metadata = convert(views, prefix, metadata=metadata)
        model_config = comfy.model_detection.model_config_from_unet(views, prefix, metadata=metadata)
        if model_config is None or not any(k.startswith(prefix) for k in views):
            sample = ", ".join(list(views)[:3])
            raise core.CheckpointError(
                f"{ck.name}: no diffusion model architecture this ComfyUI knows was found (keys start like: {sample}). "
                f"It is not a full checkpoint: load a bare diffusion model with 'Load Diffusion Model', a LoRA with a "
                f"LoRA loader, a VAE/text encoder with their loaders.{_host.model_detection_error_hint(path, views)}")
        parts = {}
        # CLIP and VAE first, by the host's own code, from the mapping: their file pages are dropped from
        # the resident set before the (much larger) diffusion model is built, so the two never add up.
        clip, vae = NotLoaded("CLIP", "load_clip", name), NotLoaded("VAE", "load_vae", name)
        if load_clip or load_vae:
            c, v = _load_clip_vae(ck, views, model_config, load_clip, load_vae, embedding_directory, dtype)
            if load_clip:
                clip = c if c is not None else NotLoaded("CLIP", "load_clip", name, "the file has no text encoder")
                parts["clip"] = _describe(c, "cond_stage_model")
            if load_vae:
                vae = v if v is not None else NotLoaded("VAE", "load_vae", name, "the file has no VAE")
                compute = _host.vae_compute_dtype(v) if v is not None else None
                parts["vae"] = _describe(v, "first_stage_model", compute)
        model, zero_copy, parts["model"] = _load_diffusion_model(ck, views, prefix, model_config, dtype, load_mode)
        # Whatever else was read but is not the model's own weight (used as read) leaves the resident set;
        # the mapping itself goes once no tensor points into it.
        for key in ck.keys_read - zero_copy:
            ck.release(key)
        del views
        report = {"file": name, "format": ck.format, "mode": load_mode, "file_bytes": ck.nbytes(),
                  "bytes_read": ck.bytes_read, "keys_read": len(ck.keys_read), "keys_total": len(ck),
                  "keys_read_list": sorted(ck.keys_read), "parts": parts, "weight_dtype": weight_dtype,
                  "mode_note": mode_note}
    finally:
        ck.close()
        memory.release_freed_memory()
    report.update(meter.figures())
    report["text"] = core.format_report(report)
    return model, clip, vae, report


class LeanCheckpointLoader:
    DESCRIPTION = ("Loads a checkpoint like Load Checkpoint, with one copy of the weights in memory instead of "
                   "two: tensors come straight from the memory-mapped file (converted one at a time where the dtype "
                   "differs), and CLIP/VAE are not read at all when switched off. The STRING output is a load report "
                   "(seconds, bytes read, peak RSS, device, dtype), also shown on the node.")
    CATEGORY = "lean/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "VAE", "report")
    OUTPUT_TOOLTIPS = ("The diffusion model.",
                       "The text encoder; unusable (clear error) when load_clip is off.",
                       "The VAE; unusable (clear error) when load_vae is off.",
                       "Load report: seconds, bytes read, peak RSS, device and dtype.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (folder_paths.get_filename_list("checkpoints"),
                          {"tooltip": "The checkpoint in models/checkpoints (.safetensors/.sft, or .ckpt/.pt/.pth/.bin "
                                      "loaded weights-only)."}),
            "load_mode": (LOAD_MODES, {"default": "mmap", "advanced": True, "tooltip": LOAD_MODE_TOOLTIP}),
            "weight_dtype": (list(WEIGHT_DTYPES),
                             {"default": "auto",
                              "tooltip": "dtype the diffusion model's weights are kept in. auto: what ComfyUI would "
                                         "pick. fp16/bf16/fp8 keep weights small and compute with a per-layer cast; fp16/bf16 also keep "
                                         "a VAE ComfyUI would hold in fp32 at that precision (computed in fp32)."}),
            "load_clip": ("BOOLEAN", {"default": True, "advanced": True,
                                      "tooltip": "Load the text encoder. Off: it is never read from disk and the CLIP "
                                                 "output raises a clear error if used."}),
            "load_vae": ("BOOLEAN", {"default": True, "advanced": True,
                                     "tooltip": "Load the VAE. Off: it is never read from disk and the VAE output "
                                                "raises a clear error if used."}),
        }}

    @classmethod
    def IS_CHANGED(cls, ckpt_name, **kwargs):
        # Zero-copy weights stay mapped to the file: one truncated or rewritten in place while its model is cached
        # would fault (SIGBUS) at the next sampling.  ComfyUI asks this before reusing the cached outputs, so a
        # changed file (size, mtime, inode/file index) is loaded again (or gives the loader's clear error if it is
        # now damaged) instead of being read through the stale mapping.  See docs/checkpoint_loader.md.
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        return repr(core.file_identity(path)) if path else "missing"

    def load(self, ckpt_name, load_mode="mmap", weight_dtype="auto", load_clip=True, load_vae=True):
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        if path is None:
            raise FileNotFoundError(f"{DISPLAY}: checkpoint '{ckpt_name}' not found in models/checkpoints "
                                    f"(put the file there and refresh the browser)")
        try:
            model, clip, vae, report = load_checkpoint(
                path, load_mode, weight_dtype, load_clip, load_vae,
                embedding_directory=folder_paths.get_folder_paths("embeddings"), name=ckpt_name)
        except core.CheckpointError as e:
            raise ValueError(f"{DISPLAY}: {e}") from None
        text = report["text"]
        log.info("[Lean Checkpoint] %s", text.replace("\n", " | "))
        return {"ui": {"text": [text]}, "result": (model, clip, vae, text)}


NODE_CLASS_MAPPINGS = {"LeanCheckpointLoader": LeanCheckpointLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"LeanCheckpointLoader": DISPLAY}
