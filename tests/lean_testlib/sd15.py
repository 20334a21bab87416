"""Random-weight checkpoint with the exact key layout, shapes and dtypes of an SD1.5
``v1-5-pruned-emaonly-fp16.safetensors`` (original LDM layout: UNet ``model.diffusion_model.*``,
CLIP ViT-L/14 text model ``cond_stage_model.transformer.text_model.*``, VAE ``first_stage_model.*``).

The key table is written out from the architecture here, independently of ComfyUI; a tier-2 test
checks it against the models ComfyUI itself builds.  Deterministic: each tensor comes from its own
generator seeded by (seed, crc32(key)), so the file is byte-identical on every run.
"""
import os
import zlib

GENERATOR_VERSION = 1

# ---------------------------------------------------------------- key table

def _resblock(p, cin, cout, emb=1280):
    k = {
        f"{p}.in_layers.0.weight": (cin,), f"{p}.in_layers.0.bias": (cin,),
        f"{p}.in_layers.2.weight": (cout, cin, 3, 3), f"{p}.in_layers.2.bias": (cout,),
        f"{p}.emb_layers.1.weight": (cout, emb), f"{p}.emb_layers.1.bias": (cout,),
        f"{p}.out_layers.0.weight": (cout,), f"{p}.out_layers.0.bias": (cout,),
        f"{p}.out_layers.3.weight": (cout, cout, 3, 3), f"{p}.out_layers.3.bias": (cout,),
    }
    if cin != cout:
        k[f"{p}.skip_connection.weight"] = (cout, cin, 1, 1)
        k[f"{p}.skip_connection.bias"] = (cout,)
    return k


def _transformer(p, c, ctx=768):
    t = f"{p}.transformer_blocks.0"
    k = {
        f"{p}.norm.weight": (c,), f"{p}.norm.bias": (c,),
        f"{p}.proj_in.weight": (c, c, 1, 1), f"{p}.proj_in.bias": (c,),
        f"{p}.proj_out.weight": (c, c, 1, 1), f"{p}.proj_out.bias": (c,),
        f"{t}.attn1.to_q.weight": (c, c), f"{t}.attn1.to_k.weight": (c, c), f"{t}.attn1.to_v.weight": (c, c),
        f"{t}.attn1.to_out.0.weight": (c, c), f"{t}.attn1.to_out.0.bias": (c,),
        f"{t}.ff.net.0.proj.weight": (c * 8, c), f"{t}.ff.net.0.proj.bias": (c * 8,),
        f"{t}.ff.net.2.weight": (c, c * 4), f"{t}.ff.net.2.bias": (c,),
        f"{t}.attn2.to_q.weight": (c, c), f"{t}.attn2.to_k.weight": (c, ctx), f"{t}.attn2.to_v.weight": (c, ctx),
        f"{t}.attn2.to_out.0.weight": (c, c), f"{t}.attn2.to_out.0.bias": (c,),
    }
    for n in (1, 2, 3):
        k[f"{t}.norm{n}.weight"] = (c,)
        k[f"{t}.norm{n}.bias"] = (c,)
    return k


# the width of each of the UNet's four levels (and of its middle block: the last level's)
MULT = (320, 640, 1280, 1280)
# The narrow variant: every key of SD1.5's UNet, at 320 channels on every level (~0.1 B parameters instead of 0.86 B).
# ComfyUI detects it as SD1.5 with its stock loader (SD15's unet_config fixes model_channels 320 and context_dim 768,
# not the channel multipliers) and builds it from the file's shapes; the block names and indices are SD1.5's, so
# LoRA key maps, kohya names and block weights mean what they mean on SD1.5.  For the tests whose claim is about
# rows, prompts and machines, not about the UNet's size (per-image LoRAs, the distributed prompt batch).
NARROW = (320, 320, 320, 320)


def unet_keys(prefix="model.diffusion_model.", mult=MULT):
    k = {"time_embed.0.weight": (1280, 320), "time_embed.0.bias": (1280,),
         "time_embed.2.weight": (1280, 1280), "time_embed.2.bias": (1280,),
         "input_blocks.0.0.weight": (320, 4, 3, 3), "input_blocks.0.0.bias": (320,)}
    attn_levels = (0, 1, 2)
    skips = [320]
    ch = 320
    i = 1
    for level, c in enumerate(mult):
        for _ in range(2):
            k.update(_resblock(f"input_blocks.{i}.0", ch, c))
            ch = c
            if level in attn_levels:
                k.update(_transformer(f"input_blocks.{i}.1", c))
            skips.append(ch)
            i += 1
        if level != len(mult) - 1:
            k[f"input_blocks.{i}.0.op.weight"] = (ch, ch, 3, 3)
            k[f"input_blocks.{i}.0.op.bias"] = (ch,)
            skips.append(ch)
            i += 1
    k.update(_resblock("middle_block.0", ch, ch))
    k.update(_transformer("middle_block.1", ch))
    k.update(_resblock("middle_block.2", ch, ch))
    o = 0
    for level in reversed(range(len(mult))):
        c = mult[level]
        for j in range(3):
            k.update(_resblock(f"output_blocks.{o}.0", ch + skips.pop(), c))
            ch = c
            n = 1
            if level in attn_levels:
                k.update(_transformer(f"output_blocks.{o}.1", c))
                n = 2
            if level and j == 2:
                k[f"output_blocks.{o}.{n}.conv.weight"] = (c, c, 3, 3)
                k[f"output_blocks.{o}.{n}.conv.bias"] = (c,)
            o += 1
    k.update({"out.0.weight": (320,), "out.0.bias": (320,), "out.2.weight": (4, 320, 3, 3), "out.2.bias": (4,)})
    return {prefix + name: s for name, s in k.items()}


def clip_l_keys(prefix="cond_stage_model.transformer.text_model."):
    k = {"embeddings.token_embedding.weight": (49408, 768), "embeddings.position_embedding.weight": (77, 768)}
    for i in range(12):
        p = f"encoder.layers.{i}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            k[f"{p}.self_attn.{proj}.weight"] = (768, 768)
            k[f"{p}.self_attn.{proj}.bias"] = (768,)
        k.update({f"{p}.layer_norm1.weight": (768,), f"{p}.layer_norm1.bias": (768,),
                  f"{p}.mlp.fc1.weight": (3072, 768), f"{p}.mlp.fc1.bias": (3072,),
                  f"{p}.mlp.fc2.weight": (768, 3072), f"{p}.mlp.fc2.bias": (768,),
                  f"{p}.layer_norm2.weight": (768,), f"{p}.layer_norm2.bias": (768,)})
    k.update({"final_layer_norm.weight": (768,), "final_layer_norm.bias": (768,)})
    return {prefix + name: s for name, s in k.items()}


def _vae_res(p, cin, cout):
    k = {f"{p}.norm1.weight": (cin,), f"{p}.norm1.bias": (cin,),
         f"{p}.conv1.weight": (cout, cin, 3, 3), f"{p}.conv1.bias": (cout,),
         f"{p}.norm2.weight": (cout,), f"{p}.norm2.bias": (cout,),
         f"{p}.conv2.weight": (cout, cout, 3, 3), f"{p}.conv2.bias": (cout,)}
    if cin != cout:
        k[f"{p}.nin_shortcut.weight"] = (cout, cin, 1, 1)
        k[f"{p}.nin_shortcut.bias"] = (cout,)
    return k


def _vae_mid(p, c=512):
    k = _vae_res(f"{p}.block_1", c, c)
    k.update({f"{p}.attn_1.norm.weight": (c,), f"{p}.attn_1.norm.bias": (c,)})
    for n in ("q", "k", "v", "proj_out"):
        k[f"{p}.attn_1.{n}.weight"] = (c, c, 1, 1)
        k[f"{p}.attn_1.{n}.bias"] = (c,)
    k.update(_vae_res(f"{p}.block_2", c, c))
    return k


def vae_keys(prefix="first_stage_model."):
    mult = (128, 256, 512, 512)
    k = {"encoder.conv_in.weight": (128, 3, 3, 3), "encoder.conv_in.bias": (128,)}
    ch = 128
    for lvl, c in enumerate(mult):
        for b in range(2):
            k.update(_vae_res(f"encoder.down.{lvl}.block.{b}", ch, c))
            ch = c
        if lvl != 3:
            k[f"encoder.down.{lvl}.downsample.conv.weight"] = (c, c, 3, 3)
            k[f"encoder.down.{lvl}.downsample.conv.bias"] = (c,)
    k.update(_vae_mid("encoder.mid"))
    k.update({"encoder.norm_out.weight": (512,), "encoder.norm_out.bias": (512,),
              "encoder.conv_out.weight": (8, 512, 3, 3), "encoder.conv_out.bias": (8,),
              "decoder.conv_in.weight": (512, 4, 3, 3), "decoder.conv_in.bias": (512,)})
    k.update(_vae_mid("decoder.mid"))
    ch = 512
    for lvl in reversed(range(4)):
        c = mult[lvl]
        for b in range(3):
            k.update(_vae_res(f"decoder.up.{lvl}.block.{b}", ch, c))
            ch = c
        if lvl != 0:
            k[f"decoder.up.{lvl}.upsample.conv.weight"] = (c, c, 3, 3)
            k[f"decoder.up.{lvl}.upsample.conv.bias"] = (c,)
    k.update({"decoder.norm_out.weight": (128,), "decoder.norm_out.bias": (128,),
              "decoder.conv_out.weight": (3, 128, 3, 3), "decoder.conv_out.bias": (3,),
              "quant_conv.weight": (8, 8, 1, 1), "quant_conv.bias": (8,),
              "post_quant_conv.weight": (4, 4, 1, 1), "post_quant_conv.bias": (4,)})
    return {prefix + name: s for name, s in k.items()}


SCHEDULE_KEYS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2")


def sd15_key_table():
    """{key: shape} for the whole checkpoint, in the file's order of parts."""
    t = {}
    t.update(unet_keys())
    t.update(clip_l_keys())
    t.update(vae_keys())
    return t


# ---------------------------------------------------------------- tensors

def _schedule_tensors(torch):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    acp = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    pv = betas * (1 - acp) / (1 - ac)
    v = {"betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": acp,
         "sqrt_alphas_cumprod": ac.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(),
         "log_one_minus_alphas_cumprod": (1 - ac).log(), "sqrt_recip_alphas_cumprod": (1 / ac).sqrt(),
         "sqrt_recipm1_alphas_cumprod": (1 / ac - 1).sqrt(), "posterior_variance": pv,
         "posterior_log_variance_clipped": pv.clamp(min=1e-20).log(),
         "posterior_mean_coef1": betas * acp.sqrt() / (1 - ac),
         "posterior_mean_coef2": (1 - acp) * (1 - betas).sqrt() / (1 - ac)}
    return {k: v[k].to(torch.float32) for k in SCHEDULE_KEYS}


def random_tensor(torch, key, shape, seed, dtype):
    """One deterministic tensor: norms 1/0, biases 0, embeddings N(0, 0.02), weights N(0, 1/fan_in)."""
    last = key.rsplit(".", 1)[-1]
    is_norm = any(n in key for n in (".norm", "norm1.", "norm2.", "norm3.", "layer_norm", "norm_out",
                                     "in_layers.0.", "out_layers.0.", "out.0.", "final_layer_norm"))
    if last == "bias":
        return torch.zeros(shape, dtype=dtype)
    if is_norm and len(shape) == 1:
        return torch.ones(shape, dtype=dtype)
    return seeded_normal(torch, key, shape, seed, dtype)


def seeded_normal(torch, key, shape, seed, dtype, fan_in=None):
    """N(0, 0.02) for embeddings, else N(0, 1/fan_in) (fan_in: the product of shape[1:] unless given), from a
    generator seeded by (seed, crc32(key)), so every tensor is the same on every run whatever else is made."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) & 0x7FFFFFFFFFFFFFFF)
    if "embedding" in key:
        std = 0.02
    else:
        if fan_in is None:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
        std = fan_in ** -0.5
    return (torch.randn(shape, generator=g, dtype=torch.float32) * std).to(dtype)


def make_sd15_state_dict(seed=0, dtype=None, parts=("unet", "clip", "vae"), mult=MULT):
    import torch
    dtype = dtype or torch.float16
    table = {}
    if "unet" in parts:
        table.update(unet_keys(mult=mult))
    if "clip" in parts:
        table.update(clip_l_keys())
    if "vae" in parts:
        table.update(vae_keys())
    from . import made_in_order  # per-key seeds: the same tensors, made by two threads
    sd = dict(zip(table, made_in_order(lambda kv: random_tensor(torch, kv[0], kv[1], seed, dtype), table.items())))
    if "clip" in parts:
        sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    sd.update(_schedule_tensors(torch))
    return sd


def sd15_checkpoint(seed=0, cache=None, narrow=False):
    """Path of the cached fp16 SD1.5-layout checkpoint (~2.1 GB; narrow=True: the NARROW UNet, ~0.7 GB), generated
    on first use."""
    from . import cache_dir
    from safetensors.torch import save_file
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    kind = "sd15n" if narrow else "sd15"
    path = d / f"lean_{kind}_v{GENERATOR_VERSION}_seed{seed}.safetensors"
    if not path.exists():
        sd = make_sd15_state_dict(seed, mult=NARROW if narrow else MULT)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(sd, str(tmp), metadata={"format": "pt", "lean_fixture": f"{kind} v{GENERATOR_VERSION} seed {seed}"})
        os.replace(tmp, path)
    return path
