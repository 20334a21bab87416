"""Tier 1: LoRA tag parsing, schedules, block weights, name matching (core/lora_tags.py, lora_schedule.py, lora_blocks.py)."""
import math

import pytest

from lean_nodes.core import lora_blocks as lb
from lean_nodes.core import lora_schedule as ls
from lean_nodes.core import lora_tags as lt


# ------------------------------------------------------------------ tags

def test_plain_tags_and_text_cleanup():
    text, tags = lt.parse_tags("a photo of <lora:style_a:0.8> a cat, <lora:char:0.5:0.25>, sunny")
    assert text == "a photo of a cat, sunny"
    assert [(t.name, t.unet, t.te) for t in tags] == [("style_a", 0.8, 0.8), ("char", 0.5, 0.25)]


def test_no_tags_returns_text_unchanged():
    assert lt.parse_tags("a  cat, <b>") == ("a  cat, <b>", [])


def test_default_strength_and_lyco():
    _, (t1, t2) = lt.parse_tags("<lora:x> <LyCo:y:-1.5>")
    assert (t1.name, t1.unet, t1.te) == ("x", 1.0, 1.0)
    assert (t2.name, t2.unet, t2.te) == ("y", -1.5, -1.5)


def test_named_arguments():
    _, (t,) = lt.parse_tags("<lora:name:unet=0.8:te=0.5:start=0:end=0.6>")
    assert (t.unet, t.te, t.start, t.end) == (0.8, 0.5, 0.0, 0.6)
    _, (t,) = lt.parse_tags("<lora:name:0.7:te=0.1>")
    assert (t.unet, t.te) == (0.7, 0.1)


def test_sched_with_colons_and_following_args():
    _, (t,) = lt.parse_tags("<lora:n:1:sched=0:0.2,0.5:1,1:0.4:lbw=MIDD>")
    assert t.sched.keys == ((0.0, 0.2), (0.5, 1.0), (1.0, 0.4))
    assert t.lbw == "MIDD"


def test_lbw_list_in_tag():
    _, (t,) = lt.parse_tags("<lora:n:lbw=1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1>")
    bw = lb.parse_block_weights(t.lbw, "sd15")
    assert bw.weight("OUT11") == 1.0 and bw.weight("IN01") == 0.0


@pytest.mark.parametrize("prompt,needle,at", [
    ("a <lora:x:abc> b", "'abc' is not a number", "abc"),
    ("a <lora:x:1", "not closed", "<lora"),
    ("<lora::1>", "name is empty", ":1>"),
    ("<lora:x:1:foo=2>", "unknown argument 'foo'", "foo"),
    ("<lora:x:unet=1:unet=2>", "given twice", "unet=2"),
    ("<lora:x:1:2:3>", "at most two", "3>"),
    ("<lora:x:start=1.5>", "between 0 and 1", "1.5"),
    ("<lora:x:start=0.8:end=0.2>", "is after end", "<lora"),
    ("<lora:x:sched=0:1,0.5>", "fraction:strength", "0.5>"),
    ("<lora:x:sched=0.5:1,0.2:0>", "must be in order", "0.2:0"),
    ("<lora:x:sched=0:1,,1:0>", "empty keyframe", ",1:0"),
    ("<lora:x:nan>", "not a finite number", "nan"),
    ("<lora:x:1e9>", "out of range", "1e9"),
    ("a, <lora:x:1:lbw=MIDD:te=abc>", "not a number", "abc"),
])
def test_malformed_tags_point_at_character(prompt, needle, at):
    """The error names the character (1-based) where the problem starts and draws a caret under it."""
    col = prompt.index(at) + 1
    with pytest.raises(lt.LoraSyntaxError) as e:
        lt.parse_tags(prompt)
    msg = str(e.value)
    assert needle in msg, msg
    assert f"at character {col}:" in msg, (msg, col)
    assert "^" in msg


def test_positional_after_named_is_an_error():
    with pytest.raises(lt.LoraSyntaxError, match="named argument"):
        lt.parse_tags("<lora:x:te=1:0.5>")


def test_negative_and_large_strengths_allowed():
    _, (t,) = lt.parse_tags("<lora:x:-3:250>")
    assert (t.unet, t.te) == (-3.0, 250.0)
    assert ls.check_strength(-999, "s") == -999
    with pytest.raises(ValueError, match="finite"):
        ls.check_strength(float("inf"), "strength_model")


# ------------------------------------------------------------------ schedules

def test_schedule_linear_and_flat_ends():
    s = ls.parse_schedule("0.2:0.2, 0.5:1, 1:0.4")
    assert s(0.0) == 0.2 and s(0.2) == 0.2
    assert math.isclose(s(0.35), 0.6)
    assert s(0.5) == 1.0
    assert math.isclose(s(0.75), 0.7)
    assert s(1.0) == 0.4


def test_schedule_jump():
    s = ls.parse_schedule("0:1,0.5:1,0.5:0,1:0")
    assert s(0.49) == 1.0 and s(0.5) == 0.0 and s(0.9) == 0.0


def test_schedule_empty_is_none_and_constant_check():
    assert ls.parse_schedule("") is None and ls.parse_schedule("  ") is None
    assert ls.parse_schedule("0:1,1:1").is_constant()


@pytest.mark.parametrize("text,needle", [("0:1,2:0", "between 0 and 1"), ("x:1", "not a number"),
                                         ("0.5", "fraction:strength"), ("0:1,", "empty keyframe"),
                                         ("0:inf", "finite")])
def test_schedule_errors(text, needle):
    with pytest.raises(ValueError, match=needle):
        ls.parse_schedule(text)


# ------------------------------------------------------------------ block weights

def test_presets_sd15_match_lbw_convention():
    bw = lb.parse_block_weights("MIDD", "sd15")
    on = [b for b in lb.SD15_17 if bw.weight(b) == 1.0]
    assert on == ["BASE", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05", "OUT06"]
    assert lb.parse_block_weights("none", "sd15").is_all(0.0)
    assert lb.parse_block_weights("ALL0.5", "sd15").is_all(0.5)
    assert [b for b in lb.SD15_17 if lb.parse_block_weights("OUTS", "sd15").weight(b)] == \
        ["BASE", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"]


def test_presets_sdxl():
    bw = lb.parse_block_weights("INALL", "sdxl")
    assert [b for b in lb.SDXL_12 if bw.weight(b)] == ["BASE", "IN04", "IN05", "IN07", "IN08"]


def test_short_format_fallback_blocks():
    bw = lb.parse_block_weights("1,0.1,0.2,0.4,0.5,0.7,0.8,0.9,3,4,5,6,7,8,9,10,11", "sd15")
    assert bw.weight("IN00") == 0.1 and bw.weight("IN03") == 0.2 and bw.weight("IN11") == 0.8
    assert bw.weight("OUT00") == 3 and bw.weight("M00") == 0.9 and bw.base == 1


def test_long_format():
    vals = ",".join(str(i) for i in range(26))
    bw = lb.parse_block_weights(vals, "sd15")
    assert bw.weight("BASE") == 0 and bw.weight("IN00") == 1 and bw.weight("M00") == 13 and bw.weight("OUT11") == 25


@pytest.mark.parametrize("text,layout,needle", [
    ("1,1,1", "sd15", "3 values given; SD1.5 takes 17"),
    ("1,1,1", "sdxl", "SDXL takes 12"),
    ("MIDDD", "sd15", "did you mean MIDD"),
    ("1,,1", "sd15", "empty value"),
    ("MIDD", None, "needs an SD1.5 or SDXL"),
    ("1,0", None, "needs an SD1.5 or SDXL"),
])
def test_block_weight_errors(text, layout, needle):
    with pytest.raises(ValueError, match=needle):
        lb.parse_block_weights(text, layout)


def test_flat_presets_without_layout():
    assert lb.parse_block_weights("NONE", None).weight("IN04") == 0.0
    assert lb.parse_block_weights("", "sd15") is None


def test_block_of_key_and_layout():
    assert lb.block_of_key("diffusion_model.input_blocks.4.1.proj_in.weight") == "IN04"
    assert lb.block_of_key("diffusion_model.middle_block.1.proj_in.weight") == "M00"
    assert lb.block_of_key("diffusion_model.output_blocks.11.1.proj_out.weight") == "OUT11"
    assert lb.block_of_key("diffusion_model.time_embed.0.weight") == "BASE"
    sd15 = [f"input_blocks.{i}.0.x" for i in range(12)] + [f"output_blocks.{i}.0.x" for i in range(12)]
    sdxl = [f"input_blocks.{i}.0.x" for i in range(9)] + [f"output_blocks.{i}.0.x" for i in range(9)]
    assert lb.unet_layout(sd15) == "sd15" and lb.unet_layout(sdxl) == "sdxl" and lb.unet_layout(["a.b"]) is None


# ------------------------------------------------------------------ names

FILES = ["style_a.safetensors", "Char/Hero.safetensors", "detail.pt", "style_b.safetensors"]


@pytest.mark.parametrize("name,want", [
    ("style_a.safetensors", "style_a.safetensors"),
    ("style_a", "style_a.safetensors"),
    ("STYLE_A", "style_a.safetensors"),
    ("char/hero", "Char/Hero.safetensors"),
    ("Char\\Hero.safetensors", "Char/Hero.safetensors"),
    ("hero", "Char/Hero.safetensors"),
    ("detail", "detail.pt"),
])
def test_resolve_name(name, want):
    assert lt.resolve_name(name, FILES) == want


def test_unknown_name_lists_closest():
    with pytest.raises(FileNotFoundError) as e:
        lt.resolve_name("styl_a", FILES)
    assert "style_a" in str(e.value) and "styl_a" in str(e.value)
    with pytest.raises(FileNotFoundError, match="empty"):
        lt.resolve_name("x", [])


# ------------------------------------------------------------------ Flux block weights

def test_flux_layout_and_block_of_key():
    keys = ["img_in.weight", "double_blocks.0.img_attn.qkv.weight", "single_blocks.37.linear1.weight"]
    assert lb.unet_layout(keys) == "flux"
    assert lb.block_of_key("diffusion_model.double_blocks.18.txt_mlp.0.weight") == "D18"
    assert lb.block_of_key("diffusion_model.single_blocks.3.linear2.weight") == "S3"
    assert lb.block_of_key("diffusion_model.final_layer.linear.weight") == "BASE"
    assert lb.block_of_key("diffusion_model.input_blocks.4.1.proj_in.weight") == "IN04"  # SD unchanged


def test_flux_named_ranges_presets_and_list():
    bw = lb.parse_block_weights("D0-D18:1,S0-S37:0", "flux")
    assert [bw.weight(f"D{i}") for i in range(19)] == [1.0] * 19
    assert [bw.weight(f"S{i}") for i in range(38)] == [0.0] * 38 and bw.base == 1.0
    bw = lb.parse_block_weights(" d2-d4 = 0.5, S7:-1 ,base:0", "flux")  # '=' or ':', any case
    assert (bw.weight("D1"), bw.weight("D2"), bw.weight("D4"), bw.weight("D5")) == (1.0, 0.5, 0.5, 1.0)
    assert (bw.weight("S7"), bw.weight("S8"), bw.base) == (-1.0, 1.0, 0.0)
    single = lb.parse_block_weights("SINGLE", "flux")
    assert (single.weight("D0"), single.weight("S37"), single.base) == (0.0, 1.0, 1.0)
    assert lb.parse_block_weights("double", "flux").weight("S0") == 0.0
    assert lb.parse_block_weights("NONE", "flux").is_all(0.0)
    vals = ["1"] + ["0.5"] * 19 + ["0"] * 38
    bw = lb.parse_block_weights(",".join(vals), "flux")
    assert (bw.base, bw.weight("D18"), bw.weight("S0")) == (1.0, 0.5, 0.0)
    # the SD1.5/SDXL syntax is unchanged
    assert lb.parse_block_weights("MIDD", "sd15").weight("IN05") == 1.0


@pytest.mark.parametrize("text,needle,at", [
    ("MIDD", "unknown Flux preset 'MIDD'", "MIDD"),
    ("D0-D19:1", "block D19 does not exist", "D0"),
    ("S0-S38:0", "block S38 does not exist", "S0"),
    ("S5-S2:0", "must go upwards", "S5"),
    ("D0-S3:1", "must go upwards", "D0"),
    ("D0:1,X3:1", "'X3' is not a Flux block", "X3"),
    ("D0:1,S1:abc", "'abc' is not a number", "abc"),
    ("D0:1,,S1:0", "empty entry", ",S1"),
    ("1,0,1", "3 values given; Flux takes 58", "1,0"),
    ("D3", "needs a weight", "D3"),
])
def test_flux_block_weight_errors_point_at_character(text, needle, at):
    with pytest.raises(lt.LoraSyntaxError) as e:
        lb.parse_block_weights(text, "flux")
    msg = str(e.value)
    assert needle in msg, msg
    assert f"at character {text.index(at) + 1}:" in msg, msg


def test_flux_lbw_in_a_tag_with_colons():
    _, (t,) = lt.parse_tags("a <lora:f:0.8:lbw=D0-D18:1,S0-S37:0:te=0.5> b")
    assert (t.lbw, t.te, t.unet) == ("D0-D18:1,S0-S37:0", 0.5, 0.8)
    bw = lb.parse_block_weights(t.lbw, "flux")
    assert bw.weight("S3") == 0.0
    _, (t,) = lt.parse_tags("<lora:f:lbw=S0-S37=0>")
    assert lb.parse_block_weights(t.lbw, "flux").weight("S0") == 0.0
    # an error inside the tag's lbw points into the prompt
    prompt = "x <lora:f:1:lbw=D0:1,D40:0>"
    _, (t,) = lt.parse_tags(prompt)
    with pytest.raises(lt.LoraSyntaxError) as e:
        lb.parse_block_weights(t.lbw, "flux", "LoRA tag", prompt, t.lbw_pos)
    assert f"at character {prompt.index('D40') + 1}:" in str(e.value)


# ------------------------------------------------------------------ the 2026 DiT layouts (Z-Image, Qwen-Image)
ZIMAGE_KEYS = ["x_embedder.weight", "noise_refiner.0.attention.qkv.weight", "context_refiner.1.feed_forward.w1.weight",
               "layers.0.attention.qkv.weight", "layers.29.feed_forward.w2.weight", "cap_embedder.1.weight"]
QWEN_KEYS = ["img_in.weight", "transformer_blocks.0.img_mod.1.weight", "transformer_blocks.59.attn.to_q.weight",
             "txt_in.weight"]


def test_dit_layouts_detected_and_keys_mapped():
    assert lb.unet_layout(ZIMAGE_KEYS) == "zimage"
    assert lb.unet_layout(QWEN_KEYS) == "qwen_image"
    # SD's transformer_blocks sit inside input_blocks: still SD, and never a Qwen-Image block
    sd = [f"input_blocks.{i}.1.transformer_blocks.0.attn1.to_q.weight" for i in range(12)] + \
         [f"output_blocks.{i}.0.in_layers.0.weight" for i in range(12)]
    assert lb.unet_layout(sd) == "sd15"
    assert lb.block_of_key("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", "qwen_image") == "BASE"
    assert lb.block_of_key("diffusion_model.layers.12.attention.qkv.weight", "zimage") == "L12"
    assert lb.block_of_key("diffusion_model.noise_refiner.1.attention.out.weight", "zimage") == "NR1"
    assert lb.block_of_key("diffusion_model.context_refiner.0.feed_forward.w3.weight", "zimage") == "CR0"
    assert lb.block_of_key("diffusion_model.cap_embedder.1.weight", "zimage") == "BASE"
    assert lb.block_of_key("diffusion_model.transformer_blocks.59.attn.to_q.weight", "qwen_image") == "B59"
    assert lb.block_of_key("diffusion_model.txt_in.weight", "qwen_image") == "BASE"
    # without a layout the Flux/SD mapping is unchanged
    assert lb.block_of_key("diffusion_model.layers.3.attention.qkv.weight") == "BASE"


def test_dit_named_block_weights_and_presets():
    bw = lb.parse_block_weights("L0-L29:0.5,NR0-NR1:0,cr1:2", "zimage")
    assert bw.weight("L7") == 0.5 and bw.weight("NR1") == 0.0 and bw.weight("CR1") == 2.0 and bw.weight("CR0") == 1.0
    assert bw.base == 1.0
    p = lb.parse_block_weights("layers", "zimage")
    assert p.weight("L0") == 1.0 and p.weight("NR0") == 0.0 and p.weight("CR1") == 0.0
    q = lb.parse_block_weights("SECOND_HALF", "qwen_image")
    assert q.weight("B29") == 0.0 and q.weight("B30") == 1.0 and q.base == 1.0
    assert lb.parse_block_weights("NONE", "qwen_image").is_all(0.0)
    for bad, words in (("L30:1", "does not exist"), ("B0-B60:1", "does not exist"), ("L3-L1:1", "upwards"),
                       ("L0-NR1:1", "upwards"), ("D0:1", "is not a Z-Image block"), ("MIDD", "no Z-Image preset"),
                       ("L0:1,,L1:1", "empty entry"), ("L0:x", "")):
        with pytest.raises(ls.LoraSyntaxError) as e:
            lb.parse_block_weights(bad, "zimage" if not bad.startswith("B") else "qwen_image")
        assert words in str(e.value), (bad, str(e.value))
