"""The SD1.5 fixture (lean_testlib.sd15) re-stored in other formats, cached next to it.

* ``fp32`` / ``bf16``: every floating tensor of the fp16 fixture cast to that dtype (what an fp32 or bf16
  checkpoint of the same model looks like).
* ``scaled_fp8``: the old ComfyUI scaled-fp8 layout, as ComfyUI 0.3.x wrote and read it
  (``comfy/model_detection.py``: a ``model.diffusion_model.scaled_fp8`` marker whose dtype is the weight
  dtype, an empty tensor = fp8 matmul allowed; ``comfy/ops.py`` ``scaled_fp8_ops``: ``Linear`` layers hold
  ``weight`` in float8_e4m3fn and a float32 scalar ``scale_weight``, the real weight being
  ``weight * scale_weight``; newer hosts turn this into per-layer quantization with
  ``comfy.utils.convert_old_quants``).  Every 2-D UNet weight (the Linear layers) becomes
  ``round_fp8(w / s)`` with ``s = max|w| / 448`` per tensor; everything else stays fp16.
* ``comfy_quant``: the mixed-precision layout of ComfyUI 0.3.76 and later, as its own save writes it
  (``comfy/ops.py`` ``mixed_precision_ops`` ``Linear.state_dict``: ``<layer>.weight`` in float8_e4m3fn,
  ``<layer>.weight_scale`` a float32 scalar, ``<layer>.comfy_quant`` the layer's JSON config
  ``{"format": "float8_e4m3fn"}`` as a uint8 tensor of its UTF-8 bytes; no ``scaled_fp8`` marker).  The host
  detects it by the ``.comfy_quant`` keys (``comfy.utils.detect_layer_quantization`` -> ``quant_config``) and
  loads it with ``MixedPrecisionOps``.  The same layers and scales as ``scaled_fp8``.  Files may instead (or
  also) list the layers in the ``_quantization_metadata`` header entry (QUANTIZATION.md); the host turns
  that into the same keys (``comfy.utils.convert_old_quants``), so this variant covers the keys themselves.

* ``fp8_rounded``: the reference for a model held in fp8 (``weight_dtype`` fp8_e4m3fn): every floating tensor of
  the diffusion model (``model.diffusion_model.*``) rounded to float8_e4m3fn (round to nearest even, as
  ``Tensor.to`` and a parameter's ``copy_`` do) and stored back in the file's own dtype, which holds every fp8
  value exactly (fp16 and bf16 both cover e4m3's range and its 3 mantissa bits).  A stock loader on this file
  computes with exactly the values an fp8-held model computes with; text encoder and VAE are unchanged.

Deterministic (no randomness beyond the source fixture); written to a ``.part`` file and renamed.
"""
from . import cache_dir

VARIANT_VERSION = 1
VARIANTS = ("fp32", "bf16", "scaled_fp8", "comfy_quant", "fp8_rounded")
FP8_CONF = {"format": "float8_e4m3fn"}
UNET = "model.diffusion_model."
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def variant_path(variant, source):
    import pathlib
    return cache_dir() / "fixtures" / f"{pathlib.Path(source).stem}_{variant}_v{VARIANT_VERSION}.safetensors"


def convert(sd, variant):
    """The state dict ``sd`` (key -> tensor) stored as ``variant``; a new dict."""
    import torch
    out = {}
    if variant in ("fp32", "bf16"):
        dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[variant]
        for k, t in sd.items():
            out[k] = t.to(dt) if t.is_floating_point() else t
        return out
    if variant == "fp8_rounded":
        return round_through_fp8(sd, UNET)
    if variant not in ("scaled_fp8", "comfy_quant"):
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    import json
    f8 = torch.float8_e4m3fn
    conf = torch.tensor(list(json.dumps(FP8_CONF).encode("utf-8")), dtype=torch.uint8)
    for k, t in sd.items():
        if k.startswith(UNET) and k.endswith(".weight") and t.ndim == 2:
            w = t.float()
            scale = (w.abs().max() / FP8_MAX).clamp(min=1e-12)
            out[k] = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(f8)
            layer = k[:-len(".weight")]
            if variant == "scaled_fp8":
                out[layer + ".scale_weight"] = scale.reshape(()).to(torch.float32)
            else:
                out[layer + ".weight_scale"] = scale.reshape(()).to(torch.float32)
                out[layer + ".comfy_quant"] = conf.clone()
        else:
            out[k] = t
    if variant == "scaled_fp8":
        out[UNET + "scaled_fp8"] = torch.tensor([], dtype=f8)
    return out


def round_through_fp8(sd, prefix=""):
    """``sd`` with every floating tensor whose key starts with ``prefix`` rounded to float8_e4m3fn and back to its
    own dtype (exact: see ``fp8_rounded`` above); a new dict.  A value beyond e4m3's range would become NaN:
    refused, so a fixture never hides one."""
    import torch
    out = {}
    for k, t in sd.items():
        if k.startswith(prefix) and t.is_floating_point():
            if t.numel() and float(t.float().abs().max()) > FP8_MAX:
                raise ValueError(f"{k}: values beyond float8_e4m3fn's range")
            r = t.to(torch.float8_e4m3fn).to(t.dtype)
            assert torch.equal(r.to(torch.float8_e4m3fn).to(t.dtype), r)  # stored exactly
            out[k] = r
        else:
            out[k] = t
    return out


def fp8_rounded_file(source, prefix=""):
    """Path of the cached copy of the safetensors file ``source`` with ``round_through_fp8(sd, prefix)`` applied
    (for diffusion-model-only files such as lean_testlib.flux_tiny, ``prefix`` "")."""
    import os
    import pathlib
    from safetensors.torch import load_file, save_file
    out = cache_dir() / "fixtures" / f"{pathlib.Path(source).stem}_fp8_rounded_v{VARIANT_VERSION}.safetensors"
    if out.exists():
        return out
    sd = round_through_fp8(load_file(str(source)), prefix)
    tmp = out.with_suffix(f".part{os.getpid()}")
    save_file(sd, str(tmp), metadata={"lean_fixture": f"fp8_rounded v{VARIANT_VERSION}"})
    os.replace(tmp, out)
    return out


def sd15_variant(variant, source=None):
    """Path of the cached SD1.5 fixture stored as ``variant`` (made from the fp16 fixture on first use)."""
    from safetensors.torch import load_file, save_file
    from . import sd15
    source = source or sd15.sd15_checkpoint()
    out = variant_path(variant, source)
    if out.exists():
        return out
    sd = convert(load_file(str(source)), variant)
    tmp = out.with_suffix(".safetensors.part")
    save_file(sd, str(tmp), metadata={"lean_fixture": f"sd15 {variant} v{VARIANT_VERSION}"})
    del sd
    tmp.rename(out)
    return out
