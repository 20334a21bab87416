"""LeanDiffusionModelLoader ("Load Diffusion Model (mmap)"): ComfyUI's Load Diffusion Model (UNETLoader) for
bare diffusion-model files (Flux, SD3.5, Wan, Qwen-Image, ... in models/diffusion_models or models/unet) with
one copy of the weights in memory.

The host does what its own ``comfy.sd.load_diffusion_model_state_dict`` does (old scaled-fp8 conversion,
prefix stripping, model detection, diffusers key conversion, dtype choice, the fp8 options of UNETLoader,
its model classes and patcher class); the weights reach the model through the host's own
``load_state_dict`` one child module at a time, exactly as LeanCheckpointLoader does (the same
machinery, nodes/checkpoint.py), so ComfyUI's memory manager owns the model.  Lean changes only where the
tensors come from (zero-copy views of the mapped file, or read/pread buffers) and adds the load report.
"""
import logging

import torch

import comfy.model_detection
import comfy.utils
import folder_paths

from ..core import ckpt as core
from ..core import memory
from . import checkpoint as _ckpt

log = logging.getLogger("lean")

DISPLAY = "Load Diffusion Model (mmap)"
# UNETLoader's options, in UNETLoader's order: name -> (weight dtype, fp8_optimizations)
WEIGHT_DTYPES = {"default": (None, False),
                 "fp8_e4m3fn": (getattr(torch, "float8_e4m3fn", None), False),
                 "fp8_e4m3fn_fast": (getattr(torch, "float8_e4m3fn", None), True),
                 "fp8_e5m2": (getattr(torch, "float8_e5m2", None), False)}


def _config_and_state_dict(views, metadata):
    """(model_config, state dict with the diffusion model's keys, prefix) the way the host's
    ``load_diffusion_model_state_dict`` finds them: a checkpoint's prefix is used when the file has one,
    else the keys are taken as they are; diffusers layouts are converted with the host's own functions."""
    prefix = comfy.model_detection.unet_prefix_from_state_dict(views)
    if not any(k.startswith(prefix) for k in views):
        prefix = ""
    model_config = comfy.model_detection.model_config_from_unet(views, prefix, metadata=metadata)
    if model_config is not None:
        return model_config, views, prefix
    sd = {k[len(prefix):]: v for k, v in views.items() if k.startswith(prefix)}
    new_sd = comfy.model_detection.convert_diffusers_mmdit(sd, "")
    if new_sd is not None:  # diffusers MMDiT (SD3, Flux, AuraFlow ...)
        return comfy.model_detection.model_config_from_unet(new_sd, ""), new_sd, ""
    model_config = comfy.model_detection.model_config_from_diffusers_unet(sd)
    if model_config is None:
        return None, sd, ""
    new_sd = {}
    for k, target in comfy.utils.unet_to_diffusers(model_config.unet_config).items():
        if k in sd:
            new_sd[target] = sd[k]
    return model_config, new_sd, ""


def load_diffusion_model(path, weight_dtype="default", load_mode="mmap", name=None):
    """(MODEL, report dict).  Usable without the node (bench)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {list(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    dtype, fp8_fast = WEIGHT_DTYPES[weight_dtype]
    if weight_dtype != "default" and dtype is None:
        raise ValueError(f"weight_dtype {weight_dtype} needs a newer torch than {torch.__version__}")
    load_mode, mode_note = core.resolve_load_mode(load_mode)
    meter = core.LoadMeter()
    memory.release_freed_memory()
    ck = core.open_checkpoint(path, load_mode)
    name = name or ck.name
    try:
        if len(ck) == 0:
            raise core.CheckpointError(f"{ck.name}: holds no tensors; not a diffusion model")
        views = ck.views()
        metadata = ck.metadata
        convert = _ckpt._host.convert_old_quants()
        if convert is not None:  # old scaled-fp8 files -> the host's per-layer quantization, as UNETLoader does
            views, metadata = convert(views, "", metadata=metadata)
        model_config, sd, prefix = _config_and_state_dict(views, metadata)
        if model_config is None:
            sample = ", ".join(list(views)[:3])
            raise core.CheckpointError(
                f"{ck.name}: no diffusion model architecture this ComfyUI knows was found (keys start like: {sample}). "
                f"A LoRA goes in a LoRA loader, a VAE/text encoder in their loaders; a newer ComfyUI may know this "
                f"model.{_ckpt._host.model_detection_error_hint(path, views)}")
        if fp8_fast:
            model_config.optimizations["fp8"] = True
        model, zero_copy, desc = _ckpt._load_diffusion_model(ck, sd, prefix, model_config, dtype, load_mode)
        for key in ck.keys_read - zero_copy:
            ck.release(key)
        del views, sd
        report = {"file": name, "format": ck.format, "mode": load_mode, "file_bytes": ck.nbytes(),
                  "bytes_read": ck.bytes_read, "keys_read": len(ck.keys_read), "keys_total": len(ck),
                  "keys_read_list": sorted(ck.keys_read), "parts": {"model": desc}, "weight_dtype": weight_dtype,
                  "mode_note": mode_note}
    finally:
        ck.close()
        memory.release_freed_memory()
    report.update(meter.figures())
    report["text"] = "\n".join(line for line in core.format_report(report).splitlines()
                               if not line.startswith(("clip:", "vae:")))
    return model, report


class LeanDiffusionModelLoader:
    DESCRIPTION = ("Loads a bare diffusion model (Flux, SD3.5, Wan, Qwen-Image ... from models/diffusion_models or "
                   "models/unet) like Load Diffusion Model, with one copy of the weights in memory instead of two: "
                   "tensors come straight from the memory-mapped file (converted one at a time where the dtype "
                   "differs) and ComfyUI's own code builds and owns the model. The STRING output is a load report "
                   "(seconds, bytes read, peak RSS, device, dtype), also shown on the node.")
    CATEGORY = "lean/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("MODEL", "report")
    OUTPUT_TOOLTIPS = ("The diffusion model.", "Load report: seconds, bytes read, peak RSS, device and dtype.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet_name": (folder_paths.get_filename_list("diffusion_models"),
                          {"tooltip": "The diffusion model in models/diffusion_models (or models/unet): "
                                      ".safetensors/.sft, or .ckpt/.pt/.pth/.bin loaded weights-only."}),
            "weight_dtype": (list(WEIGHT_DTYPES),
                             {"default": "default", "advanced": True,
                              "tooltip": "As in Load Diffusion Model. default: the file's dtype where the device "
                                         "supports it (what ComfyUI would pick). fp8_e4m3fn/fp8_e5m2: keep weights in "
                                         "fp8 (half of fp16), computed with a per-layer cast. fp8_e4m3fn_fast: also "
                                         "compute in fp8 on GPUs that can (RTX 40xx and newer)."}),
            "load_mode": (_ckpt.LOAD_MODES, {"default": "mmap", "advanced": True, "tooltip": _ckpt.LOAD_MODE_TOOLTIP}),
        }}

    def load(self, unet_name, weight_dtype="default", load_mode="mmap"):
        path = folder_paths.get_full_path("diffusion_models", unet_name)
        if path is None:
            raise FileNotFoundError(f"{DISPLAY}: diffusion model '{unet_name}' not found in models/diffusion_models "
                                    f"or models/unet (put the file there and refresh the browser)")
        try:
            model, report = load_diffusion_model(path, weight_dtype, load_mode, name=unet_name)
        except core.CheckpointError as e:
            raise ValueError(f"{DISPLAY}: {e}") from None
        text = report["text"]
        log.info("[Lean Diffusion Model] %s", text.replace("\n", " | "))
        return {"ui": {"text": [text]}, "result": (model, text)}


NODE_CLASS_MAPPINGS = {"LeanDiffusionModelLoader": LeanDiffusionModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"LeanDiffusionModelLoader": DISPLAY}
