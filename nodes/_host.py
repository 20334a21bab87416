"""What the ComfyUI host this pack runs in can do, detected in one place.

ComfyUI changes how it builds and holds models between releases (DynamicVRAM / comfy-aimdo with lazily
built layers since 0.15 and 0.29, ``quant_config`` replacing ``scaled_fp8`` in 0.3.76, ``assign`` in
``load_model_weights``, a RAM-pressure cache in 0.33).  The node modules ask here instead of probing the
host themselves; every answer is read live (``main.py`` switches DynamicVRAM on after the pack may have
been imported), and nothing here changes the host.

Not a node module (the leading underscore keeps ``__init__.py`` from registering it).
"""
import functools
import inspect
import logging
import threading
import weakref

log = logging.getLogger("lean")


def _import(name):
    try:
        return __import__(name, fromlist=["_"])
    except Exception:
        return None


def dynamic_vram():
    """True when the host runs DynamicVRAM (comfy-aimdo): layers are built without weights and get them
    only when their state dict is loaded, and the host's memory manager maps weights itself."""
    mmgmt = _import("comfy.memory_management")
    return bool(getattr(mmgmt, "aimdo_enabled", False))


def patcher_class():
    """The ModelPatcher class the host's own checkpoint loaders use: ``CoreModelPatcher`` where the host
    has it (``ModelPatcherDynamic`` once DynamicVRAM is on), else ``ModelPatcher``."""
    import comfy.model_patcher as mp
    return getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher


def patcher_is_dynamic(patcher):
    is_dyn = getattr(patcher, "is_dynamic", None)
    return bool(is_dyn()) if callable(is_dyn) else False


def convert_old_quants():
    """``comfy.utils.convert_old_quants`` (old scaled-fp8 files -> the host's mixed-precision layout) or None
    on hosts that still read ``scaled_fp8`` themselves during model detection."""
    import comfy.utils
    fn = getattr(comfy.utils, "convert_old_quants", None)
    return fn if callable(fn) else None


def quant_style():
    """'quant_config' (0.3.76 and later: per-layer quantization, MixedPrecisionOps) or 'scaled_fp8' (older
    hosts: one scaled-fp8 flag per model) or 'none'.  Read from the class, never from a model config
    instance: on new hosts reading ``scaled_fp8`` logs a warning."""
    import comfy.supported_models_base as smb
    names = set(dir(smb.BASE))
    if "quant_config" in names:
        return "quant_config"
    if "scaled_fp8" in names:
        return "scaled_fp8"
    return "none"


def model_is_quantized(model_config):
    """True when the detected model config says the file's diffusion model is stored quantized (its weight
    dtype is then not the dtype to keep weights in)."""
    style = quant_style()
    if style == "none":
        return False
    return getattr(model_config, style, None) is not None


def set_inference_dtype(model_config, dtype, manual_cast, device):
    try:
        takes_device = "device" in inspect.signature(model_config.set_inference_dtype).parameters
    except (TypeError, ValueError):
        takes_device = False
    if takes_device:
        model_config.set_inference_dtype(dtype, manual_cast, device=device)
    else:
        model_config.set_inference_dtype(dtype, manual_cast)


# ---------------------------------------------------------------------- memory held outside torch models

class _ForeignPatcher:
    """The few ModelPatcher methods ComfyUI's memory manager calls on what ``current_loaded_models`` holds,
    for memory this pack holds outside a torch model (a llama.cpp model).  It can only be freed whole."""
    parent = None

    def __init__(self, name, size, device, free):
        self.model = type(name, (), {})()  # what the host's logs name ("Unloading <class name>")
        self.load_device = self.offload_device = device
        self.size = int(size)
        self._free = free
        self.freed = False

    def is_dynamic(self):
        return False

    def is_clone(self, other):
        return False

    def model_size(self):
        return self.size

    def loaded_size(self):
        return 0 if self.freed else self.size

    def current_loaded_device(self):
        return self.load_device

    def partially_unload(self, *args, **kwargs):
        return 0

    def partially_load(self, *args, **kwargs):
        return 0

    def model_patches_to(self, *args, **kwargs):
        return None

    def model_dtype(self):
        return None

    def lowvram_patch_counter(self):
        return 0

    def detach(self, *args, **kwargs):
        if not self.freed:
            self.freed = True
            self._free()


_ENTRY_CLASS = []


def _entry_class():
    """A subclass of the host's own ``LoadedModel`` whose model is a ``_ForeignPatcher``: the host's
    ``free_memory`` (called before an image model loads, by ``unload_all_models`` and so by POST /free with
    unload_models) sorts it with the other loaded models and unloads it the same way."""
    if not _ENTRY_CLASS:
        import comfy.model_management as mm

        class ForeignLoadedModel(mm.LoadedModel):
            def __init__(self, patcher):  # no torch model: none of LoadedModel's weakrefs/finalizers
                self._foreign = patcher
                self.device = patcher.load_device
                self.currently_used = False  # never handed to nodes asking for the models in use
                self.model_finalizer = None
                self._patcher_finalizer = None

            @property
            def model(self):
                return self._foreign

            def real_model(self):  # cleanup_models() drops an entry whose model is gone
                return None if self._foreign.freed else self._foreign.model

            def model_load(self, *args, **kwargs):
                return self._foreign.model

            def model_use_more_vram(self, *args, **kwargs):
                return 0

            def model_unload(self, memory_to_free=None, unpatch_weights=True):
                self._foreign.detach()
                return True

            def is_dead(self):
                return False

            def __del__(self):
                pass

        _ENTRY_CLASS.append(ForeignLoadedModel)
    return _ENTRY_CLASS[0]


_FOREIGN = {}  # key -> entry, for memory registered through register_foreign


def register_foreign(key, name, size, free, on_gpu=False):
    """Make memory this pack holds (``size`` bytes, freed by calling ``free()``) one of the host's loaded
    models, so its memory manager frees it when an image model needs room and on "unload models".  The
    entry sits on the torch device when ``on_gpu`` (VRAM), else on the CPU.  Idempotent per ``key``."""
    import comfy.model_management as mm
    loaded = getattr(mm, "current_loaded_models", None)
    if not isinstance(loaded, list):
        return False
    forget_freed()
    old = _FOREIGN.get(key)
    if old is not None and old in loaded and not old.model.freed:
        return True
    import torch
    device = mm.get_torch_device() if on_gpu else torch.device("cpu")

    def _free():
        _FOREIGN.pop(key, None)
        free()

    entry = _entry_class()(_ForeignPatcher(name, size, device, _free))
    _FOREIGN[key] = entry
    loaded.append(entry)
    return True


def unregister_foreign(key):
    """Take the entry of ``key`` out of the host's loaded models (the memory was freed by this pack)."""
    import comfy.model_management as mm
    entry = _FOREIGN.pop(key, None)
    if entry is None:
        return False
    entry.model.freed = True
    loaded = getattr(mm, "current_loaded_models", [])
    for i in range(len(loaded) - 1, -1, -1):
        if loaded[i] is entry:
            loaded.pop(i)
    return True


def forget_freed(is_loaded=None):
    """Drop entries whose memory is gone (``is_loaded(key)`` False, or freed through the host)."""
    for key in list(_FOREIGN):
        entry = _FOREIGN[key]
        if entry.model.freed or (is_loaded is not None and not is_loaded(key)):
            unregister_foreign(key)


# ---------------------------------------------------------------------- memory that lives as long as a node output

_TIED = weakref.WeakKeyDictionary()  # object -> key
_TIED_COUNT = {}  # key -> live objects tied to it
_TIED_LOCK = threading.RLock()  # re-entrant: a finalizer may run inside the lock's own thread (gc)


def free_with_output(obj, key, release):
    """Let the host's node-output cache decide how long memory held under ``key`` lives, as it does for its own
    loaders' models: ``release()`` runs once the last object tied to ``key`` (``obj``: what a loader node returned)
    is garbage, i.e. the host's cache dropped that output.  Every host drops cached outputs: 0.33's RAM-pressure
    cache when free RAM falls below its ``--cache-ram`` thresholds (after each node, and whenever the host calls
    ``comfy.memory_management.extra_ram_release``), the classic cache once the node leaves the prompt, the LRU
    cache past its size, POST /free with free_memory always.  ``release`` must not refer to ``obj``.  Returns
    False if ``obj`` was tied already."""
    with _TIED_LOCK:
        if obj in _TIED:
            return False
        _TIED[obj] = key
        _TIED_COUNT[key] = _TIED_COUNT.get(key, 0) + 1
    weakref.finalize(obj, _untie, key, release)
    return True


def _untie(key, release):
    with _TIED_LOCK:
        n = _TIED_COUNT.get(key, 0) - 1
        if n > 0:
            _TIED_COUNT[key] = n
            return
        _TIED_COUNT.pop(key, None)
    try:
        release()
    except Exception as e:  # runs from the garbage collector: never raise
        log.warning("[Lean] could not free memory of %r after ComfyUI dropped its output: %s", key, e)


def tied_keys():
    with _TIED_LOCK:
        return list(_TIED_COUNT)


# ---------------------------------------------------------------------- one house: host knowledge the node modules use
# Everything below reads or drives a part of the host that its public node API does not cover; the node modules
# ask here (tests/test_one_house.py keeps them from probing the host themselves).

def dynamic_vram_state():
    """DynamicVRAM as the System Check reports it: 'on', 'off' or 'not in this ComfyUI version' (the host has no
    ``comfy.memory_management.aimdo_enabled``).  Same source as ``dynamic_vram()``."""
    mmgmt = _import("comfy.memory_management")
    if mmgmt is None or not hasattr(mmgmt, "aimdo_enabled"):
        return "not in this ComfyUI version"
    return "on" if mmgmt.aimdo_enabled else "off"


def comfyui_version():
    """The host's version string (``comfyui_version.__version__``), for reports only; None where it has none.
    Nothing in the pack branches on it: features are detected."""
    mod = _import("comfyui_version")
    version = getattr(mod, "__version__", None)
    return str(version) if version is not None else None


def model_detection_error_hint(path, state_dict):
    """The host's own hint for a file no architecture matched (``comfy.sd.model_detection_error_hint``: e.g.
    "this is a LoRA"), as a suffix of an error message; '' on hosts without it or when it has nothing to say."""
    import comfy.sd
    fn = getattr(comfy.sd, "model_detection_error_hint", None)
    if not callable(fn):
        return ""
    try:
        return fn(path, state_dict) or ""
    except Exception:  # a hint must never hide the error it decorates
        return ""


def interrupted(exc):
    """True when ``exc`` is the host's "the user pressed Cancel" exception."""
    cls = getattr(_import("comfy.model_management"), "InterruptProcessingException", None)
    return isinstance(cls, type) and isinstance(exc, cls)


# --- text encoders (Prompt Batch)

def clip_hooks_scheduled(clip):
    """True when ``clip.encode_from_tokens_scheduled`` would encode once per hook keyframe instead of once (the host
    does so when the CLIP carries forced hooks and ``use_clip_schedule`` is on).  The batched encode has no
    schedule, so it must then leave the encode to the host."""
    patcher = getattr(clip, "patcher", None)
    return bool(getattr(clip, "use_clip_schedule", False)) and getattr(patcher, "forced_hooks", None) is not None


def chunk_encoders(clip):
    """The host's chunked CLIP encoders (``comfy.sd1_clip.SDClipModel``) inside ``clip``: the encoders whose input is
    a list of fixed-length token chunks (SD1.5's CLIP-L, SDXL's CLIP-L and CLIP-G, Flux's CLIP-L, ...)."""
    import comfy.sd1_clip
    model = getattr(clip, "cond_stage_model", None)
    if model is None:
        return []
    return [m for m in model.modules() if isinstance(m, comfy.sd1_clip.SDClipModel)]


def flux_clip_model(clip):
    """The host's ``FluxClipModel`` (T5-XXL + CLIP-L, ``.t5xxl`` and ``.clip_l``) behind ``clip``, or None (not
    Flux, or a host without Flux)."""
    flux = _import("comfy.text_encoders.flux")
    cls = getattr(flux, "FluxClipModel", None)
    model = getattr(clip, "cond_stage_model", None)
    return model if isinstance(cls, type) and isinstance(model, cls) else None


def causal_llm_encoder(clip):
    """``(token key, pad token, hidden width)`` where the text encoder behind ``clip`` is one decoder-only LLM whose
    conditioning is its hidden states token by token, exactly as the host encodes it, else None.  Then a prompt
    padded at the end keeps its own tokens' states (each token sees only the tokens before it), so prompts of
    different lengths can share one forward pass (Prompt Batch).  What is checked (all of it the host's own code,
    nothing replaced):

    * ``clip.cond_stage_model`` is a ``comfy.sd1_clip.SD1ClipModel`` whose ``encode_token_weights`` is that class's
      own (hands the rows to its one encoder: Z-Image's Qwen3-4B) or ``comfy.text_encoders.flux.Flux2TEModel``'s
      (puts the chosen layers side by side per token: Flux.2's Qwen3 and Mistral Small 3.x).  Qwen-Image's
      ``QwenImageTEModel`` cuts the template from the first row only, so it is not one of them;
    * its encoder is a ``comfy.sd1_clip.SDClipModel`` with that class's own ``encode_token_weights`` (rows
      concatenated along the tokens), ``encode``, ``forward`` and ``process_tokens``;
    * the encoder's transformer is one of the host's Llama-family models (``comfy.text_encoders.llama``:
      ``BaseLlama.forward`` into ``Llama2_.forward``, which adds a causal mask to every forward of more than one
      token, in 0.3.64 and 0.33.0 alike).
    The token key is the encoder's name (the tokenizer's key), the pad token its ``special_tokens["pad"]``."""
    sd1 = _import("comfy.sd1_clip")
    llama = _import("comfy.text_encoders.llama")
    model = getattr(clip, "cond_stage_model", None)
    if sd1 is None or llama is None or not isinstance(model, sd1.SD1ClipModel):
        return None
    outer = [sd1.SD1ClipModel.encode_token_weights]
    flux2 = getattr(_import("comfy.text_encoders.flux"), "Flux2TEModel", None)
    if isinstance(flux2, type):
        outer.append(flux2.encode_token_weights)
    if type(model).encode_token_weights not in outer:
        return None
    inner = getattr(model, getattr(model, "clip", ""), None)
    if not isinstance(inner, sd1.SDClipModel) or any(
            getattr(type(inner), m, None) is not getattr(sd1.SDClipModel, m, 0)
            for m in ("encode_token_weights", "encode", "forward", "process_tokens")):
        return None
    transformer = getattr(inner, "transformer", None)
    base, core = getattr(llama, "BaseLlama", None), getattr(llama, "Llama2_", None)
    if not (isinstance(base, type) and isinstance(core, type) and isinstance(transformer, base)
            and type(transformer).forward is base.forward and type(getattr(transformer, "model", None)) is core):
        return None
    pad = (getattr(inner, "special_tokens", None) or {}).get("pad")
    name = getattr(model, "clip_name", None)
    try:
        width = int(transformer.get_input_embeddings().weight.shape[1])
    except Exception:
        return None
    if not isinstance(pad, int) or not isinstance(name, str):
        return None
    return name, pad, width


def packed_llm_core(clip):
    """``(core, stops)`` where packed_llm_rows can run the host's ``comfy.text_encoders.llama.Llama2_`` (``core``)
    inside ``clip``'s one decoder-only LLM encoder (causal_llm_encoder), else None.  ``core.forward`` takes
    ``position_ids`` and an ``attention_mask`` it reshapes to ``[batch, 1, -1, keys]`` (so a ``[1, S, S]`` mask is
    one mask per query) and adds its causal mask to (``Llama2_.forward`` in 0.3.64 and 0.33.0), and torch's forward
    pre-hooks take keyword arguments (torch 2.0 and later).  ``stops``: the encoder's pad and end tokens.  The host
    masks a row's tokens from the first of them on (``SDClipModel.process_tokens``: from its end token, or its pad
    token where it has none, and a row's leading pad tokens), so rows holding neither have every token unmasked,
    alone or side by side in one row."""
    import torch
    if causal_llm_encoder(clip) is None:
        return None
    model = clip.cond_stage_model
    inner = getattr(model, model.clip, None)
    core = getattr(getattr(inner, "transformer", None), "model", None)
    llama = _import("comfy.text_encoders.llama")
    if llama is None or type(core) is not getattr(llama, "Llama2_", None):
        return None
    try:
        params = inspect.signature(type(core).forward).parameters
        hooks = inspect.signature(torch.nn.Module.register_forward_pre_hook).parameters
    except (TypeError, ValueError):
        return None
    wanted = {"x", "attention_mask", "embeds", "position_ids", "embeds_info"}
    if not wanted <= set(params) or "with_kwargs" not in hooks:
        return None
    special = getattr(inner, "special_tokens", None) or {}
    stops = {t for t in (special.get("pad"), special.get("end")) if isinstance(t, int)}
    return core, stops


class PackRefused(Exception):
    """The host's call of its LLM is not what packed_llm_rows expects; the caller encodes the rows another way."""


class packed_llm_rows:
    """While active, the one forward of the host's LLM (``core``: packed_llm_core) over one row that is several
    prompts' tokens side by side (``lengths``: each prompt's token count, in order; none holding the encoder's pad
    or end token) computes each prompt as if alone: each prompt's positions start at 0 again (``position_ids``), and
    an attention mask lets a token see only its own prompt's tokens (the host adds its causal mask: those before
    it).  So each prompt's hidden states are those of the prompt alone (up to float summation order; the masked
    scores weigh exactly 0), with no padding computed: the pass costs what its tokens cost.

    Why here and not through an entry point: the host's encode (``SDClipModel.forward``) calls the LLM without
    ``position_ids`` and with a mask of the row's own tokens, and has no option for this (read in 0.3.64 and
    0.33.0); the LLM's own ``forward`` takes both.  A torch forward pre-hook gives them; nothing of the host is
    replaced, and the hook is removed on exit.  Where the call is not what this expects (token ids instead of
    embeddings, images in the prompt, a KV cache, another row shape, a masked token, a second call) it raises
    PackRefused, and so does the exit when no call came (the row would have been one prompt)."""

    def __init__(self, core, lengths):
        self.core, self.lengths, self.calls = core, [int(n) for n in lengths], 0
        self._handle = None

    def __enter__(self):
        self._handle = self.core.register_forward_pre_hook(self._pre, with_kwargs=True)
        return self

    def __exit__(self, kind, exc, tb):
        self._handle.remove()
        if kind is None and self.calls != 1:
            raise PackRefused("the host's LLM was not called through its module")
        return False

    def _pre(self, module, args, kwargs):
        import torch
        self.calls += 1
        x = args[0] if args else kwargs.get("x")
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        embeds = kwargs.get("embeds")
        total = sum(self.lengths)
        if (self.calls != 1 or x is not None or len(args) > 2 or not torch.is_tensor(embeds)
                or tuple(embeds.shape[:2]) != (1, total) or min(self.lengths) < 1
                or kwargs.get("position_ids") is not None or kwargs.get("embeds_info")
                or kwargs.get("past_key_values")
                or (mask is not None and (tuple(mask.shape) != (1, total) or not bool(mask.all())))):
            raise PackRefused("the host's call of its LLM is not one row of unmasked token embeddings")
        dev = embeds.device
        sizes = torch.tensor(self.lengths, device=dev)
        seg = torch.repeat_interleave(torch.arange(len(self.lengths), device=dev), sizes)
        starts = torch.cumsum(sizes, 0) - sizes
        kwargs = {k: v for k, v in kwargs.items() if k not in ("x", "attention_mask")}
        kwargs["position_ids"] = (torch.arange(total, device=dev) - starts[seg]).unsqueeze(0)
        kwargs["attention_mask"] = (seg[:, None] == seg[None, :]).unsqueeze(0)  # 1: may attend
        return (None,), kwargs


class pooled_per_row:
    """While active, records each chunk encoder's pooled output for every row it encodes: ``.got[id(encoder)]``
    (a tensor [rows, C], or None when the encoder has no pooled output).

    Why here and not through an entry point: the host's encode (``CLIP.encode_from_tokens`` ->
    ``ClipTokenWeightEncoder.encode_token_weights``) keeps only the first row's pooled output (``pooled[0:1]``), and
    neither ``encode_from_tokens(..., return_dict=True)``, ``encode_from_tokens_scheduled`` nor a tokenizer option
    returns the others (read in 0.3.64 and 0.33.0).  A batch of prompts needs each prompt's own.  The encoder's
    forward (``SDClipModel.forward``, which ``encode`` calls) returns ``(z, pooled, ...)`` for all rows, so a torch
    forward hook on the encoder reads them; nothing of the host is replaced, and the hooks are removed on exit."""

    def __init__(self, encoders):
        self.encoders = list(encoders)
        self.got = {}
        self._handles = []

    def __enter__(self):
        for e in self.encoders:
            def hook(module, args, output, _key=id(e)):
                if isinstance(output, (tuple, list)):
                    self.got[_key] = output[1] if len(output) > 1 else None
            self._handles.append(e.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False


# --- the sampler's batch layout (per-image LoRAs)

def sampler_rows(transformer_options):
    """(chunks, window) of one model call, as the host's sampler says them (core/lora_rows.py explains the layout):
    ``chunks`` is the number of conditioning chunks concatenated in the model's input
    (``transformer_options["cond_or_uncond"]``, one item per chunk, set by comfy/samplers.py ``_calc_cond_batch`` in
    every host version), ``window`` the latent indices of a context window on the batch axis
    (``transformer_options["context_window"]``: ``index_list`` and ``dim``), else None.  (None, None) when the call
    does not come from the host's sampler."""
    opts = transformer_options if isinstance(transformer_options, dict) else {}
    cou = opts.get("cond_or_uncond")
    chunks = len(cou) if isinstance(cou, (list, tuple)) else None
    window = None
    w = opts.get("context_window")
    if w is not None and getattr(w, "dim", None) == 0 and getattr(w, "index_list", None) is not None:
        window = list(w.index_list)
    return chunks, window


# --- LoRA adapters (the dynamic LoRA branch)

def lora_adapter_weights(adapter):
    """``(up, down, alpha, mid, dora_scale, reshape)`` of a plain LoRA/LoCon weight adapter of the host
    (``comfy.weight_adapter.LoRAAdapter``; its ``weights`` is that 6-tuple in 0.3.64 and 0.33.0), else
    ``(None, why)``: ``why`` names what the adapter is (a ("diff", ...) patch, LoHa, LoKr, OFT, ...), for the
    report of modules left to the host's patching."""
    if isinstance(adapter, tuple):  # ("diff", ...), ("set", ...) patches
        return None, str(adapter[0])
    wa = _import("comfy.weight_adapter")
    cls = getattr(wa, "LoRAAdapter", None)
    if not isinstance(cls, type) or type(adapter) is not cls:  # a subclass may hold other weights
        return None, getattr(adapter, "name", type(adapter).__name__)
    weights = getattr(adapter, "weights", None)
    if not isinstance(weights, (tuple, list)) or len(weights) != 6:
        return None, "LoRA adapter of an unknown layout"
    return tuple(weights), None


# --- VAE (the checkpoint loader)

def vae_compute_dtype(vae):
    """The dtype the host computes the VAE in (``VAE.vae_dtype``: it casts latents/pixels to it and sizes its
    memory estimates with it); the weights may be held smaller (``keep_vae_weights_in``)."""
    return getattr(vae, "vae_dtype", None)


def keep_vae_weights_in(vae, dtype):
    """Hold a VAE the host computes in fp32 (its pick on the CPU) in ``dtype`` (fp16/bf16) instead, computed in fp32
    through the host's own per-layer cast (the ``comfy_cast_weights`` switch of its ops, which its memory manager
    also uses for partly loaded models: it sets it on and restores it, never off).  ``vae_dtype`` stays fp32, and
    that is right: it is the compute dtype, what inputs are cast to and memory is estimated with.  An fp16/bf16
    file's values are exact in fp32, so results are unchanged; only the held copy halves.  True when done; False
    (nothing changed) when the VAE is not computed in fp32 or a weight sits in a module the host cannot cast."""
    import torch
    if dtype not in (torch.float16, torch.bfloat16) or vae_compute_dtype(vae) != torch.float32:
        return False
    model = vae.first_stage_model
    casts = [m for m in model.modules() if hasattr(m, "comfy_cast_weights")]
    owners = {id(m) for m in casts}
    for m in model.modules():  # every weight must sit in a module that can cast it
        if id(m) not in owners and any(True for _ in m.parameters(recurse=False)):
            return False
    model.to(dtype)
    for m in casts:
        m.comfy_cast_weights = True
    return True


# ------------------------------------------------------------------ peers
# What the pack knows about other custom-node packs' objects it meets in a model (never imported, recognised
# by class name, so the pack runs the same with or without them installed).
#
# ComfyUI-GGUF (city96/ComfyUI-GGUF, ``ops.py``): its ``UnetLoaderGGUF`` builds the model with ``GGMLOps`` layers
# (``GGMLLayer`` subclasses of ``torch.nn.Linear``/``Conv2d``...) whose weights are ``GGMLTensor``: a
# ``torch.Tensor`` subclass holding the *packed* quantized blocks (uint8 rows), with the quant type in
# ``tensor_type`` and the logical shape in ``tensor_shape``.  Its ``.shape`` answers the logical shape, but
# ``dim()``, ``size()`` and ``numel()`` are the packed data's: a Q8_0 conv weight [320, 320, 1, 1] is stored as
# [400, 272] bytes, so ``weight.dim()`` says 2.  Everything here that needs a weight's shape asks ``weight_shape``.

def _class_names(obj):
    return {c.__name__ for c in type(obj).__mro__}


def is_ggml_tensor(t) -> bool:
    """True for ComfyUI-GGUF's GGMLTensor (and subclasses)."""
    return t is not None and "GGMLTensor" in _class_names(t)


def weight_shape(w):
    """The logical shape of a weight: ComfyUI-GGUF's ``tensor_shape`` for a GGMLTensor (its packed data has
    another shape and dimension count), else the tensor's own shape."""
    s = getattr(w, "tensor_shape", None) if is_ggml_tensor(w) else None
    import torch
    return torch.Size(s) if s is not None else torch.Size(w.shape)


def weight_kind(module) -> str:
    """How `module` stores its weight, for the report: 'gguf Q4_K' for ComfyUI-GGUF's quantized layers
    (its GGMLTensor weights / GGMLLayer ops), 'fp8_e4m3fn' / 'fp8_e5m2' for float8 storage, else the dtype name
    ('bf16', 'fp16', 'fp32', ...)."""
    w = getattr(module, "weight", None)
    if is_ggml_tensor(w):
        qt = getattr(w, "tensor_type", None)
        qname = getattr(qt, "name", None) or (str(qt) if qt is not None else "")
        return f"gguf {qname}".strip()
    if "GGMLLayer" in _class_names(module):
        return "gguf"
    if w is None:
        return "no weight"
    d = str(getattr(w, "dtype", "")).replace("torch.", "")
    return {"float8_e4m3fn": "fp8_e4m3fn", "float8_e5m2": "fp8_e5m2", "bfloat16": "bf16", "float16": "fp16",
            "float32": "fp32"}.get(d, d or "unknown")


# ---------------------------------------------------------------------- user settings, Cancel

SETTINGS_FILE = "comfy.settings.json"
SETTINGS_USER = "default"
MAX_SETTINGS_BYTES = 8 << 20


def user_settings_file():
    """The stored settings of the host's default user: ``<user directory>/default/comfy.settings.json`` (what
    ``app/app_settings.py`` writes when the Settings dialog changes a value; the same on 0.3.64 and 0.33, which
    also has ``folder_paths.get_public_user_directory``).  With ``--multi-user`` each user has a file; only the
    default user's is read (the server's owner; others may be anyone who reaches the server)."""
    import os
    import folder_paths
    get = getattr(folder_paths, "get_public_user_directory", None)
    user_dir = get(SETTINGS_USER) if callable(get) else None
    if not user_dir:
        user_dir = os.path.join(folder_paths.get_user_directory(), SETTINGS_USER)
    return os.path.join(user_dir, SETTINGS_FILE)


def read_user_setting(setting_id):
    """(value, problem) of one entry of the default user's stored settings, read from the file each time (the
    dialog saves it at once).  Absent file or entry: (None, "").  A file that is too big or not a JSON object:
    (None, a line saying so).  Never raises."""
    import json
    import os
    path = None
    try:
        path = user_settings_file()
        if not os.path.isfile(path):
            return None, ""
        with open(path, "rb") as f:
            raw = f.read(MAX_SETTINGS_BYTES + 1)
        if len(raw) > MAX_SETTINGS_BYTES:
            return None, f"ComfyUI's settings file (user/{SETTINGS_USER}/{SETTINGS_FILE}) is larger than " \
                         f"{MAX_SETTINGS_BYTES >> 20} MB: its {setting_id} entry is ignored"
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return None, (f"ComfyUI's settings file (user/{SETTINGS_USER}/{SETTINGS_FILE}) could not be read "
                      f"({type(e).__name__}): its {setting_id} entry is ignored; set it again in the Settings dialog")
    except Exception as e:  # the host's folder_paths missing or changed
        log.debug("[Lean] no user settings (%s): %s", path, e)
        return None, ""
    if not isinstance(data, dict):
        return None, (f"ComfyUI's settings file (user/{SETTINGS_USER}/{SETTINGS_FILE}) is not a JSON object: its "
                      f"{setting_id} entry is ignored")
    return data.get(setting_id), ""


def clip_loader_types(loader="CLIPLoader"):
    """The ``type`` options of the host's own CLIPLoader (or DualCLIPLoader), in its order (they differ between
    releases: 0.3.64's CLIPLoader has 16, 0.33 adds flux2, ovis, ...); the names of ``comfy.sd.CLIPType`` where
    the node cannot be read."""
    mod = _import("nodes")
    try:
        options = getattr(mod, loader).INPUT_TYPES()["required"]["type"][0]
        if isinstance(options, (list, tuple)) and options:
            return [str(o) for o in options]
    except Exception:
        pass
    import comfy.sd
    return [t.name.lower() for t in comfy.sd.CLIPType]


def clip_type(name):
    """``comfy.sd.CLIPType`` for a CLIPLoader type name, as CLIPLoader maps it (unknown -> STABLE_DIFFUSION)."""
    import comfy.sd
    return getattr(comfy.sd.CLIPType, str(name).upper(), comfy.sd.CLIPType.STABLE_DIFFUSION)


def set_clip_reload(clip, paths, embedding_directory, clip_type, model_options):
    """What the host's ``comfy.sd.load_clip`` records on the CLIP it returns so that its patcher can be rebuilt
    (``cached_patcher_init``, 0.33: multi-GPU deep clones): the host's own loader of the same files.  Nothing on
    hosts that do not record it."""
    import comfy.sd
    fn = getattr(comfy.sd, "load_clip_model_patcher", None)
    patcher = getattr(clip, "patcher", None)
    if callable(fn) and patcher is not None and hasattr(patcher, "cached_patcher_init"):
        patcher.cached_patcher_init = (fn, (list(paths), embedding_directory, clip_type, model_options))


def text_mask_read_by_model(clip):
    """True when the diffusion model this text encoder is for reads the text attention mask in its attention, so
    that padded text tokens can be masked out exactly: Qwen-Image's encoder (``QwenImageTEModel``) on hosts whose
    Qwen-Image attention applies ``encoder_hidden_states_mask`` (0.33: it builds the joint mask from it; 0.3.64 takes
    the argument and never uses it).  Z-Image's model drops the mask (``cap_mask = None``) and Flux.2's takes none."""
    if not _encoder_is(clip, "comfy.text_encoders.qwen_image", "QwenImageTEModel"):
        return False
    return _qwen_image_attention_reads_mask()


def _encoder_is(clip, module, name):
    cls = getattr(_import(module), name, None)
    return isinstance(cls, type) and isinstance(getattr(clip, "cond_stage_model", None), cls)


def _source(module, *attrs):
    """The source of the host's module.attr[.attr...], or "" where it cannot be read."""
    obj = _import(module)
    try:
        for a in attrs:
            obj = getattr(obj, a)
        return inspect.getsource(obj)
    except (TypeError, OSError, AttributeError):
        return ""


@functools.lru_cache(maxsize=1)
def _qwen_image_attention_reads_mask():
    """Whether this host's Qwen-Image attention applies ``encoder_hidden_states_mask`` (read once: its source)."""
    return "= encoder_hidden_states_mask" in _source("comfy.ldm.qwen_image.model", "Attention", "forward")


def text_left_pad_floor(clip):
    """The token count to which the diffusion model this text encoder is for pads every shorter prompt with zeros
    *at the start*, where it does: Flux.2 (``model_base.Flux2.extra_conds`` pads ``cross_attn`` on the left to 512
    tokens; its encoders are ``comfy.text_encoders.flux.Flux2TEModel``: Klein's Qwen3, whose tokenizer already pads
    to 512, and dev's Mistral Small 3.x, whose tokenizer does not pad).  None for other encoders, and where the
    host's Flux2 does not pad (read once from its source)."""
    if not _encoder_is(clip, "comfy.text_encoders.flux", "Flux2TEModel"):
        return None
    return _flux2_text_floor()


@functools.lru_cache(maxsize=1)
def _flux2_text_floor():
    import re
    source = _source("comfy.model_base", "Flux2", "extra_conds")
    floor = re.search(r"target_text_len\s*=\s*(\d+)", source)
    left = re.search(r"pad\(\s*cross_attn\s*,\s*\(\s*0\s*,\s*0\s*,\s*target_text_len\s*-", source)
    return int(floor.group(1)) if floor and left else None


def text_length_kwargs(kwargs, length, width, left=False):
    """The model's extra inputs of a call whose text is cut from `width` to its first `length` tokens (its last
    ones where the prompts were padded at the start, `left`) (Prompt Batch's length split, nodes/_text_split.py),
    as the host gives them for a prompt of `length` tokens encoded alone: Lumina2 / Z-Image's ``num_tokens``
    (``model_base.Lumina2.extra_conds``: the text length, one constant per conditioning) and a text
    ``attention_mask`` [rows, width] (given there only when some token is masked: cut, and dropped when the cut
    leaves every token real)."""
    import torch
    out = dict(kwargs)
    if isinstance(out.get("num_tokens"), int) and out["num_tokens"] == width:
        out["num_tokens"] = int(length)
    mask = out.get("attention_mask")
    if torch.is_tensor(mask) and mask.ndim == 2 and mask.shape[1] == width:
        mask = mask[:, width - length:] if left else mask[:, :length]
        if bool(mask.all()):
            del out["attention_mask"]
        else:
            out["attention_mask"] = mask
    return out


# ----------------------------------------------------------------------------- ComfyUI-Distributed (a peer pack)
# ComfyUI-Distributed (robertvoy/ComfyUI-Distributed 1.4.x) runs one workflow on a master and its workers.  Its
# /distributed/queue writes, into each participant's copy of the prompt, hidden inputs of its DistributedCollector
# nodes: is_worker, worker_id (the worker's id in its config), enabled_worker_ids (JSON list of the workers that
# answered, in config order), multi_job_id, delegate_only (master only) and load_balance (a widget).  The collector
# gathers the images of the master first, then of each worker in that order.  Distributed Seed gives 0 + seed on the
# master and seed + i + 1 on worker i of that same list.  Its config (the workers the user named) is gpu_config.json
# beside its own __init__.py.  Nothing of it is imported: the prompt is read, and its config file is read as JSON.

DISTRIBUTED_COLLECTOR = "DistributedCollector"
DISTRIBUTED_CONFIG = "gpu_config.json"


def distributed_layout(prompt):
    """The participants of this run as ComfyUI-Distributed wrote them into the prompt, or None outside a
    distributed run (no collector, or a collector without a job id: a plain /prompt).
    -> {"participants": ["master", worker id, ...], "me": index of this participant, "job": multi_job_id,
        "delegate_only": bool, "load_balance": bool}"""
    import json
    if not isinstance(prompt, dict):
        return None
    for node in prompt.values():
        if not isinstance(node, dict) or node.get("class_type") != DISTRIBUTED_COLLECTOR:
            continue
        inputs = node.get("inputs") or {}
        job = inputs.get("multi_job_id")
        if not job or inputs.get("pass_through"):
            continue
        try:
            enabled = [str(w) for w in json.loads(inputs.get("enabled_worker_ids") or "[]")]
        except (TypeError, ValueError):
            raise ValueError(f"the Distributed Collector's enabled_worker_ids {inputs.get('enabled_worker_ids')!r} "
                             "is not a JSON list; queue the workflow with ComfyUI-Distributed's Queue button") from None
        enabled = list(dict.fromkeys(enabled))
        worker = str(inputs.get("worker_id") or "")
        is_worker = bool(inputs.get("is_worker"))
        if is_worker and worker not in enabled:
            raise ValueError(f"this worker ({worker!r}) is not in the Distributed Collector's list of workers "
                             f"{enabled}; queue the workflow again from the master")
        return {"participants": ["master"] + enabled, "me": 1 + enabled.index(worker) if is_worker else 0,
                "job": str(job), "delegate_only": bool(inputs.get("delegate_only")),
                "load_balance": bool(inputs.get("load_balance"))}
    return None


def distributed_config():
    """ComfyUI-Distributed's config in this ComfyUI (its gpu_config.json as a dict: the workers the user named), or
    {} when the pack is not installed or the file cannot be read.  Found through the host's own node list: the
    folder of the module that defines DistributedCollector."""
    import json
    import os
    import sys
    nodes_mod = sys.modules.get("nodes")
    cls = getattr(nodes_mod, "NODE_CLASS_MAPPINGS", {}).get(DISTRIBUTED_COLLECTOR) if nodes_mod else None
    mod = sys.modules.get(getattr(cls, "__module__", "") or "")
    path = getattr(mod, "__file__", None)
    if not path:
        return {}
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))  # <pack>/nodes/collector.py -> <pack>
    cfg = os.path.join(root, DISTRIBUTED_CONFIG)
    try:
        with open(cfg, encoding="utf-8") as f:
            data = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

