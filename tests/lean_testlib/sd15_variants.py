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

Deterministic (no randomness beyond the source fixture); written to a ``.part`` file and renamed.
"""
from . import cache_dir

VARIANT_VERSION = 1
VARIANTS = ("fp32", "bf16", "scaled_fp8")
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
    if variant != "scaled_fp8":
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    f8 = torch.float8_e4m3fn
    for k, t in sd.items():
        if k.startswith(UNET) and k.endswith(".weight") and t.ndim == 2:
            w = t.float()
            scale = (w.abs().max() / FP8_MAX).clamp(min=1e-12)
            out[k] = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(f8)
            out[k[:-len("weight")] + "scale_weight"] = scale.reshape(()).to(torch.float32)
        else:
            out[k] = t
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
