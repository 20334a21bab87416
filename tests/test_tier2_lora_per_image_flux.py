"""Tier 2: a different LoRA for every image of one batch on Flux (a narrow tiny Flux, lean_testlib.flux_tiny at hidden
size 256: Flux-dev's keys and blocks with two heads of 128, which ComfyUI 0.33 reads from the file, with its kohya
LoRAs; DualCLIPLoader's tiny T5-XXL + CLIP-L, lean_testlib.flux_files / tiny_te_node.py), one sampler pass at cfg 1
(how Flux-dev is run: guidance distilled, no uncond rows), against stock per line.  The claim is rows (which LoRA
each image's rows get, in one pass), not widths: the branch on Flux-dev's full widths is tests/test_tier2_lora_flux.py
on both hosts.  The uncond rows' LoRAs (cfg > 1) are checked on SD1.5 on both hosts (tests/test_tier2_lora_per_image.py,
cfg 3 and 1) and on the tiny SDXL.

Five lines: no LoRA; one; two at other strengths; one with lbw=DOUBLE; one with start=0.4 (the schedule
"0:0,0.4:0,0.4:1,1:1": 3 steps of the simple scheduler sit at step fractions 0, 1/3, 2/3, see
tests/test_tier2_lora_flux.py).  Reference for line i: stock LoraLoaderModelOnly chain (the file filtered to the
double blocks for lbw=DOUBLE; stock KSamplerAdvanced steps 0-2 plain then 2-3 with the LoRA for the window), stock
CLIPTextEncodeFlux of the line's text without tags (guidance 3.5, as Prompt Batch's), LatentFromBatch(i) for the same
noise.  Tolerance |latent - stock| <= 1e-3 x max(1, |stock|max); each row's LoRA moves it far beyond that."""
import numpy as np
import pytest

from lean_testlib import flux_tiny, harness, lora_formats, probe_node, shipped

# CI runs this module on its default host only (marker one_host, .ci/run): what a host version could change
# under it is checked on both hosts elsewhere: the sampler's rows per model call (tests/test_tier2_lora_per_image.py),
# the low-rank branch on the host's Flux layers (tests/test_tier2_lora_flux.py), Prompt Batch's T5-XXL + CLIP-L
# encode (tests/test_tier2_prompt_batch_flux.py).
pytestmark = [pytest.mark.tier2, pytest.mark.one_host]

# The narrow Flux where the host reads Flux's width from the file (0.33; 17 s, against 113 s at Flux-dev's 3072);
# hosts before 0.33 get Flux-dev's width (0.3.64 fixes it at 3072; nothing between them was tried).
NARROW_FROM = (0, 33, 0)
ALPHA = 16.0  # 4x the rank: on the narrow model each row's LoRAs move it 70-90x the tolerance (a 5 % strength
#               error fails)
UNET = "lean_flux_per_image.safetensors"

TOL, EFFECT = 1e-3, 10
# 3 steps, not 4, and cfg 1: at Flux-dev's width a step of the lean and the stock runs cost ~30 s at cfg 2
STEPS, CFG, SEED = 3, 1.0, 7
LINES = ["a red cube",
         "a blue sphere <lora:pf_a:0.8>",
         "a green cone <lora:pf_b:0.6> <lora:pf_a:-0.4>",
         "a yellow house <lora:pf_a:1:lbw=DOUBLE>",
         "a castle <lora:pf_b:1:sched=0:0,0.4:0,0.4:1,1:1>"]
CLEAN = ["a red cube", "a blue sphere", "a green cone", "a yellow house", "a castle"]
# stock per line: [(file, strength)], and the step from which the LoRAs apply
STOCK = {0: ([], 0), 1: ([("pf_a", 0.8)], 0), 2: ([("pf_b", 0.6), ("pf_a", -0.4)], 0),
         3: ([("pf_a_double", 1.0)], 0), 4: ([("pf_b", 1.0)], 2)}


def _layout():
    return {"hidden_size": 256} if harness.host_release(harness.require_host()) >= NARROW_FROM else {}


def _setup(base):
    layout = _layout()
    shipped.put_flux_fixtures(base)
    harness.link_model(base, "diffusion_models", flux_tiny.flux_tiny(**layout), UNET)
    harness.link_model(base, "loras", flux_tiny.flux_kohya_lora(alpha=ALPHA, **layout), "pf_a.safetensors")
    harness.link_model(base, "loras", flux_tiny.flux_kohya_lora(seed=1, alpha=ALPHA, **layout), "pf_b.safetensors")
    harness.link_model(base, "loras", lora_formats.filtered(flux_tiny.flux_kohya_lora(alpha=ALPHA, **layout),
                                                            lambda m: "double_blocks" in m, "double"),
                       "pf_a_double.safetensors")


@pytest.fixture(scope="module")
def host(shared_hosts):
    with shared_hosts.use(setup=_setup) as h:
        yield h


def _loaders():
    return {"m": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET, "weight_dtype": "default"}},
            "c": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": shipped.FLUX_T5,
                                                              "clip_name2": shipped.FLUX_CLIP_L, "type": "flux",
                                                              "device": "default"}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["c", 0]}},
            "lat": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128,
                                                                    "batch_size": len(LINES)}}}


def _adv(model, pos, latent, a, b, first):
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "positive": pos, "negative": ["neg", 0], "latent_image": latent,
        "add_noise": "enable" if first else "disable", "noise_seed": SEED, "steps": STEPS, "cfg": CFG,
        "sampler_name": "euler", "scheduler": "simple", "start_at_step": a, "end_at_step": b,
        "return_with_leftover_noise": "enable" if b < STEPS else "disable"}}


def _chain(g, tag, loras):
    m = ["m", 0]
    for j, (f, s) in enumerate(loras):
        g[f"{tag}{j}"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": m, "lora_name": f + ".safetensors",
                                                                         "strength_model": s}}
        m = [f"{tag}{j}", 0]
    return m


def _reference(g, i, loras, start, tag="r"):
    """Stock run of line i (with `loras` from step `start` on) added to g under node ids tag<i>...; returns the probe
    name."""
    t = f"{tag}{i}"
    g[t + "pos"] = {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip": ["c", 0], "clip_l": CLEAN[i],
                                                                   "t5xxl": CLEAN[i], "guidance": 3.5}}
    g[t + "one"] = {"class_type": "LatentFromBatch", "inputs": {"samples": ["lat", 0], "batch_index": i, "length": 1}}
    prev = [t + "one", 0]
    segs = [(0, start, ["m", 0]), (start, STEPS, _chain(g, t + "l", loras))] if start else \
        [(0, STEPS, _chain(g, t + "l", loras))]
    for j, (a, b, model) in enumerate(segs):
        g[f"{t}k{j}"] = _adv(model, [t + "pos", 0], prev, a, b, j == 0)
        prev = [f"{t}k{j}", 0]
    g[t + "p"] = {"class_type": "TestProbe_lean", "inputs": {"name": f"pf_{t}", "latent": prev}}
    return f"pf_{t}"


def test_five_lines_one_pass_each_latent_equals_its_stock_run(host):
    g = _loaders()
    g["pb"] = {"class_type": "LeanPromptBatch", "inputs": {"clip": ["c", 0], "model": ["m", 0],
                                                            "text": "\n".join(LINES), "mode": "lines", "count": 16,
                                                            "seed": 0, "prefix": "", "suffix": "", "guidance": 3.5}}
    g["ks"] = _adv(["pb", 4], ["pb", 0], ["lat", 0], 0, STEPS, True)
    g["p"] = {"class_type": "TestProbe_lean", "inputs": {"name": "pf_batch", "latent": ["ks", 0]}}
    refs = [_reference(g, i, loras, start) for i, (loras, start) in STOCK.items()]
    plain = [_reference(g, i, [], 0, "q") for i in range(1, len(LINES))]  # the rows without LoRAs: each LoRA matters
    entry = host.run(g)
    batch, meta = probe_node.read(host.base, "pf_batch")
    assert meta["executions"]["latent"] == 1, "the sampler ran more than once"
    batch = batch["latent.0"].numpy()
    assert batch.shape == (5, 16, 16, 16), batch.shape
    report = entry["outputs"]["pb"]["text"]
    assert report[3] == "4: pf_a.safetensors 1 lbw DOUBLE", report
    assert report[4] == "5: pf_b.safetensors 1 sched 0:0,0.4:0,0.4:1,1:1", report
    for i in range(len(LINES)):
        ref = probe_node.read(host.base, refs[i])[0]["latent.0"].numpy()
        bound = TOL * max(1.0, float(np.abs(ref).max()))
        err = float(np.abs(batch[i] - ref[0]).max())
        assert err <= bound, f"latent {i} differs from its stock run by {err} (bound {bound})"
        if i:
            p = probe_node.read(host.base, plain[i - 1])[0]["latent.0"].numpy()
            effect = float(np.abs(p - ref).max())
            print(f"row {i}: error {err:.3g}, LoRA effect {effect:.3g}, bound {bound:.3g}")
            assert effect > EFFECT * bound, f"row {i}: its LoRAs change little"
