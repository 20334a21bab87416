"""What the ComfyUI host this pack runs in can do, detected in one place.

ComfyUI changes how it builds and holds models between releases (DynamicVRAM / comfy-aimdo with lazily
built layers since 0.15 and 0.29, ``quant_config`` replacing ``scaled_fp8`` in 0.3.76, ``assign`` in
``load_model_weights``, a RAM-pressure cache in 0.33).  The node modules ask here instead of probing the
host themselves; every answer is read live (``main.py`` switches DynamicVRAM on after the pack may have
been imported), and nothing here changes the host.

Not a node module (the leading underscore keeps ``__init__.py`` from registering it).
"""
import inspect
import logging

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


def load_weights_takes_assign():
    """True when ``BaseModel.load_model_weights`` has the ``assign`` argument (the host hands file tensors
    to a dynamic patcher's model by reference)."""
    import comfy.model_base
    try:
        return "assign" in inspect.signature(comfy.model_base.BaseModel.load_model_weights).parameters
    except (TypeError, ValueError):
        return False


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


def ram_cache_release():
    """0.33's RAM-pressure cache hook (``comfy.memory_management.extra_ram_release``), else None."""
    mmgmt = _import("comfy.memory_management")
    fn = getattr(mmgmt, "extra_ram_release", None)
    return fn if callable(fn) else None


def free_hooks():
    """Names of the host functions through which memory is freed, present on this host."""
    import comfy.model_management as mm
    out = [n for n in ("free_memory", "unload_all_models", "load_models_gpu", "cleanup_models", "soft_empty_cache")
           if callable(getattr(mm, n, None))]
    if isinstance(getattr(mm, "current_loaded_models", None), list):
        out.append("current_loaded_models")
    if ram_cache_release() is not None:
        out.append("memory_management.extra_ram_release")
    return out


def capabilities():
    """Everything above as a plain dict (for the load report, logs and tests)."""
    pc = patcher_class()
    return {"dynamic_vram": dynamic_vram(), "patcher_class": pc.__name__,
            "load_weights_assign": load_weights_takes_assign(), "quant_style": quant_style(),
            "convert_old_quants": convert_old_quants() is not None, "free_hooks": free_hooks()}

