"""Extra LoRA fixtures for the LoRA tests: a block-filtered copy of the kohya fixture, an SDXL-style
(wrong architecture) LoRA and a small LoHa.  Written from the SD1.5/SDXL architecture here, not from
ComfyUI's key map, so they are an independent reference."""
import os
import zlib

from . import cache_dir
from . import lora as kohya

GENERATOR_VERSION = 2

# kohya module prefix -> A1111 block id (SD1.5), from the LDM layout in lean_testlib.lora
_BLOCK = {}
for _ldm, _diff in kohya._UNET_ATTN.items():
    kind, idx = _ldm.split(".")[0], _ldm.split(".")[1] if "." in _ldm else "0"
    if kind == "input_blocks":
        blk = f"IN{int(idx):02d}"
    elif kind == "output_blocks":
        blk = f"OUT{int(idx):02d}"
    else:
        blk = "M00"
    _BLOCK[f"lora_unet_{_diff}_"] = blk


def block_of_kohya(module):
    """'lora_unet_down_blocks_1_attentions_0_proj_in' -> 'IN04'; text encoder -> 'BASE'."""
    for prefix, blk in _BLOCK.items():
        if module.startswith(prefix):
            return blk
    return "BASE"


def _save(path, sd, meta=None):
    from safetensors.torch import save_file
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata=meta or {"format": "pt"})
    os.replace(tmp, path)
    return path


def _dir():
    d = cache_dir() / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def filtered_lora(blocks, seed=0, rank=32, alpha=16.0, narrow=False):
    """The kohya fixture keeping only modules of `blocks` (A1111 ids; 'BASE' keeps the text encoder); narrow: of the
    LoRA for the SD1.5 fixture's narrow variant."""
    from safetensors.torch import load_file
    src = kohya.sd15_lora(seed=seed, rank=rank, alpha=alpha, narrow=narrow)
    tag = "-".join(sorted(blocks))
    path = _dir() / f"lean_lora_filtered_v{GENERATOR_VERSION}_{zlib.crc32(tag.encode()):08x}_{src.stem}.safetensors"
    if not path.exists():
        sd = load_file(str(src))
        keep = {k: v for k, v in sd.items() if block_of_kohya(k.split(".")[0]) in blocks}
        _save(path, keep)
    return path


def sdxl_style_lora(rank=4):
    """Keys that exist only in SDXL (deep transformer blocks, second text encoder): no SD1.5 match."""
    import torch
    path = _dir() / f"lean_lora_sdxl_style_v{GENERATOR_VERSION}_r{rank}.safetensors"
    if not path.exists():
        g = torch.Generator().manual_seed(3)
        sd = {}
        names = [f"lora_unet_input_blocks_7_1_transformer_blocks_{i}_attn1_to_q" for i in range(2, 6)]
        names += [f"lora_te2_text_model_encoder_layers_{i}_self_attn_q_proj" for i in range(20, 24)]
        for n in names:
            sd[f"{n}.lora_down.weight"] = torch.randn(rank, 1280, generator=g).half()
            sd[f"{n}.lora_up.weight"] = torch.randn(1280, rank, generator=g).half() * 0.01
            sd[f"{n}.alpha"] = torch.tensor(float(rank)).half()
        _save(path, sd)
    return path


def loha_lora(rank=4, narrow=False):
    """A LoHa (LyCORIS hada_*) on a few SD1.5 attention projections: no cheap branch exists (narrow: for the SD1.5
    fixture's narrow variant)."""
    import torch
    path = _dir() / f"lean_loha_v{GENERATOR_VERSION}_r{rank}{'_n' if narrow else ''}.safetensors"
    if not path.exists():
        g = torch.Generator().manual_seed(5)
        sd = {}
        mods = kohya.unet_modules(narrow)
        for n in [m for m in mods if m.endswith("attn1_to_q")][:6]:
            out_f, in_f, _ = mods[n]
            sd[f"{n}.hada_w1_a"] = (torch.randn(out_f, rank, generator=g) * 0.3).half()
            sd[f"{n}.hada_w1_b"] = (torch.randn(rank, in_f, generator=g) * 0.3).half()
            sd[f"{n}.hada_w2_a"] = (torch.randn(out_f, rank, generator=g) * 0.3).half()
            sd[f"{n}.hada_w2_b"] = (torch.randn(rank, in_f, generator=g) * 0.3).half()
            sd[f"{n}.alpha"] = torch.tensor(float(rank)).half()
        _save(path, sd)
    return path
