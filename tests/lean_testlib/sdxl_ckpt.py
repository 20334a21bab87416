"""Random-weight checkpoint with the exact key layout, shapes and dtype (fp16) of Stability AI's
``sd_xl_base_1.0.safetensors`` (the generative-models / ``sgm`` layout):

- UNet ``model.diffusion_model.*``: model_channels 320, channel_mult (1, 2, 4), 2 res blocks per level,
  transformer depth 0 / 2 / 10 per level (input blocks [0, 0, 2, 2, 10, 10], middle 10), linear proj_in/out,
  context 2048, ``label_emb`` for the 2816-wide ADM vector (pooled CLIP-G 1280 + 6 size/crop embeddings of 256);
- CLIP ViT-L/14 text model ``conditioner.embedders.0.transformer.text_model.*`` (HF transformers layout);
- OpenCLIP ViT-bigG/14 text tower ``conditioner.embedders.1.model.*`` (open_clip layout: token_embedding,
  positional_embedding, transformer.resblocks.N.{ln_1, attn.in_proj_weight/bias, attn.out_proj, ln_2, mlp.c_fc,
  mlp.c_proj}, ln_final, text_projection, logit_scale; 32 layers, width 1280);
- VAE ``first_stage_model.*`` (the same AutoencoderKL layout as SD1.5).

Written out from the published architecture (independently of ComfyUI's key maps); a tier-2 test checks that
the host detects it as SDXL and its stock loader finds a place for every key.  Deterministic: each tensor comes
from its own generator seeded by (seed, crc32(key)).  The file (~6.9 GB) is written one tensor at a time
(safetensors header first, then each tensor's bytes), so generating it never holds more than one tensor.

    sdxl_checkpoint()      -> path of the cached file (~/.cache/lean-nodes/fixtures, keyed by generator version)
    sdxl_key_table()       -> {key: shape}
"""
import json
import os
import struct

from .sd15 import _resblock, clip_l_keys, seeded_normal, vae_keys
from .sd15 import _transformer as _sd15_transformer

GENERATOR_VERSION = 1

UNET = "model.diffusion_model."
CLIP_L = "conditioner.embedders.0.transformer.text_model."
CLIP_G = "conditioner.embedders.1.model."
VAE = "first_stage_model."

CHANNEL_MULT = (1, 2, 4)
# The narrow variant: SDXL's UNet at 320 channels on every level, every key but the two 1x1 skip convolutions that
# a width change on the way down needs (0.28 B UNet parameters instead of 2.57 B; the text encoders and VAE
# unchanged).  ComfyUI's SDXL config fixes model_channels, transformer depths, context and ADM width, not the
# channel multipliers, so both hosts' stock loader detect it as SDXL.
NARROW = (1, 1, 1)
DEPTH = (0, 2, 10)          # transformer blocks per attention layer, per level
MODEL_CHANNELS = 320
CONTEXT = 2048
ADM = 2816


def _transformer(p, c, depth, ctx=CONTEXT):
    """SpatialTransformer with use_linear_in_transformer=True (proj_in/proj_out are Linear, so 2-D) and `depth`
    BasicTransformerBlocks, each laid out like SD1.5's single one."""
    k = {}
    for key, shape in _sd15_transformer(p, c, ctx).items():
        if ".transformer_blocks.0." in key:
            for d in range(depth):
                k[key.replace(".transformer_blocks.0.", f".transformer_blocks.{d}.")] = shape
        else:
            k[key] = shape[:2] if key.endswith(("proj_in.weight", "proj_out.weight")) else shape
    return k


def unet_keys(prefix=UNET, channel_mult=CHANNEL_MULT):
    mc = MODEL_CHANNELS
    emb = mc * 4
    k = {"time_embed.0.weight": (emb, mc), "time_embed.0.bias": (emb,),
         "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,),
         "label_emb.0.0.weight": (emb, ADM), "label_emb.0.0.bias": (emb,),
         "label_emb.0.2.weight": (emb, emb), "label_emb.0.2.bias": (emb,),
         "input_blocks.0.0.weight": (mc, 4, 3, 3), "input_blocks.0.0.bias": (mc,)}
    mult = tuple(mc * m for m in channel_mult)
    skips = [mc]
    ch = mc
    i = 1
    for level, c in enumerate(mult):
        for _ in range(2):
            k.update(_resblock(f"input_blocks.{i}.0", ch, c, emb))
            ch = c
            if DEPTH[level]:
                k.update(_transformer(f"input_blocks.{i}.1", c, DEPTH[level]))
            skips.append(ch)
            i += 1
        if level != len(mult) - 1:
            k[f"input_blocks.{i}.0.op.weight"] = (ch, ch, 3, 3)
            k[f"input_blocks.{i}.0.op.bias"] = (ch,)
            skips.append(ch)
            i += 1
    k.update(_resblock("middle_block.0", ch, ch, emb))
    k.update(_transformer("middle_block.1", ch, DEPTH[-1]))
    k.update(_resblock("middle_block.2", ch, ch, emb))
    o = 0
    for level in reversed(range(len(mult))):
        c = mult[level]
        for j in range(3):
            k.update(_resblock(f"output_blocks.{o}.0", ch + skips.pop(), c, emb))
            ch = c
            n = 1
            if DEPTH[level]:
                k.update(_transformer(f"output_blocks.{o}.1", c, DEPTH[level]))
                n = 2
            if level and j == 2:
                k[f"output_blocks.{o}.{n}.conv.weight"] = (c, c, 3, 3)
                k[f"output_blocks.{o}.{n}.conv.bias"] = (c,)
            o += 1
    k.update({"out.0.weight": (mc,), "out.0.bias": (mc,), "out.2.weight": (4, mc, 3, 3), "out.2.bias": (4,)})
    return {prefix + name: s for name, s in k.items()}


def clip_g_keys(prefix=CLIP_G, width=1280, layers=32, vocab=49408, ctx=77, proj=1280):
    """OpenCLIP text tower (open_clip's CLIP with the visual tower deleted, as sgm's FrozenOpenCLIPEmbedder2)."""
    k = {"positional_embedding": (ctx, width), "token_embedding.weight": (vocab, width)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}"
        k.update({f"{p}.ln_1.weight": (width,), f"{p}.ln_1.bias": (width,),
                  f"{p}.attn.in_proj_weight": (3 * width, width), f"{p}.attn.in_proj_bias": (3 * width,),
                  f"{p}.attn.out_proj.weight": (width, width), f"{p}.attn.out_proj.bias": (width,),
                  f"{p}.ln_2.weight": (width,), f"{p}.ln_2.bias": (width,),
                  f"{p}.mlp.c_fc.weight": (4 * width, width), f"{p}.mlp.c_fc.bias": (4 * width,),
                  f"{p}.mlp.c_proj.weight": (width, 4 * width), f"{p}.mlp.c_proj.bias": (width,)})
    k.update({"ln_final.weight": (width,), "ln_final.bias": (width,),
              "text_projection": (width, proj), "logit_scale": ()})
    return {prefix + name: s for name, s in k.items()}


POSITION_IDS = CLIP_L + "embeddings.position_ids"  # int64 (1, 77), as in the released file


def sdxl_key_table(narrow=False):
    """{key: shape} for the whole checkpoint (floating-point tensors; position_ids is int64)."""
    t = {}
    t.update(unet_keys(channel_mult=NARROW if narrow else CHANNEL_MULT))
    t.update(clip_l_keys(CLIP_L))
    t[POSITION_IDS] = (1, 77)
    t.update(clip_g_keys())
    t.update(vae_keys(VAE))
    return t


# ---------------------------------------------------------------- tensors

_NORM_MARKS = (".norm.", ".norm1.", ".norm2.", ".norm3.", "layer_norm", "norm_out", "in_layers.0.", "out_layers.0.",
               "out.0.", "final_layer_norm", ".ln_1.", ".ln_2.", "ln_final.")


def random_tensor(torch, key, shape, seed, dtype):
    """One deterministic tensor.  Norm weights 1, biases 0, embeddings N(0, 0.02), logit_scale ln(100), other
    weights N(0, 1/fan_in): each layer keeps its input's scale, so activations stay O(1) through SDXL's 70
    transformer blocks and one sampling step (fp32 on the CPU) gives finite values."""
    if key == POSITION_IDS:
        return torch.arange(77, dtype=torch.int64)[None]
    if key.endswith("logit_scale"):
        return torch.tensor(4.6052, dtype=dtype)
    if key.endswith("bias"):  # also attn.in_proj_bias
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1 and any(m in key for m in _NORM_MARKS):
        return torch.ones(shape, dtype=dtype)
    # open_clip applies x @ text_projection: its fan_in is shape[0]
    return seeded_normal(torch, key, shape, seed, dtype, shape[0] if key.endswith("text_projection") else None)


_DT = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "int64": "I64"}


def write_streamed(path, table, make, metadata=None):
    """Write a safetensors file (format per the safetensors spec: u64 header length, JSON header with dtype, shape
    and data_offsets per key, padded with spaces to 8 bytes, then the raw little-endian data) one tensor at a
    time.  ``table`` is {key: (shape, safetensors dtype name)}, enough for the header; ``make(key, shape)`` then
    builds each tensor just before its bytes are written."""
    import torch
    header = {}
    off = 0
    for key, (shape, dt) in table.items():
        n = 1
        for s in shape:
            n *= s
        size = n * {"F16": 2, "BF16": 2, "F32": 4, "I64": 8}[dt]
        header[key] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            from . import made_in_order  # made by two threads, written in order (per-key seeds: the same bytes)
            for (key, (shape, dt)), t in zip(table.items(), made_in_order(lambda kv: make(kv[0], kv[1][0]),
                                                                          table.items())):
                assert _DT[str(t.dtype).split(".")[-1]] == dt and tuple(t.shape) == tuple(shape), key
                t = t.contiguous().reshape(-1)
                f.write((t.view(torch.int16) if dt == "BF16" else t).numpy().tobytes())
                del t
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def sdxl_checkpoint(seed=0, cache=None, narrow=False):
    """Path of the cached fp16 SDXL-base-layout checkpoint (~6.9 GB; narrow=True: the NARROW UNet, ~2.4 GB),
    generated on first use (a few minutes).  Use the narrow one where the claim is rows, prompts or per-layer LoRA
    maths, never for loader or memory claims."""
    import torch
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    kind = "sdxln" if narrow else "sdxl"
    path = d / f"lean_{kind}_v{GENERATOR_VERSION}_seed{seed}.safetensors"
    if path.exists():
        return path
    table = {k: (s, "I64" if k == POSITION_IDS else "F16") for k, s in sdxl_key_table(narrow).items()}
    write_streamed(path, table, lambda k, s: random_tensor(torch, k, s, seed, torch.float16),
                   metadata={"format": "pt", "lean_fixture": f"{kind} v{GENERATOR_VERSION} seed {seed}"})
    return path


if __name__ == "__main__":
    print(sdxl_checkpoint())
