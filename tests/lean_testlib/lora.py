"""Kohya-format LoRA for the SD1.5 fixture: ``lora_unet_*`` (diffusers module names, as kohya's
sd-scripts writes them) and ``lora_te_*`` keys with ``lora_down``, ``lora_up`` and ``alpha``.

The module list is written from the SD1.5 architecture here, not taken from ComfyUI's key map,
so a tier-2 test can check that the host's own LoRA loader maps every key."""
import os
import zlib

GENERATOR_VERSION = 1

# LDM transformer location -> diffusers name, SD1.5
_UNET_ATTN = {}
for _i, (_ib, _n) in enumerate(zip((1, 2, 4, 5, 7, 8), (0, 1, 0, 1, 0, 1))):
    _UNET_ATTN[f"input_blocks.{_ib}.1"] = f"down_blocks_{_i // 2}_attentions_{_n}"
_UNET_ATTN["middle_block.1"] = "mid_block_attentions_0"
for _j, _ob in enumerate(range(3, 12)):
    _UNET_ATTN[f"output_blocks.{_ob}.1"] = f"up_blocks_{1 + _j // 3}_attentions_{_j % 3}"
_WIDTH = {"down_blocks_0": 320, "down_blocks_1": 640, "down_blocks_2": 1280, "mid_block": 1280,
          "up_blocks_1": 1280, "up_blocks_2": 640, "up_blocks_3": 320}


def unet_modules(narrow=False):
    """{kohya module name: (out_features, in_features, is_conv1x1)} for every SD1.5 transformer (narrow: of the
    SD1.5 fixture's narrow variant, lean_testlib.sd15.NARROW: 320 channels everywhere)."""
    mods = {}
    for ldm, diff in _UNET_ATTN.items():
        c = 320 if narrow else next(w for pfx, w in _WIDTH.items() if diff.startswith(pfx))
        b = f"lora_unet_{diff}"
        mods[f"{b}_proj_in"] = (c, c, True)
        mods[f"{b}_proj_out"] = (c, c, True)
        t = f"{b}_transformer_blocks_0"
        for a in ("attn1", "attn2"):
            ctx = c if a == "attn1" else 768
            mods[f"{t}_{a}_to_q"] = (c, c, False)
            mods[f"{t}_{a}_to_k"] = (c, ctx, False)
            mods[f"{t}_{a}_to_v"] = (c, ctx, False)
            mods[f"{t}_{a}_to_out_0"] = (c, c, False)
        mods[f"{t}_ff_net_0_proj"] = (c * 8, c, False)
        mods[f"{t}_ff_net_2"] = (c, c * 4, False)
    return mods


def te_modules():
    mods = {}
    for i in range(12):
        p = f"lora_te_text_model_encoder_layers_{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            mods[f"{p}_self_attn_{proj}"] = (768, 768, False)
        mods[f"{p}_mlp_fc1"] = (3072, 768, False)
        mods[f"{p}_mlp_fc2"] = (768, 3072, False)
    return mods


def make_lora_state_dict(seed=0, rank=32, alpha=16.0, unet=True, te=True, up_std=0.02, dtype=None, narrow=False):
    import torch
    dtype = dtype or torch.float16
    mods = {}
    if unet:
        mods.update(unet_modules(narrow))
    if te:
        mods.update(te_modules())
    sd = {}
    for name, (out_f, in_f, conv) in mods.items():
        g = torch.Generator().manual_seed((seed * 7919 + zlib.crc32(name.encode())) & 0x7FFFFFFF)
        down = torch.randn(rank, in_f, generator=g) * in_f ** -0.5
        up = torch.randn(out_f, rank, generator=g) * up_std
        if conv:
            down, up = down[..., None, None], up[..., None, None]
        sd[f"{name}.lora_down.weight"] = down.to(dtype)
        sd[f"{name}.lora_up.weight"] = up.to(dtype)
        sd[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return sd


def sd15_lora(seed=0, rank=32, alpha=16.0, unet=True, te=True, cache=None, narrow=False):
    """Path of a cached kohya LoRA for the SD1.5 fixture (narrow: for its narrow variant)."""
    from safetensors.torch import save_file
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    tag = ("u" if unet else "") + ("t" if te else "") + ("_n" if narrow else "")
    path = d / f"lean_lora_v{GENERATOR_VERSION}_seed{seed}_r{rank}_a{alpha:g}_{tag}.safetensors"
    if not path.exists():
        sd = make_lora_state_dict(seed, rank, alpha, unet, te, narrow=narrow)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file(sd, str(tmp), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                                          "ss_network_alpha": str(alpha),
                                          "ss_tag_frequency": '{"lean": {"leanstyle": 3}}'})
        os.replace(tmp, path)
    return path
