"""Tiny diffusion models as GGUF files in the layout ComfyUI-GGUF's ``UnetLoaderGGUF`` reads, written at test time
with the ``gguf`` package's own writer and quantizers (no download, nothing from ComfyUI-GGUF's code):

    flux_gguf("Q8_0")    -> the tiny Flux of lean_testlib.flux_tiny (Flux-dev widths, 1+1 blocks) as GGUF
    sd15_unet_gguf("Q4_0") -> the UNet of lean_testlib.sd15 (exact SD1.5 shapes, the fixture's tensors) as GGUF

Layout (what ComfyUI-GGUF's loader.py expects, per its README and tools/): ``general.architecture`` = "flux" /
"sd1"; tensors under the diffusion model's own key names (no ``model.diffusion_model.`` prefix); 1-D and small
(<= 1024 values) tensors in F32; every other tensor quantized with ``gguf.quants.quantize``.  A quantized row must
be a whole number of blocks (32 values for Q8_0/Q4_0): SD1.5's conv weights (last dim 3 or 1) are therefore
stored as rows of 256 values with their real shape in the ``comfy.gguf.orig_shape.<key>`` INT32 array, which the
loader turns into the GGMLTensor's ``tensor_shape`` (Flux needs no reshaping: all its widths are multiples of 32).
"""
import os

from . import cache_dir

GENERATOR_VERSION = 1
SMALL = 1024  # tensors up to this many values stay F32
ROW = 256


def _qtype(name):
    import gguf
    return gguf.GGMLQuantizationType[name]


def write_gguf(path, tensors, arch, qtype):
    """Write `tensors` (an iterable of (key, torch tensor)) to `path` as a GGUF diffusion model."""
    import gguf
    import numpy as np
    import torch
    q = _qtype(qtype)
    block = gguf.GGML_QUANT_SIZES[q][0]
    w = gguf.GGUFWriter(path=None, arch=arch)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, t in tensors:
        a = t.detach().to(torch.float32).numpy()
        if a.ndim <= 1 or a.size <= SMALL:
            w.add_tensor(key, np.ascontiguousarray(a), raw_dtype=gguf.GGMLQuantizationType.F32)
            continue
        if a.shape[-1] % block:
            if a.size % ROW:
                raise ValueError(f"{key} {a.shape}: cannot be stored as rows of {ROW}")
            w.add_array(f"comfy.gguf.orig_shape.{key}", [int(d) for d in a.shape])
            a = a.reshape(a.size // ROW, ROW)
        w.add_tensor(key, gguf.quants.quantize(np.ascontiguousarray(a), q), raw_dtype=q)
    w.write_header_to_file(path=str(path))
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _cached(name, make):
    d = cache_dir() / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        make(tmp)
        os.replace(tmp, path)
    return path


def flux_gguf(qtype="Q8_0", seed=0):
    """Path of the cached tiny Flux (lean_testlib.flux_tiny, default layout) quantized to `qtype`."""
    from . import flux_tiny

    def make(tmp):
        from safetensors import safe_open
        src = flux_tiny.flux_tiny(seed=seed)
        with safe_open(str(src), "pt") as f:
            write_gguf(tmp, ((k, f.get_tensor(k)) for k in f.keys()), "flux", qtype)
    return _cached(f"flux_tiny_v{flux_tiny.GENERATOR_VERSION}_seed{seed}_gguf{GENERATOR_VERSION}_{qtype}.gguf", make)


def sd15_unet_gguf(qtype="Q8_0", seed=0, narrow=False):
    """Path of the cached SD1.5 UNet quantized to `qtype`: the UNet tensors of lean_testlib.sd15's checkpoint
    (made one by one with the fixture's own seeded generator, fp16 as in the checkpoint, so they are the
    checkpoint's tensors without reading 2 GB); narrow: of its narrow variant (sd15.NARROW: every SD1.5 key and
    block, 320 channels on every level, detected as SD1.5)."""
    from . import sd15

    def make(tmp):
        import torch
        prefix = "model.diffusion_model."
        table = sd15.unet_keys(prefix, mult=sd15.NARROW if narrow else sd15.MULT)
        write_gguf(tmp, ((k[len(prefix):], sd15.random_tensor(torch, k, s, seed, torch.float16))
                         for k, s in table.items()), "sd1", qtype)
    kind = "sd15n" if narrow else "sd15"
    return _cached(f"{kind}_unet_v{sd15.GENERATOR_VERSION}_seed{seed}_gguf{GENERATOR_VERSION}_{qtype}.gguf", make)
