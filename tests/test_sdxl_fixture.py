"""Tier 1: the SDXL fixture's key table (lean_testlib.sdxl_ckpt) against published facts of sd_xl_base_1.0, and
its streamed safetensors writer against the safetensors library.  The host-side check (detected as SDXL, every
key placed) is tests/test_tier2_sdxl.py."""
import math

import torch
from safetensors.torch import load_file

from lean_testlib import sdxl_ckpt, sdxl_loras


def params(table, prefix):
    return sum(math.prod(s) for k, s in table.items() if k.startswith(prefix) and k != sdxl_ckpt.POSITION_IDS)


def test_key_table_matches_the_released_file():
    t = sdxl_ckpt.sdxl_key_table()
    assert len(t) == 2515  # tensors in sd_xl_base_1.0.safetensors
    assert params(t, sdxl_ckpt.UNET) == 2_567_463_684  # SDXL base UNet parameters
    assert params(t, sdxl_ckpt.CLIP_G) == 694_659_841  # OpenCLIP ViT-bigG/14 text tower (with logit_scale)
    assert params(t, sdxl_ckpt.CLIP_L) == 123_060_480  # CLIP ViT-L/14 text model
    assert params(t, sdxl_ckpt.VAE) == 83_653_863
    assert t["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert t["model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
    assert "model.diffusion_model.input_blocks.7.1.transformer_blocks.10.attn1.to_q.weight" not in t
    assert t["model.diffusion_model.output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    assert t[sdxl_ckpt.CLIP_G + "transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert t[sdxl_ckpt.CLIP_G + "text_projection"] == (1280, 1280)
    assert not any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in t)  # level 0 has no attention


def test_streamed_writer_round_trips(tmp_path):
    table = {"a": ((3, 4), "F16"), "b": ((2,), "BF16"), "c": ((1, 77), "I64"), "d": ((), "F32"), "e": ((5,), "F32")}
    vals = {"a": torch.randn(3, 4).half(), "b": torch.tensor([1.5, -2.0]).bfloat16(),
            "c": torch.arange(77)[None], "d": torch.tensor(4.6), "e": torch.randn(5)}
    path = sdxl_ckpt.write_streamed(tmp_path / "x.safetensors", table, lambda k, s: vals[k], {"k": "v"})
    back = load_file(str(path))
    assert set(back) == set(vals)
    for k, v in vals.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_random_tensors_are_deterministic_and_scaled():
    key = "model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight"
    a = sdxl_ckpt.random_tensor(torch, key, (10240, 1280), 0, torch.float16)
    b = sdxl_ckpt.random_tensor(torch, key, (10240, 1280), 0, torch.float16)
    assert torch.equal(a, b)
    assert abs(a.float().std().item() - 1280 ** -0.5) < 1e-3  # N(0, 1/fan_in)
    assert torch.equal(sdxl_ckpt.random_tensor(torch, sdxl_ckpt.CLIP_G + "ln_final.weight", (1280,), 0,
                                               torch.float16), torch.ones(1280, dtype=torch.float16))


def test_lora_module_lists():
    kohya = sdxl_loras.kohya_modules()
    assert len(kohya) == 722 + 12 * 6 + 32 * 6  # UNet transformer Linears, CLIP-L and OpenCLIP-G layers
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in kohya
    assert "lora_te2_text_model_encoder_layers_31_mlp_fc2" in kohya
    table = sdxl_ckpt.sdxl_key_table()
    for ldm, _, (out_f, in_f) in sdxl_loras.unet_modules():  # each LoRA module is a Linear of the checkpoint
        assert table["model.diffusion_model." + ldm + ".weight"] == (out_f, in_f), ldm
    assert sdxl_loras.block_of("output_blocks.5.1.proj_in") == "OUT05"


def test_narrow_variant_keeps_every_key_at_320_channels():
    """The narrow checkpoint (rows/prompts/per-layer tests) has the released file's keys but the two 1x1 skip
    convolutions a level change needs on the way down (no change of width there); its UNet is 320 wide on every
    level, the text encoders and VAE are unchanged, and the narrow LoRAs fit its Linears."""
    full, narrow = sdxl_ckpt.sdxl_key_table(), sdxl_ckpt.sdxl_key_table(narrow=True)
    gone = [k for k in full if k not in narrow]
    assert sorted(gone) == sorted(f"model.diffusion_model.input_blocks.{i}.0.skip_connection.{w}"
                                  for i in (4, 7) for w in ("weight", "bias"))
    assert [k for k in full if k in narrow] == list(narrow)
    assert params(narrow, sdxl_ckpt.UNET) < params(full, sdxl_ckpt.UNET) / 7
    for prefix in (sdxl_ckpt.CLIP_G, sdxl_ckpt.CLIP_L, sdxl_ckpt.VAE):
        assert params(narrow, prefix) == params(full, prefix), prefix
    assert narrow["model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"] == (320, 2048)
    assert narrow["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert narrow["model.diffusion_model.output_blocks.2.2.conv.weight"] == (320, 320, 3, 3)
    mods = sdxl_loras.unet_modules(narrow=True)
    assert [m[0] for m in mods] == [m[0] for m in sdxl_loras.unet_modules()]
    for ldm, _, (out_f, in_f) in mods:
        assert narrow["model.diffusion_model." + ldm + ".weight"] == (out_f, in_f), ldm
