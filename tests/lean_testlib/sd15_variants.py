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

Deterministic (no randomness beyond the source fixture); written to a ``.part`` file and renamed.
"""
from . import cache_dir

VARIANT_VERSION = 1
VARIANTS = ("fp32", "bf16", "scaled_fp8", "comfy_quant")
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
