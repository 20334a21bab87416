"""LeanTextEncoderLoader ("Load Text Encoder (mmap)"): ComfyUI's Load CLIP (CLIPLoader) for text-encoder files
(CLIP-L, T5, Qwen3-4B for Z-Image / Flux.2 Klein, Qwen2.5-VL-7B for Qwen-Image, ...) with one copy of the
weights in memory instead of two.

The host does everything its own ``comfy.sd.load_clip`` does (old scaled-fp8 conversion, encoder detection by
the state dict, the tokenizer, the model class, its patcher, the ``load_state_dict`` of the weights): it is handed
the file's tensors as zero-copy views of the mapped file (or read buffers) instead of a state dict read into
RAM, and as its load reaches each module the file pages of the modules before it leave the resident set
(core.ckpt.release_as_loaded), so the file and the encoder never add up.  Lean adds the load report.
"""
import logging

import folder_paths

from ..core import ckpt as core
from ..core import memory
from . import _host
from . import checkpoint as _ckpt

log = logging.getLogger("lean")

DISPLAY = "Load Text Encoder (mmap)"
DTYPES = ("default", "fp16", "bf16", "fp32")
DEVICE_TOOLTIP = ("As in Load CLIP. default: where ComfyUI puts text encoders. cpu: keep the encoder on the CPU "
                  "(saves VRAM for the diffusion model).")
DTYPE_TOOLTIP = ("default: what ComfyUI picks (Load CLIP's choice). fp16/bf16/fp32: asks ComfyUI for that dtype; "
                 "ComfyUI keeps LLM and T5 encoders in the file's own dtype, so it applies to CLIP encoders. The "
                 "report says the dtype used.")


def _torch_dtype(name):
    import torch
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(name)


def load_text_encoder(paths, type="stable_diffusion", device="default", load_mode="mmap", weight_dtype="default",
                      embedding_directory=None, names=None):
    """(CLIP, report dict) for one or more text-encoder files (as ``comfy.sd.load_clip``).  Usable without the
    node (bench)."""
    import torch
    import comfy.sd
    import comfy.utils
    if weight_dtype not in DTYPES:
        raise ValueError(f"weight_dtype must be one of {list(DTYPES)}, got {weight_dtype!r}")
    load_mode, mode_note = core.resolve_load_mode(load_mode)
    clip_type = _host.clip_type(type)
    model_options = {}
    if device == "cpu":  # as CLIPLoader
        model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
    if weight_dtype != "default":
        model_options["dtype"] = _torch_dtype(weight_dtype)
    meter = core.LoadMeter()
    memory.release_freed_memory()
    files = []
    try:
        state_dicts = []
        for p in paths:
            ck = core.open_checkpoint(p, load_mode)
            files.append(ck)
            if len(ck) == 0:
                raise core.CheckpointError(f"{ck.name}: holds no tensors; not a text encoder")
            views = ck.views()
            convert = _host.convert_old_quants()
            if convert is not None and model_options.get("custom_operations") is None:  # as the host's load_clip
                views, _ = convert(views, "", metadata=ck.metadata)
            # every tensor is the encoder's: counted as read (mmap: views of the mapping; read: large sequential
            # reads up front, and the host copies from those buffers)
            tensors = ck.read_subset(list(ck.keys()))
            if load_mode == "read":
                views.update({k: v for k, v in tensors.items() if k in views})
            del tensors
            state_dicts.append(views)
        if not any(comfy.sd.detect_te_model(sd) is not None for sd in state_dicts) and not any(
                _looks_like_text_encoder(sd) for sd in state_dicts):
            sample = ", ".join(list(state_dicts[0])[:3])
            raise core.CheckpointError(
                f"{files[0].name}: no text encoder this ComfyUI knows was found (keys start like: {sample}). A "
                f"checkpoint goes in a checkpoint loader, a diffusion model in Load Diffusion Model, a LoRA in a LoRA "
                f"loader; a newer ComfyUI may know this encoder.{_host.model_detection_error_hint(paths[0], state_dicts[0])}")
        with _ckpt._own_mappings(), core.release_as_loaded(files):
            clip = comfy.sd.load_text_encoder_state_dicts(state_dicts, embedding_directory=embedding_directory,
                                                          clip_type=clip_type, model_options=model_options)
        del state_dicts, views
        for ck in files:
            for key in ck.keys():
                ck.release(key)
        _host.set_clip_reload(clip, paths, embedding_directory, clip_type, model_options)
        names = names or [ck.name for ck in files]
        report = {"file": " + ".join(names), "format": files[0].format, "mode": load_mode,
                  "file_bytes": sum(ck.nbytes() for ck in files), "bytes_read": sum(ck.bytes_read for ck in files),
                  "keys_read": sum(len(ck.keys_read) for ck in files), "keys_total": sum(len(ck) for ck in files),
                  "parts": {"clip": f"{_ckpt._describe(clip, 'cond_stage_model')}, type {type}"},
                  "weight_dtype": weight_dtype, "mode_note": mode_note}
    except core.CheckpointError:
        raise
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as e:
        if _host.interrupted(e):
            raise
        name = " + ".join(ck.name for ck in files) or ", ".join(str(p) for p in paths)
        raise core.CheckpointError(
            f"{name}: ComfyUI could not build a '{type}' text encoder from this file ({type_name(e)}: "
            f"{str(e).splitlines()[0][:300] if str(e) else ''}). Check that the file is a text encoder and that "
            f"'type' matches the model it is for (e.g. lumina2 for Z-Image, flux2 for Flux.2 Klein, qwen_image for "
            f"Qwen-Image)") from None
    finally:
        for ck in files:
            ck.close()
        memory.release_freed_memory()
    report.update(meter.figures())
    report["text"] = "\n".join(line for line in core.format_report(report).splitlines()
                               if not line.startswith(("model:", "vae:")))
    return clip, report


def type_name(e):
    return type(e).__name__


def _looks_like_text_encoder(sd):
    """Files detect_te_model does not name but the host's load_text_encoder_state_dicts still takes (its
    fallbacks: a lone CLIP without layer 0's fc1 naming is none of these, so this stays narrow)."""
    return any(k.startswith(("text_model.", "encoder.block.", "model.layers.", "transformer.resblocks."))
               for k in sd)


def _identity(names):
    """IS_CHANGED of the loaders: each file's identity (size, mtime, ...), "missing" for a name not found."""
    ids = []
    for name in names:
        path = folder_paths.get_full_path("text_encoders", name)
        ids.append(repr(core.file_identity(path)) if path else "missing")
    return " ".join(ids)


def _load_node(display, tag, names, type, device, load_mode, weight_dtype):
    """What both loader nodes do: find each file, load them as one CLIP, show the report on the node."""
    paths = []
    for name in names:
        path = folder_paths.get_full_path("text_encoders", name)
        if path is None:
            raise FileNotFoundError(f"{display}: text encoder '{name}' not found in models/text_encoders or "
                                    f"models/clip (put the file there and refresh the browser)")
        paths.append(path)
    try:
        clip, report = load_text_encoder(paths, type, device, load_mode, weight_dtype,
                                         embedding_directory=folder_paths.get_folder_paths("embeddings"), names=names)
    except core.CheckpointError as e:
        raise ValueError(f"{display}: {e}") from None
    text = report["text"]
    log.info("[%s] %s", tag, text.replace("\n", " | "))
    return {"ui": {"text": [text]}, "result": (clip, text)}


class LeanTextEncoderLoader:
    DESCRIPTION = ("Loads a text encoder (CLIP-L, T5, Qwen3-4B for Z-Image and Flux.2 Klein, Qwen2.5-VL-7B for "
                   "Qwen-Image, ...) like Load CLIP, with one copy of the weights in memory instead of two: "
                   "ComfyUI's own code builds and owns the encoder and reads the tensors straight from the "
                   "memory-mapped file, whose pages leave memory as they are copied. Same inputs as Load CLIP in "
                   "its order. The STRING output is a load report (seconds, bytes read, peak RSS, dtype), also shown "
                   "on the node.")
    CATEGORY = "lean/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("CLIP", "STRING")
    RETURN_NAMES = ("CLIP", "report")
    OUTPUT_TOOLTIPS = ("The text encoder.", "Load report: seconds, bytes read, peak RSS and dtype.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": (folder_paths.get_filename_list("text_encoders"),
                          {"tooltip": "The text-encoder file in models/text_encoders (or models/clip): .safetensors/"
                                      ".sft, or .ckpt/.pt/.pth/.bin loaded weights-only."}),
            "type": (_host.clip_loader_types(),
                     {"tooltip": "The model the encoder is for, as in Load CLIP: stable_diffusion (SD1.5 CLIP-L), "
                                 "lumina2 (Z-Image: Qwen3-4B), flux2 (Flux.2 Klein: Qwen3-4B/8B), qwen_image "
                                 "(Qwen2.5-VL-7B), sd3, wan, ..."}),
            "device": (["default", "cpu"], {"default": "default", "advanced": True, "tooltip": DEVICE_TOOLTIP}),
            "load_mode": (_ckpt.LOAD_MODES, {"default": "mmap", "advanced": True, "tooltip": _ckpt.LOAD_MODE_TOOLTIP}),
            "weight_dtype": (list(DTYPES), {"default": "default", "advanced": True, "tooltip": DTYPE_TOOLTIP}),
        }}

    @classmethod
    def IS_CHANGED(cls, clip_name, **kwargs):
        return _identity([clip_name])

    def load(self, clip_name, type="stable_diffusion", device="default", load_mode="mmap", weight_dtype="default"):
        return _load_node(DISPLAY, "Lean Text Encoder", [clip_name], type, device, load_mode, weight_dtype)


DUAL_DISPLAY = "Load Dual Text Encoders (mmap)"


class LeanDualTextEncoderLoader:
    DESCRIPTION = ("Loads two text-encoder files as one CLIP (Flux.1: T5-XXL + CLIP-L; SD3, HiDream, ...) like "
                   "DualCLIPLoader, with one copy of the weights in memory: ComfyUI's own code builds and owns the "
                   "encoders and reads the tensors straight from the memory-mapped files. Same inputs as "
                   "DualCLIPLoader in its order. The STRING output is a load report, also shown on the node.")
    CATEGORY = "lean/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("CLIP", "STRING")
    RETURN_NAMES = ("CLIP", "report")
    OUTPUT_TOOLTIPS = ("The text encoders, as one CLIP.", "Load report: seconds, bytes read, peak RSS and dtype.")

    @classmethod
    def INPUT_TYPES(cls):
        names = folder_paths.get_filename_list("text_encoders")
        return {"required": {
            "clip_name1": (names, {"tooltip": "The first text-encoder file (models/text_encoders or models/clip); "
                                              "Flux.1: the T5-XXL file."}),
            "clip_name2": (names, {"tooltip": "The second text-encoder file; Flux.1: the CLIP-L file."}),
            "type": (_host.clip_loader_types("DualCLIPLoader"),
                     {"tooltip": "The model the encoders are for, as in DualCLIPLoader: flux (Flux.1), sd3, sdxl, "
                                 "hidream, ..."}),
            "device": (["default", "cpu"], {"default": "default", "advanced": True, "tooltip": DEVICE_TOOLTIP}),
            "load_mode": (_ckpt.LOAD_MODES, {"default": "mmap", "advanced": True, "tooltip": _ckpt.LOAD_MODE_TOOLTIP}),
            "weight_dtype": (list(DTYPES), {"default": "default", "advanced": True, "tooltip": DTYPE_TOOLTIP}),
        }}

    @classmethod
    def IS_CHANGED(cls, clip_name1, clip_name2, **kwargs):
        return _identity([clip_name1, clip_name2])

    def load(self, clip_name1, clip_name2, type="flux", device="default", load_mode="mmap", weight_dtype="default"):
        return _load_node(DUAL_DISPLAY, "Lean Dual Text Encoders", [clip_name1, clip_name2], type, device, load_mode,
                          weight_dtype)


NODE_CLASS_MAPPINGS = {"LeanTextEncoderLoader": LeanTextEncoderLoader,
                       "LeanDualTextEncoderLoader": LeanDualTextEncoderLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"LeanTextEncoderLoader": DISPLAY, "LeanDualTextEncoderLoader": DUAL_DISPLAY}
