"""SDXL LoRA fixtures for the SDXL checkpoint fixture (lean_testlib.sdxl_ckpt), in the layouts people download.
The module lists are written from the SDXL architecture and the trainers' published naming here, not from
ComfyUI's key map, so a tier-2 test can check that the host's own LoraLoader maps every key.

- kohya (sd-scripts ``networks/lora.py`` on SDXL): UNet modules named by the LDM path with "_" for "."
  (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``: every Linear of each Transformer2DModel:
  proj_in/proj_out, attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2), text encoders
  ``lora_te1_*`` (CLIP-L) and ``lora_te2_*`` (OpenCLIP-G in transformers naming), each with
  lora_down / lora_up / alpha; metadata ``ss_*`` incl. ``ss_tag_frequency``.
- diffusers (SDXL DreamBooth-LoRA of diffusers 0.19-0.20, attention processors): UNet
  ``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight`` (to_q/to_k/
  to_v/to_out), text encoders ``text_encoder.`` / ``text_encoder_2.text_model.encoder.layers.N.self_attn.
  q_proj.lora_linear_layer.down.weight``; no alpha (scale 1).
- PEFT (diffusers >= 0.21 with peft): ``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A
  .weight`` / ``lora_B``, text encoders ``text_encoder(_2).text_model.encoder.layers.N.self_attn.q_proj.lora_A
  .weight``.

``depth`` keeps only the first `depth` transformer blocks of each UNet attention layer (SDXL has 2 or 10):
the files the sampling tests use stay small enough that the stock loader's patched weight copies fit in RAM;
the layout is the same.  ``narrow`` gives the same modules at the widths of the narrow checkpoint
(``sdxl_ckpt.sdxl_checkpoint(narrow=True)``: every attention layer at 320 channels).
"""
import json
import os
import zlib

from . import cache_dir, sdxl_ckpt

GENERATOR_VERSION = 1

# LDM attention layer -> (diffusers name, width, transformer depth), SDXL base
ATTN = {"input_blocks.4.1": ("down_blocks.1.attentions.0", 640, 2),
        "input_blocks.5.1": ("down_blocks.1.attentions.1", 640, 2),
        "input_blocks.7.1": ("down_blocks.2.attentions.0", 1280, 10),
        "input_blocks.8.1": ("down_blocks.2.attentions.1", 1280, 10),
        "middle_block.1": ("mid_block.attentions.0", 1280, 10)}
for _j in range(6):
    ATTN[f"output_blocks.{_j}.1"] = (f"up_blocks.{_j // 3}.attentions.{_j % 3}", 1280 if _j < 3 else 640,
                                     10 if _j < 3 else 2)
CONTEXT = 2048
NARROW_WIDTH = sdxl_ckpt.MODEL_CHANNELS * max(sdxl_ckpt.NARROW)  # the narrow checkpoint: every level this wide
TE = {"te1": (12, 768), "te2": (32, 1280)}  # layers, width (mlp 4x)

# A1111 / Inspire LBW block id of each LDM attention layer
BLOCK = {ldm: ("M00" if ldm.startswith("middle") else
               ("IN" if ldm.startswith("input") else "OUT") + f"{int(ldm.split('.')[1]):02d}") for ldm in ATTN}


def _attn_linears(c, ctx=CONTEXT):
    """{module path inside a transformer block: (out, in)} for its attention and feed-forward Linears."""
    m = {}
    for a, kv in (("attn1", c), ("attn2", ctx)):
        m.update({f"{a}.to_q": (c, c), f"{a}.to_k": (c, kv), f"{a}.to_v": (c, kv), f"{a}.to_out.0": (c, c)})
    m.update({"ff.net.0.proj": (c * 8, c), "ff.net.2": (c, c * 4)})
    return m


def unet_modules(depth=None, narrow=False):
    """[(LDM module path, diffusers module path, (out, in))] for every Linear of every SDXL transformer."""
    mods = []
    for ldm, (diff, c, d) in ATTN.items():
        c = NARROW_WIDTH if narrow else c
        mods.append((f"{ldm}.proj_in", f"{diff}.proj_in", (c, c)))
        mods.append((f"{ldm}.proj_out", f"{diff}.proj_out", (c, c)))
        for b in range(min(d, depth or d)):
            for name, shape in _attn_linears(c).items():
                mods.append((f"{ldm}.transformer_blocks.{b}.{name}", f"{diff}.transformer_blocks.{b}.{name}", shape))
    return mods


def te_modules(which, attn_only=False):
    """[(transformers module path under text_model, (out, in))] of text encoder `which` ('te1' or 'te2')."""
    layers, w = TE[which]
    mods = []
    for i in range(layers):
        p = f"encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            mods.append((f"{p}.self_attn.{proj}", (w, w)))
        if not attn_only:
            mods.append((f"{p}.mlp.fc1", (4 * w, w)))
            mods.append((f"{p}.mlp.fc2", (w, 4 * w)))
    return mods


def block_of(ldm_path):
    """'input_blocks.4.1.transformer_blocks.0.attn1.to_q' -> 'IN04'; a text-encoder module -> 'BASE'."""
    for ldm, blk in BLOCK.items():
        if ldm_path.startswith(ldm + "."):
            return blk
    return "BASE"


def _pair(name, out_f, in_f, rank, seed, torch, up_std):
    g = torch.Generator().manual_seed((seed * 7919 + zlib.crc32(name.encode())) & 0x7FFFFFFF)
    down = torch.randn(rank, in_f, generator=g) * in_f ** -0.5
    up = torch.randn(out_f, rank, generator=g) * up_std
    return down.to(torch.float16), up.to(torch.float16)


def _path(stem):
    d = cache_dir() / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{stem}.safetensors"


def _save(path, sd, meta):
    from safetensors.torch import save_file
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def _tags(trigger):
    return json.dumps({f"10_{trigger}": {trigger: 12, "red cube": 5}, "5_style": {trigger: 4, "table": 3}})


def kohya_modules(depth=None, blocks=None, te_attn_only=False, narrow=False):
    """{kohya module name: (ldm path or None, (out, in))}; `blocks`: keep only these LBW block ids ('BASE' =
    the text encoders); te_attn_only: only the text encoders' self-attention projections."""
    out = {}
    for ldm, _, shape in unet_modules(depth, narrow):
        if blocks is None or block_of(ldm) in blocks:
            out["lora_unet_" + ldm.replace(".", "_")] = (ldm, shape)
    if blocks is None or "BASE" in blocks:
        for te in TE:
            for path, shape in te_modules(te, attn_only=te_attn_only):
                out[f"lora_{te}_text_model_" + path.replace(".", "_")] = (None, shape)
    return out


def sdxl_kohya_lora(seed=0, rank=8, alpha=4.0, depth=None, blocks=None, te_attn_only=False, up_std=0.02,
                    trigger="leanxl", narrow=False):
    """Path of a cached kohya SDXL LoRA (fp16); narrow: for the narrow checkpoint."""
    import torch
    btag = ("all" if blocks is None else "-".join(sorted(blocks))) + ("_teattn" if te_attn_only else "")
    kind = "sdxln" if narrow else "sdxl"
    path = _path(f"lean_{kind}_lora_kohya_v{GENERATOR_VERSION}_s{seed}_r{rank}_a{alpha:g}_d{depth or 'all'}_"
                 f"{zlib.crc32(btag.encode()):08x}_u{up_std:g}")
    if path.exists():
        return path
    sd = {}
    for name, (_, (out_f, in_f)) in kohya_modules(depth, blocks, te_attn_only, narrow).items():
        down, up = _pair(name, out_f, in_f, rank, seed, torch, up_std)
        sd[f"{name}.lora_down.weight"] = down
        sd[f"{name}.lora_up.weight"] = up
        sd[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float16)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
            "ss_base_model_version": "sdxl_base_v1-0", "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
            "ss_output_name": "lean_sdxl_kohya", "ss_tag_frequency": _tags(trigger)}
    return _save(path, sd, meta)


def diffusers_modules(depth=None, attn_only=True, narrow=False):
    """[(diffusers module path with its component prefix, (out, in))]: the UNet's attention projections
    (to_q/to_k/to_v/to_out.0) and the text encoders' self-attention projections (the modules diffusers' SDXL
    DreamBooth-LoRA script trains)."""
    mods = []
    for _, diff, shape in unet_modules(depth, narrow):
        if ".attn" in diff:
            mods.append(("unet." + diff, shape))
    for te, prefix in (("te1", "text_encoder."), ("te2", "text_encoder_2.")):
        for path, shape in te_modules(te, attn_only=attn_only):
            mods.append((prefix + "text_model." + path, shape))
    return mods


def sdxl_diffusers_lora(seed=0, rank=8, depth=None, form="peft", up_std=0.02, trigger="leanxl", narrow=False):
    """Path of a cached diffusers SDXL LoRA (fp16).  form: 'peft' (lora_A/lora_B) or 'attn_procs'
    (UNet ``...attn1.processor.to_q_lora.down.weight``, text encoders ``...q_proj.lora_linear_layer.down.weight``,
    diffusers 0.19-0.20).  Same random factors for the same module in both forms."""
    import torch
    if form not in ("peft", "attn_procs"):
        raise ValueError(form)
    kind = "sdxln" if narrow else "sdxl"
    path = _path(f"lean_{kind}_lora_diffusers_{form}_v{GENERATOR_VERSION}_s{seed}_r{rank}_d{depth or 'all'}"
                 f"_u{up_std:g}")
    if path.exists():
        return path
    sd = {}
    for mod, (out_f, in_f) in diffusers_modules(depth, narrow=narrow):
        down, up = _pair(mod, out_f, in_f, rank, seed, torch, up_std)
        if form == "peft":
            sd[f"{mod}.lora_A.weight"], sd[f"{mod}.lora_B.weight"] = down, up
        elif mod.startswith("unet."):
            head, proj = mod.rsplit(".attn", 1)[0], mod.rsplit(".attn", 1)[1]  # '1.to_q' / '2.to_out.0'
            n, proj = proj.split(".", 1)
            proj = proj.replace(".0", "")
            key = f"{head}.attn{n}.processor.{proj}_lora"
            sd[f"{key}.down.weight"], sd[f"{key}.up.weight"] = down, up
        else:
            sd[f"{mod}.lora_linear_layer.down.weight"], sd[f"{mod}.lora_linear_layer.up.weight"] = down, up
    meta = {"format": "pt", "ss_tag_frequency": _tags(trigger), "lean_fixture": f"sdxl diffusers {form}"}
    return _save(path, sd, meta)
