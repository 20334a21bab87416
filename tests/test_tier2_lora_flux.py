"""Tier 2: LeanLoraLoader / LeanLoraTags on the tiny Flux (lean_testlib.flux_tiny) with Flux LoRAs in the formats
people download (kohya/BFL, diffusers/PEFT, LyCORIS LoKr: lean_testlib.lora_formats), against the host's stock
LoraLoaderModelOnly.  References: stock nodes, stock KSamplerAdvanced segments, LoRA files filtered here, the
fixture's own metadata and its deliberately unmatched keys, the file's weights cast to fp8 here, and the file with
its weights rounded to fp8 and stored exactly in bf16 (lean_testlib.sd15_variants.fp8_rounded_file)."""
import hashlib

import pytest
import torch

from lean_testlib import flux_tiny, graphs, harness, lora_formats, probe_node, sd15_variants, weight_hash_node

pytestmark = pytest.mark.tier2

FLUX = "lean_flux_tiny.safetensors"
FLUX_FP8_ROUNDED = "lean_flux_tiny_fp8_rounded.safetensors"  # its weights rounded to fp8, stored in bf16 (exact)
STRENGTH = 0.8
LORAS = {"kohya": "flux_kohya.safetensors", "diffusers": "flux_diffusers.safetensors",
         "lokr": "flux_lokr.safetensors"}
TAGGED = "flux_tagged.safetensors"
DOUBLE_ONLY = {"kohya": "flux_kohya_double.safetensors", "diffusers": "flux_diffusers_double.safetensors"}
HASH_KEY = "double_blocks.0.img_attn.qkv.weight"  # a LoRA target (kohya: img_attn_qkv, diffusers: to_q/k/v)


def _is_double(module):
    return "double_blocks" in module or ".transformer_blocks." in module


def _flux_lora_files(base):
    harness.link_model(base, "diffusion_models", flux_tiny.flux_tiny(), FLUX)
    harness.link_model(base, "diffusion_models", sd15_variants.fp8_rounded_file(flux_tiny.flux_tiny()), FLUX_FP8_ROUNDED)
    files = {"kohya": flux_tiny.flux_kohya_lora(), "diffusers": lora_formats.flux_diffusers_lora(),
             "lokr": lora_formats.flux_lokr()}
    for fmt, src in files.items():
        harness.link_model(base, "loras", src, LORAS[fmt])
    for fmt, name in DOUBLE_ONLY.items():
        harness.link_model(base, "loras", lora_formats.filtered(files[fmt], _is_double, "double"), name)
    harness.link_model(base, "loras", lora_formats.flux_kohya_tagged(), TAGGED)


@pytest.fixture(scope="module")
def host(shared_hosts):
    """The shared host with the default flags (its test-only nodes include the probe, TestFluxCond_lean and the
    weight hash)."""
    with shared_hosts.use(setup=_flux_lora_files) as h:
        yield h


_n = [0]


def graph(lora=None, loader="UNETLoader", weight_dtype="default", steps=1, segments=None, hash_key=None, unet=FLUX):
    """loader -> (lora: (class_type, inputs)) -> KSampler(Advanced) on a 16x16 Flux latent -> probe.
    segments: [(model ref or None, start, end)] for a KSamplerAdvanced chain."""
    _n[0] += 1
    name = f"lat{_n[0]}"
    inputs = {"unet_name": unet, "weight_dtype": weight_dtype}
    if loader == "LeanDiffusionModelLoader":
        inputs["load_mode"] = "mmap"
    g = {"m": {"class_type": loader, "inputs": inputs},
         "c": {"class_type": "TestFluxCond_lean", "inputs": {"seed": 1, "tokens": 8, "context_dim": 4096,
                                                              "guidance": 3.5}},
         "e": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}}}
    model = ["m", 0] if lora is None else graphs.add_lora(g, lora, ["m", 0], "l")
    prev = graphs.sampler_segments(g, [(mref or model, a, b) for mref, a, b in segments or [(None, 0, 10000)]],
                                   ["c", 0], ["c", 0], ["e", 0], seed=7, steps=steps)
    g["p"] = {"class_type": "TestProbe_lean", "inputs": {"name": name, "latent": prev}}
    if hash_key:
        g["h"] = {"class_type": "TestWeightHash_lean", "inputs": {"model": ["m", 0], "key": hash_key,
                                                                  "name": name + "_hash", "after": prev}}
    return g, name


def run(host, g, name):
    entry = host.run(g)
    return probe_node.read(host.base, name)[0]["latent.0"], entry


def latent(host, **kw):
    g, name = graph(**kw)
    return run(host, g, name)[0]


def stock(name, s=STRENGTH):
    return ("LoraLoaderModelOnly", {"lora_name": name, "strength_model": s})


def lean(name, s=STRENGTH, schedule="", bw=""):
    return ("LeanLoraLoader", {"lora_name": name, "strength_model": s, "strength_clip": 0.0,
                               "schedule": schedule, "block_weights": bw})


def tags(text):
    return ("LeanLoraTags", {"text": text})


def close(a, b, rel=1e-3):
    err = (a - b).abs().max().item()
    return err <= rel * max(1.0, b.abs().max().item()), err


@pytest.fixture(scope="module")
def base_latent(host):
    return latent(host)


# ------------------------------------------------------------------ fixtures are right: stock loads every key

@pytest.mark.parametrize("fmt", list(LORAS))
def test_stock_loads_every_key_and_lean_equals_stock(host, base_latent, fmt):
    """The host's LoraLoaderModelOnly maps every key of the file (no "lora key not loaded"); LeanLoraLoader and
    LeanLoraTags give its result within fp tolerance; the LoRA visibly changes the latent."""
    mark = len(host.log())
    ref = latent(host, lora=stock(LORAS[fmt]))
    log = host.log()[mark:]
    assert "lora key not loaded" not in log, [x for x in log.splitlines() if "lora key not loaded" in x][:5]
    assert (ref - base_latent).abs().max() > 1e-2, "the LoRA changed nothing: the comparison would not see it"
    g, name = graph(lora=lean(LORAS[fmt]))
    got, entry = run(host, g, name)
    ok, err = close(got, ref)
    assert ok, (fmt, err)
    text = " ".join(entry["outputs"]["l"]["text"])
    assert "not loaded" not in text, text
    if fmt == "lokr":  # no cheap branch for LoKr: ComfyUI's own patching, reported
        assert "UNet 0 modules as low-rank branch" in text and "host patching used" in text and "lokr" in text, text
    else:  # 13 linear modules; diffusers' to_q/to_k/to_v (and proj_mlp) are slices of one fused weight
        assert "UNet 13 modules as low-rank branch, 0 by host patching" in text, text
    stem = LORAS[fmt][:-len(".safetensors")]
    got_t = latent(host, lora=tags(f"a castle <lora:{stem}:{STRENGTH}>"))
    ok, err = close(got_t, ref)
    assert ok, (fmt, "tags", err)


# ------------------------------------------------------------------ schedules on Flux

@pytest.mark.one_host  # a variant: its host paths run on both hosts in test_tier2_lora.py's schedules
def test_schedule_zero_for_the_first_half_equals_stock_segments(host):
    """4 steps (simple scheduler: step fractions 0, 1/4, 1/2, 3/4); schedule 0 before 0.4, 1 from there:
    equals stock KSamplerAdvanced steps 0-2 on the plain model, then 2-4 with stock LoraLoaderModelOnly."""
    name = LORAS["kohya"]
    got = latent(host, lora=lean(name, 1.0, schedule="0:0,0.4:0,0.4:1,1:1"), steps=4)
    g, pname = graph(steps=4, segments=[(["m", 0], 0, 2), (["l", 0], 2, 10000)])
    g["l"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["m", 0], "lora_name": name,
                                                              "strength_model": 1.0}}
    ref, _ = run(host, g, pname)
    const = latent(host, lora=stock(name, 1.0), steps=4)
    assert (const - ref).abs().max() > 1e-2, "the schedule must change the result"
    ok, err = close(got, ref)
    assert ok, err
    got_t = latent(host, lora=tags(f"<lora:{name[:-12]}:1:start=0.4>"), steps=4)
    ok, err = close(got_t, ref)
    assert ok, ("tags start=0.4", err)


# ------------------------------------------------------------------ block weights on Flux

# a variant: its host paths run on both hosts in test_tier2_lora.py's block weights and this file's key maps
@pytest.mark.one_host
@pytest.mark.parametrize("fmt", list(DOUBLE_ONLY))
def test_block_weights_zeroing_single_blocks_equal_filtered_file(host, fmt):
    """D0-D18:1,S0-S37:0 equals the stock loader with a file that holds only the double blocks' modules."""
    ref = latent(host, lora=stock(DOUBLE_ONLY[fmt]))
    full = latent(host, lora=stock(LORAS[fmt]))
    assert (full - ref).abs().max() > 1e-2, "the single blocks' modules must matter"
    got = latent(host, lora=lean(LORAS[fmt], bw="D0-D18:1,S0-S37:0"))
    ok, err = close(got, ref)
    assert ok, err
    got_p = latent(host, lora=lean(LORAS[fmt], bw="DOUBLE"))
    ok, err = close(got_p, ref)
    assert ok, ("preset DOUBLE", err)
    stem = LORAS[fmt][:-len(".safetensors")]
    got_t = latent(host, lora=tags(f"<lora:{stem}:{STRENGTH}:lbw=S0-S37:0>"))
    ok, err = close(got_t, ref)
    assert ok, ("tag lbw", err)


def test_bad_flux_block_weights(host):
    g, _ = graph(lora=lean(LORAS["kohya"], bw="MIDD"))
    msg = host.error_text(host.run(g, expect_error=True))
    assert "unknown Flux preset 'MIDD'" in msg and "D0-D18:1,S0-S37:0" in msg, msg
    g, _ = graph(lora=lean(LORAS["kohya"], bw="D0-D19:1"))
    msg = host.error_text(host.run(g, expect_error=True))
    assert "block D19 does not exist" in msg, msg


# ------------------------------------------------------------------ not loaded keys, trigger words

def test_not_loaded_keys_and_trigger_words(host):
    """The tagged kohya fixture has UNMATCHED modules (blocks the tiny model lacks) and ss_tag_frequency: the
    stock loader logs exactly those keys as not loaded; Lean lists them and returns the trigger words."""
    mark = len(host.log())
    latent(host, lora=stock(TAGGED))
    log = host.log()[mark:]
    stock_missing = {x.split("lora key not loaded:", 1)[1].strip() for x in log.splitlines()
                     if "lora key not loaded:" in x}
    want = {f"{n}.{s}" for n in lora_formats.UNMATCHED for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert stock_missing == want, (stock_missing ^ want)
    first = sorted(lora_formats.UNMATCHED)
    expect = f"not loaded: {', '.join(first[:5])} (+{len(first) - 5} more)"
    triggers = ", ".join(lora_formats.TRIGGERS)
    for node in (lean(TAGGED), tags(f"a castle <lora:{TAGGED[:-12]}:0.8>")):
        g, name = graph(lora=node)
        slot = 2 if node[0] == "LeanLoraLoader" else 3
        g["t"] = {"class_type": "TestProbe_lean", "inputs": {"name": name + "_trig", "strings": ["l", slot]}}
        _, entry = run(host, g, name)
        text = " ".join(entry["outputs"]["l"]["text"])
        assert expect in text, text
        assert f"trigger words: {triggers}" in text, text
        assert probe_node.read(host.base, name + "_trig")[1]["strings"] == [triggers]
    g, name = graph(lora=lean(LORAS["kohya"]))
    g["t"] = {"class_type": "TestProbe_lean", "inputs": {"name": name + "_trig", "strings": ["l", 2]}}
    run(host, g, name)
    assert probe_node.read(host.base, name + "_trig")[1]["strings"] == [""]


def test_output_order_is_kept(host):
    info = host.object_info()
    assert info["LeanLoraLoader"]["output"] == ["MODEL", "CLIP", "STRING"]
    assert info["LeanLoraLoader"]["output_name"] == ["model", "clip", "trigger_words"]
    assert info["LeanLoraTags"]["output"] == ["MODEL", "CLIP", "STRING", "STRING"]
    assert info["LeanLoraTags"]["output_name"] == ["model", "clip", "text", "trigger_words"]


# ------------------------------------------------------------------ fp8 weights: the base weight is never touched

def _file_fp8_sha(key):
    from safetensors import safe_open
    with safe_open(str(flux_tiny.flux_tiny()), "pt") as f:
        t = f.get_tensor(key)
    return hashlib.sha256(t.to(torch.float8_e4m3fn).contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


# a variant: its host paths run on both hosts in test_tier2_lora.py's fp8_e4m3fn case and test_tier2_flux.py's fp8
# Flux
@pytest.mark.one_host
def test_fp8_weights_branch_leaves_base_weight_bytes(host):
    """LeanDiffusionModelLoader fp8_e4m3fn + LeanLoraLoader: after sampling, the base weight's bytes equal the
    file's weight cast to fp8 here (never dequantized/re-quantized); the result equals stock UNETLoader +
    LoraLoaderModelOnly on the file holding the same fp8-rounded weights stored exactly in bf16 (so stock adds the
    LoRA to exactly the values the fp8 model computes with), within 1e-3: the exact B·A·x at the set strength.
    Stock patching on the fp8 model, run last, does change those bytes (the check sees it)."""
    want = _file_fp8_sha(HASH_KEY)
    L = "LeanDiffusionModelLoader"
    g, name = graph(lora=lean(LORAS["kohya"], 1.0), loader=L, weight_dtype="fp8_e4m3fn", hash_key=HASH_KEY)
    with_lora, entry = run(host, g, name)
    h = weight_hash_node.read(host.base, name + "_hash")
    assert h["dtype"] == "torch.float8_e4m3fn", h
    assert h["sha256"] == want, h
    text = " ".join(entry["outputs"]["l"]["text"])
    assert "branch fp8_e4m3fn" in text, text
    ref_none = latent(host, unet=FLUX_FP8_ROUNDED)
    # the fixture holds the values the host's own fp8 model computes with: stock UNETLoader fp8_e4m3fn on the file
    assert close(latent(host, weight_dtype="fp8_e4m3fn"), ref_none, 1e-5)[0]
    ref = latent(host, lora=stock(LORAS["kohya"], 1.0), unet=FLUX_FP8_ROUNDED)
    assert (ref - ref_none).abs().max() > 1e-2, "the LoRA changed nothing: the comparison would not see it"
    ok, err = close(with_lora, ref)
    assert ok, err
    unrounded = latent(host, lora=stock(LORAS["kohya"], 1.0))
    assert not close(unrounded, ref)[0], "fp8 rounding changes nothing here: the reference would not see it"
    # stock on the same fp8 model patches the weight in place while loaded: the hash would see that
    g, name = graph(lora=stock(LORAS["kohya"], 1.0), loader=L, weight_dtype="fp8_e4m3fn", hash_key=HASH_KEY)
    stock_fp8, _ = run(host, g, name)
    hs = weight_hash_node.read(host.base, name + "_hash")
    s_err = (stock_fp8 - ref).abs().max().item()
    print(f"fp8: lean vs stock on the fp8-rounded weights {err:.2e}; stock on the fp8 model {s_err:.2e}; "
          f"stock changed the weight bytes: {hs['sha256'] != want}")
    host.free()
    assert hs["sha256"] != want, "stock patching should change the loaded fp8 weight: the hash check is blind"
    assert s_err > err  # stock re-quantizes W + dW to fp8 (stochastic rounding): farther from the exact result
