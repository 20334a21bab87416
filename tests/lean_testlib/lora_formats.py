"""Flux LoRA fixtures in the formats people download (random weights, cached), written from the published
layouts, not from ComfyUI's key map:

* ``flux_diffusers_lora()``: diffusers / PEFT, as diffusers' ``save_lora_weights`` and ai-toolkit write it:
  ``transformer.transformer_blocks.N.attn.to_q.lora_A.weight`` / ``.lora_B.weight`` for the modules of
  diffusers' FluxTransformer2DModel (double blocks: attn.to_q/to_k/to_v/to_out.0, attn.add_q_proj/add_k_proj/
  add_v_proj/to_add_out, ff.net.0.proj, ff.net.2, ff_context.net.0.proj, ff_context.net.2, norm1.linear,
  norm1_context.linear; single blocks: attn.to_q/to_k/to_v, proj_mlp, proj_out, norm.linear), no alpha
  (PEFT's scale is alpha/rank = 1 for ai-toolkit's alpha = rank).
* ``flux_lokr()``: a LyCORIS LoKr as LyCORIS names modules of the diffusers transformer (SimpleTuner):
  ``lycoris_transformer_blocks_0_attn_to_q.lokr_w1`` + ``lokr_w2`` (full) or ``lokr_w2_a``/``lokr_w2_b``, alpha.
* ``flux_kohya_tagged()``: the kohya / BFL naming (``lora_unet_double_blocks_0_img_attn_qkv``, as
  flux_tiny.flux_kohya_lora) with kohya's metadata (``ss_tag_frequency``: trigger words ``TRIGGERS``) and
  ``UNMATCHED`` modules for blocks the tiny model does not have (deliberately: "not loaded" tests).
* ``filtered(path, keep)``: a copy of a LoRA file keeping the modules for which ``keep(module name)`` is true.

The shapes follow lean_testlib.flux_tiny.flux_keys (hidden size h, MLP width 4h, fused qkv 3h, single-block
linear1 3h + 4h, linear2 h + 4h).
"""
import json
import os
import zlib

GENERATOR_VERSION = 1
TRIGGERS = ["leanflux", "a castle", "golden hour"]  # most frequent first (the counts below)
_TAG_FREQ = {"10_leanflux": {"leanflux": 40, "a castle": 12, "golden hour": 5}}
UNMATCHED = ["lora_unet_double_blocks_7_img_attn_qkv", "lora_unet_double_blocks_7_txt_attn_proj",
             "lora_unet_single_blocks_9_linear1", "lora_unet_single_blocks_9_linear2",
             "lora_unet_single_blocks_11_modulation_lin", "lora_unet_single_blocks_12_linear1",
             "lora_unet_single_blocks_13_linear1"]


def _dir(cache=None):
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _save(path, sd, meta):
    from safetensors.torch import save_file
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def diffusers_modules(hidden_size=3072, depth=1, depth_single=1, mlp_ratio=4):
    """{diffusers module name (with 'transformer.'): (out_features, in_features)} of FluxTransformer2DModel's
    blocks."""
    h, m = hidden_size, hidden_size * mlp_ratio
    mods = {}
    for i in range(depth):
        p = f"transformer.transformer_blocks.{i}."
        for n in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                  "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"):
            mods[p + n] = (h, h)
        mods[p + "ff.net.0.proj"] = (m, h)
        mods[p + "ff.net.2"] = (h, m)
        mods[p + "ff_context.net.0.proj"] = (m, h)
        mods[p + "ff_context.net.2"] = (h, m)
        mods[p + "norm1.linear"] = (6 * h, h)
        mods[p + "norm1_context.linear"] = (6 * h, h)
    for i in range(depth_single):
        p = f"transformer.single_transformer_blocks.{i}."
        for n in ("attn.to_q", "attn.to_k", "attn.to_v"):
            mods[p + n] = (h, h)
        mods[p + "proj_mlp"] = (m, h)
        mods[p + "proj_out"] = (h, h + m)
        mods[p + "norm.linear"] = (3 * h, h)
    return mods


def flux_diffusers_lora(seed=0, rank=4, cache=None, **layout):
    """diffusers/PEFT Flux LoRA (bf16 like ai-toolkit's output) on every block module of flux_tiny(**layout)."""
    import torch
    tag = "_".join(f"{k}{v}" for k, v in sorted(layout.items()))
    path = _dir(cache) / f"flux_tiny_lora_diffusers_v{GENERATOR_VERSION}_r{rank}_{tag}_seed{seed}.safetensors"
    if path.exists():
        return path
    g = torch.Generator().manual_seed(seed + 11)
    sd = {}
    for name, (out_f, in_f) in diffusers_modules(**layout).items():
        sd[f"{name}.lora_A.weight"] = (torch.randn((rank, in_f), generator=g) / in_f ** 0.5).to(torch.bfloat16)
        sd[f"{name}.lora_B.weight"] = (torch.randn((out_f, rank), generator=g) * 0.02).to(torch.bfloat16)
    return _save(path, sd, {"format": "pt", "lean_fixture": f"flux diffusers lora v{GENERATOR_VERSION}"})


def _factor(n, f=16):
    """LyCORIS' factorization(n, factor): (a, b) with a * b = n, a the largest divisor <= f."""
    a = max(d for d in range(1, f + 1) if n % d == 0)
    return a, n // a


def flux_lokr(seed=0, rank=4, cache=None, **layout):
    """LyCORIS LoKr (fp16) on the attention projections of the double block(s) and the single blocks' q/k/v and
    proj_mlp, named as LyCORIS names the diffusers transformer's modules."""
    import torch
    tag = "_".join(f"{k}{v}" for k, v in sorted(layout.items()))
    path = _dir(cache) / f"flux_tiny_lokr_v{GENERATOR_VERSION}_r{rank}_{tag}_seed{seed}.safetensors"
    if path.exists():
        return path
    g = torch.Generator().manual_seed(seed + 23)
    sd = {}
    mods = diffusers_modules(**layout)
    pick = [n for n in mods if n.endswith(("attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj",
                                           "attn.to_out.0", "proj_mlp"))]
    for j, name in enumerate(pick):
        out_f, in_f = mods[name]
        lyc = "lycoris_" + name[len("transformer."):].replace(".", "_")
        (oa, ob), (ia, ib) = _factor(out_f), _factor(in_f)
        sd[f"{lyc}.lokr_w1"] = torch.randn((oa, ia), generator=g).to(torch.float16)
        scale = 0.1 / (ia * ib) ** 0.5
        if j % 2 == 0:  # full w2
            sd[f"{lyc}.lokr_w2"] = (torch.randn((ob, ib), generator=g) * scale).to(torch.float16)
        else:           # low-rank w2 = w2_a @ w2_b
            sd[f"{lyc}.lokr_w2_a"] = (torch.randn((ob, rank), generator=g) * scale).to(torch.float16)
            sd[f"{lyc}.lokr_w2_b"] = (torch.randn((rank, ib), generator=g) / rank ** 0.5).to(torch.float16)
            sd[f"{lyc}.alpha"] = torch.tensor(float(rank), dtype=torch.float16)
    return _save(path, sd, {"format": "pt", "lean_fixture": f"flux lokr v{GENERATOR_VERSION}"})


def flux_kohya_tagged(seed=0, rank=4, alpha=4.0, cache=None, **layout):
    """The kohya/BFL Flux LoRA of flux_tiny.flux_kohya_lora plus UNMATCHED modules (blocks the tiny model lacks)
    and kohya's training metadata (ss_tag_frequency -> TRIGGERS)."""
    import torch
    from safetensors.torch import load_file
    from . import flux_tiny
    tag = "_".join(f"{k}{v}" for k, v in sorted(layout.items()))
    path = _dir(cache) / f"flux_tiny_lora_kohya_tagged_v{GENERATOR_VERSION}_r{rank}_{tag}_seed{seed}.safetensors"
    if path.exists():
        return path
    sd = load_file(str(flux_tiny.flux_kohya_lora(seed=seed, rank=rank, alpha=alpha, cache=cache, **layout)))
    g = torch.Generator().manual_seed(seed + 31)
    for name in UNMATCHED:
        sd[f"{name}.lora_down.weight"] = torch.randn((rank, 64), generator=g).to(torch.float16)
        sd[f"{name}.lora_up.weight"] = torch.randn((64, rank), generator=g).to(torch.float16)
        sd[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    meta = {"ss_network_module": "networks.lora_flux", "ss_tag_frequency": json.dumps(_TAG_FREQ),
            "lean_fixture": f"flux kohya tagged lora v{GENERATOR_VERSION}"}
    return _save(path, sd, meta)


def module_of(key):
    """The module part of a LoRA key ('x.lora_down.weight' -> 'x', 'x.alpha' -> 'x', 'x.lokr_w1' -> 'x')."""
    for s in (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".alpha", ".lokr_"):
        if s in key:
            return key[:key.index(s)]
    return key.rsplit(".", 1)[0]


def filtered(src, keep, label):
    """A copy of the LoRA `src` with only the modules for which keep(module name) is true (metadata kept)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    src = str(src)
    path = _dir() / f"{os.path.basename(src)[:-len('.safetensors')]}_only_{label}_{zlib.crc32(label.encode()):08x}.safetensors"
    if path.exists() and path.stat().st_mtime >= os.stat(src).st_mtime:
        return path
    with safe_open(src, "pt") as f:
        meta = f.metadata() or {"format": "pt"}
    sd = {k: v for k, v in load_file(src).items() if keep(module_of(k))}
    return _save(path, sd, meta)
