"""Tier 2: SDXL LoRAs (lean_testlib.sdxl_loras: kohya, diffusers attention-processor and PEFT layouts) on the
narrow SDXL checkpoint fixture (every key of SDXL, its UNet at 320 channels on every level: the claims here are
per layer) in a real ComfyUI (fp32 on the CPU, --fp32-text-enc as tests/test_tier2_lora.py explains).

- The fixtures are right: the host's own LoraLoader maps every key of the kohya and diffusers files.
- LeanLoraLoader and LeanLoraTags equal stock LoraLoader within fp tolerance at constant strength.
- SDXL block-weight presets as published (Inspire Pack's SDXL-INALL / SDXL-OUTALL on A1111's 12-value layout BASE,
  IN04, IN05, IN07, IN08, M00, OUT00..OUT05; lean_testlib.lbw_presets) equal stock LoraLoader on a file with the
  other blocks' modules removed.
- PEFT (lora_A/lora_B under ``unet.``): the host maps only its text-encoder keys (both hosts); Lean maps the UNet
  keys too, and equals stock on the same factors in the attention-processor layout.

One SDXL model per host (the stock loader's, cached across prompts); the sampling files keep one transformer
block per attention layer, which keeps the stock loader's patched weight copies small."""
import re

import numpy as np
import pytest

from lean_testlib import lbw_presets, probe_node, sdxl_host, sdxl_loras

pytestmark = [pytest.mark.tier2, pytest.mark.sdxl_ckpt]  # CI runs SDXL checkpoints on ComfyUI 0.33.0 only

CKPT = sdxl_host.CKPT_NARROW
POS = "a red cube on a table"
TOL = 1e-3   # latents stay near 1 at cfg 1, denoise 0.2 (see tests/test_tier2_lora.py)
EFFECT = 10 * TOL
# the published SDXL presets (lean_testlib.lbw_presets: Inspire Pack's SDXL-INALL / SDXL-OUTALL on A1111's 12 blocks)
PUBLISHED = {p: lbw_presets.blocks_on("sdxl", p) for p in ("INALL", "OUTALL")}


def _files():
    small = dict(depth=1, narrow=True)
    return {
        "xl_kohya_full": sdxl_loras.sdxl_kohya_lora(narrow=True),
        "xl_attn_full": sdxl_loras.sdxl_diffusers_lora(form="attn_procs", narrow=True),
        "xl_peft_full": sdxl_loras.sdxl_diffusers_lora(form="peft", narrow=True),
        "xl_kohya": sdxl_loras.sdxl_kohya_lora(te_attn_only=True, **small),
        # block weights: larger factors, so that what a preset removes changes the latent well beyond TOL
        "xl_kohya_bw": sdxl_loras.sdxl_kohya_lora(te_attn_only=True, up_std=0.05, **small),
        **{f"xl_kohya_{p.lower()}": sdxl_loras.sdxl_kohya_lora(te_attn_only=True, blocks=b, up_std=0.05, **small)
           for p, b in PUBLISHED.items()},
        "xl_attn": sdxl_loras.sdxl_diffusers_lora(form="attn_procs", **small),
        "xl_peft": sdxl_loras.sdxl_diffusers_lora(form="peft", **small),
    }


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with sdxl_host.own(tmp_path_factory, "lora", loras=_files(), extra_args=["--fp32-text-enc"], narrow=True) as h:
        yield h


_n = [0]


def graph(lora=None, text=POS, encode_only=False):
    """ckpt -> (one LoRA node: (class_type, inputs without model/clip)) -> CLIPTextEncode -> KSampler (1 step of
    5, cfg 1, a 16x16 latent: 128x128, for time on the CPU) -> probe.  encode_only: the probe gets the positive
    conditioning, nothing samples."""
    _n[0] += 1
    name = f"xl{_n[0]}"
    g = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}
    model, clip = ["ckpt", 0], ["ckpt", 1]
    if lora:
        ct, inputs = lora
        g["l"] = {"class_type": ct, "inputs": dict(inputs, model=model, clip=clip)}
        model, clip = ["l", 0], ["l", 1]
        if ct == "LeanLoraTags":
            text = ["l", 2]
    g["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}}
    if encode_only:
        g["p"] = {"class_type": "TestProbe_lean", "inputs": {"name": name, "conditioning": ["pos", 0]}}
        return g, name
    g["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}}
    g["lat"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}}
    g["ks"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["lat", 0], "seed": 7,
        "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.2}}
    g["p"] = {"class_type": "TestProbe_lean", "inputs": {"name": name, "latent": ["ks", 0]}}
    return g, name


def run(host, lora=None, **kw):
    """(tensors the probe saved, log lines of this run, history entry)."""
    g, name = graph(lora, **kw)
    mark = len(host.log())
    entry = host.run(g, timeout=1200)
    return probe_node.read(host.base, name)[0], host.log()[mark:], entry


def latent(host, lora=None, **kw):
    t = run(host, lora, **kw)[0]["latent.0"].numpy()
    assert np.isfinite(t).all()
    return t


def stock(name, sm=0.8, sc=0.6):
    return ("LoraLoader", {"lora_name": name + ".safetensors", "strength_model": sm, "strength_clip": sc})


def lean(name, sm=0.8, sc=0.6, bw=""):
    return ("LeanLoraLoader", {"lora_name": name + ".safetensors", "strength_model": sm, "strength_clip": sc,
                               "schedule": "", "block_weights": bw})


def tags(tag):
    return ("LeanLoraTags", {"text": f"{POS} {tag}"})


def not_loaded(log):
    return [line.split("lora key not loaded:", 1)[1].strip() for line in log.splitlines()
            if "lora key not loaded:" in line]


def maxdiff(a, b):
    return float(np.abs(a - b).max())


@pytest.fixture(scope="module")
def base_latent(host):
    return latent(host)


# ------------------------------------------------------------------ the fixtures are right

@pytest.mark.parametrize("name", ["xl_kohya_full", "xl_attn_full", "xl_kohya", "xl_attn"])
def test_stock_lora_loader_maps_every_key(host, name):
    """LoraLoader maps keys for UNet and text encoders when it runs (before any sampling), logging each key it
    has no place for; the encode makes it run and patches the text encoders only."""
    _, log, _ = run(host, stock(name, 1.0, 1.0), encode_only=True)
    assert not not_loaded(log), not_loaded(log)[:5]


def test_peft_unet_keys_are_not_mapped_by_the_host(host):
    """What the host does with the PEFT layout (both hosts, comfy/lora.py model_lora_keys_unet maps diffusers
    UNet attention keys only with ``.processor.``): every UNet key is "not loaded", every text-encoder key is."""
    _, log, _ = run(host, stock("xl_peft_full", 1.0, 1.0), encode_only=True)
    missing = not_loaded(log)
    n_unet = sum(1 for m in sdxl_loras.diffusers_modules() if m[0].startswith("unet."))
    assert missing and all(m.startswith("unet.") for m in missing), missing[:5]
    assert len({m.rsplit(".lora_", 1)[0] for m in missing}) == n_unet, len(missing)


# ------------------------------------------------------------------ Lean equals stock

@pytest.mark.parametrize("name", ["xl_kohya", "xl_attn"])
def test_lean_lora_loader_and_tags_equal_stock(host, base_latent, name):
    ref = latent(host, stock(name))
    assert maxdiff(ref, base_latent) > EFFECT, "the LoRA has no visible effect: the comparison would be empty"
    got = latent(host, lean(name))
    assert maxdiff(got, ref) <= TOL, maxdiff(got, ref)
    got_tags = latent(host, tags(f"<lora:{name}:0.8:0.6>"))
    assert maxdiff(got_tags, ref) <= TOL, maxdiff(got_tags, ref)


def test_lean_maps_peft_unet_keys_and_equals_stock_on_the_same_factors(host, base_latent):
    """The PEFT file holds the same factors as the attention-processor one (sdxl_loras: seeded per module);
    stock maps the latter completely, so it is the reference for Lean on the PEFT file."""
    ref = latent(host, stock("xl_attn"))
    got = latent(host, lean("xl_peft"))
    assert maxdiff(ref, base_latent) > EFFECT
    assert maxdiff(got, ref) <= TOL, maxdiff(got, ref)
    got_tags = latent(host, tags("<lora:xl_peft:0.8:0.6>"))
    assert maxdiff(got_tags, ref) <= TOL, maxdiff(got_tags, ref)


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_sdxl_block_weight_presets_equal_stock_on_the_filtered_file(host, preset):
    """Reference: stock LoraLoader on a file holding only the blocks the published preset keeps."""
    blocks = f"xl_kohya_{preset.lower()}"
    ref = latent(host, stock(blocks, 0.9, 1.0))
    full = latent(host, stock("xl_kohya_bw", 0.9, 1.0))
    assert maxdiff(full, ref) > EFFECT, "the removed blocks change nothing: the comparison would be empty"
    got = latent(host, lean("xl_kohya_bw", 0.9, 1.0, bw=preset))
    assert maxdiff(got, ref) <= TOL, maxdiff(got, ref)
    got_tags = latent(host, tags(f"<lora:xl_kohya_bw:0.9:1:lbw={preset}>"))
    assert maxdiff(got_tags, ref) <= TOL, maxdiff(got_tags, ref)


def test_the_filtered_files_hold_only_their_blocks():
    """The reference files are built from the block table here (sdxl_loras.BLOCK), independent of core/."""
    from safetensors import safe_open
    for preset, blocks in PUBLISHED.items():
        name = f"xl_kohya_{preset.lower()}"
        with safe_open(str(_files()[name]), "pt") as f:
            mods = {k.split(".")[0] for k in f.keys()}
        seen = set()
        for m in mods:
            hit = re.match(r"lora_unet_(input_blocks_\d+|middle_block|output_blocks_\d+)_1_", m)
            if hit:
                kind = hit.group(1)
                seen.add("M00" if kind == "middle_block" else
                         ("IN" if kind.startswith("input") else "OUT") + f"{int(kind.rsplit('_', 1)[1]):02d}")
            else:
                assert m.startswith(("lora_te1_", "lora_te2_")), m
                seen.add("BASE")
        assert seen == set(blocks), (name, seen)
