"""What the pack knows about other custom-node packs' objects it meets in a model (never imported, recognised
by class name, so the pack runs the same with or without them installed).

ComfyUI-GGUF (city96/ComfyUI-GGUF, ``ops.py``): its ``UnetLoaderGGUF`` builds the model with ``GGMLOps`` layers
(``GGMLLayer`` subclasses of ``torch.nn.Linear``/``Conv2d``...) whose weights are ``GGMLTensor``: a
``torch.Tensor`` subclass holding the *packed* quantized blocks (uint8 rows), with the quant type in
``tensor_type`` and the logical shape in ``tensor_shape``.  Its ``.shape`` answers the logical shape, but
``dim()``, ``size()`` and ``numel()`` are the packed data's: a Q8_0 conv weight [320, 320, 1, 1] is stored as
[400, 272] bytes, so ``weight.dim()`` says 2.  Everything here that needs a weight's shape asks ``weight_shape``.
"""
import torch


def _class_names(obj):
    return {c.__name__ for c in type(obj).__mro__}


def is_ggml_tensor(t) -> bool:
    """True for ComfyUI-GGUF's GGMLTensor (and subclasses)."""
    return t is not None and "GGMLTensor" in _class_names(t)


def weight_shape(w) -> torch.Size:
    """The logical shape of a weight: ComfyUI-GGUF's ``tensor_shape`` for a GGMLTensor (its packed data has
    another shape and dimension count), else the tensor's own shape."""
    s = getattr(w, "tensor_shape", None) if is_ggml_tensor(w) else None
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
