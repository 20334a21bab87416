"""A full-size Flux-dev-shaped diffusion model in float8_e4m3fn (random weights) for the memory benchmark
(bench/flux_load.py): Black Forest Labs' key names and shapes (lean_testlib.flux_tiny.flux_keys with 19 double
and 38 single blocks, hidden 3072: 780 tensors, 11.90 B parameters, 11.9 GB), every tensor stored as F8_E4M3,
norm scales and biases included.

Which tensors stay bf16 in the real fp8 release: none of the diffusion model's.  A Comfy-Org-style
flux1-dev-fp8 checkpoint reports ``'model.diffusion_model.': {torch.float8_e4m3fn: 780}`` (all 780 tensors fp8;
log quoted in AUTOMATIC1111/stable-diffusion-webui PR #16484), and the dtype census of a Flux-dev fine-tune in
that layout (huggingface/candle issue #2875) has 948 F8_E4M3 tensors = those 780 + the T5's 168, with bf16 only
in the VAE.  The bare 11.9 GB file (e.g. Kijai's flux1-dev-fp8.safetensors) is the same 780 fp8 tensors: 11.90 B
parameters at one byte each leave no room for bf16 tensors of any size.  This fixture follows that.

    flux_full()            -> path of the cached .safetensors (generated once, ~3-5 minutes on 2 cores)

The file is written tensor by tensor in chunks of at most ``CHUNK`` elements straight into a safetensors file
whose header is computed first (no state dict is ever held: peak memory ~ one chunk), from one seeded generator
per tensor (deterministic).  Values: weights N(0, 1/fan_in), biases N(0, 0.02^2), norm scales 1 + N(0, 0.1^2),
clamped to e4m3fn's finite range, so no byte is a NaN (0x7F/0xFF; e4m3fn has no inf) and one sampling step
gives finite output.
"""
import json
import math
import os
import struct

from .flux_tiny import flux_keys

GENERATOR_VERSION = 1
CHUNK = 1 << 26  # elements per generated piece (64 MiB of fp8)
E4M3_MAX = 448.0
FULL = {"hidden_size": 3072, "depth": 19, "depth_single": 38, "context_in_dim": 4096}


def layout(**kw):
    p = dict(FULL, **kw)
    return flux_keys(hidden_size=p["hidden_size"], depth=p["depth"], depth_single=p["depth_single"],
                     context_in_dim=p["context_in_dim"])


ITEMSIZE = {"F8_E4M3": 1, "BF16": 2}


def _header(keys, metadata, dtype="F8_E4M3"):
    """safetensors header bytes (length prefix included) with the data laid out in ``keys`` order."""
    head, off = {"__metadata__": metadata}, 0
    for k, shape in keys.items():
        n = math.prod(shape) * ITEMSIZE[dtype]
        head[k] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(head, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, off


def _pieces(key, shape, gen, dtype="F8_E4M3"):
    """The tensor's values, flat, as float8_e4m3fn (or bfloat16) pieces of at most CHUNK elements."""
    import torch
    n = math.prod(shape)
    if key.endswith(".scale") or (key.endswith(".weight") and len(shape) == 1):  # norm scales
        mean, std = 1.0, 0.1
    elif key.endswith(".bias"):
        mean, std = 0.0, 0.02
    else:
        mean, std = 0.0, (1.0 / shape[1]) ** 0.5
    done = 0
    while done < n:
        m = min(CHUNK, n - done)
        x = torch.empty(m).normal_(mean, std, generator=gen).clamp_(-E4M3_MAX, E4M3_MAX)
        if dtype == "BF16":
            yield x.to(torch.bfloat16).view(torch.int16).numpy()
            done += m
            continue
        y = x.to(torch.float8_e4m3fn)
        del x
        b = y.view(torch.uint8)
        if bool(((b & 0x7F) == 0x7F).any()):  # cannot happen after the clamp; never write a NaN byte
            raise AssertionError(f"{key}: NaN byte generated")
        yield b.numpy()
        done += m


def write(path, seed=0, keys=None, dtype="F8_E4M3", name="flux_full", **kw):
    """Write the fixture (``keys``, default layout(**kw)) to ``path`` in chunks; returns the number of data
    bytes."""
    import torch
    keys = layout(**kw) if keys is None else keys
    meta = {"lean_fixture": f"{name} v{GENERATOR_VERSION} seed {seed}", "format": "pt"}
    header, total = _header(keys, meta, dtype)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for i, (k, shape) in enumerate(keys.items()):
                gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
                for piece in _pieces(k, shape, gen, dtype):
                    f.write(piece)
        if os.path.getsize(tmp) != len(header) + total:
            raise AssertionError(f"{tmp}: size {os.path.getsize(tmp)} != {len(header) + total}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return total


def flux_full(seed=0, cache=None, **kw):
    """Path of the cached full-size (or, with layout keywords, smaller) Flux-dev-shaped fp8_e4m3fn fixture."""
    from . import cache_dir
    p = dict(FULL, **kw)
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    tag = "" if p == FULL else "_h{hidden_size}_d{depth}_s{depth_single}_c{context_in_dim}".format(**p)
    path = d / f"flux_full_fp8_e4m3fn_v{GENERATOR_VERSION}{tag}_seed{seed}.safetensors"
    if not path.exists():
        write(path, seed, **kw)
    return path


ZIMAGE_FULL = {"n_layers": 30, "refiners": 2, "dim": 3840, "ffn": 10240, "cap_feat_dim": 2560}


def zimage_full_path(seed=0, cache=None):
    from . import cache_dir
    return (cache or cache_dir()) / "fixtures" / f"zimage_full_bf16_v{GENERATOR_VERSION}_seed{seed}.safetensors"


def zimage_full(seed=0, cache=None):
    """Path of the cached full-size Z-Image-shaped bf16 diffusion model (families.zimage_keys with Z-Image Turbo's
    30 layers, 2 noise and 2 context refiners, dim 3840, FFN 10240: 6.15 B parameters, 12.3 GB), written like the
    Flux one (chunked, seeded per tensor, norm scales 1 + N(0, 0.1^2))."""
    from .families import zimage_keys
    path = zimage_full_path(seed, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write(path, seed, keys=zimage_keys(**ZIMAGE_FULL), dtype="BF16", name="zimage_full")
    return path
