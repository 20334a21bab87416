"""Tier 2: a different LoRA for every image of one batch (LeanPromptBatch's <lora:...> tags and its `model` output),
SD1.5 fixture in a real ComfyUI, against stock nodes.  The fixture is the narrow variant (lean_testlib.sd15.NARROW:
every key and block of SD1.5's UNet at 320 channels, detected as SD1.5 by the host's own loader; its kohya LoRAs have
SD1.5's module names): what is checked is which row gets which LoRA, not the UNet's width, and a step costs a
fraction of the full-size one's (the full-size fixture's LoRA numerics: tests/test_tier2_lora.py).

Each latent of ONE KSampler pass over the batch must equal a separate stock run of its line alone: stock LoraLoader
chain with that line's LoRAs (a file filtered to the preset's blocks for lbw=, stock KSamplerAdvanced segments at each
step's strength for a schedule), stock CLIPTextEncode of the line's text without its tags, the same noise
(LatentFromBatch keeps the batch index, so comfy/sample.py prepare_noise draws that row's noise).  The same holds when
the host runs cond and uncond apart (a memory limit, test-only node lean_testlib/chunk_limit_node.py), at CFG 1 (no
uncond rows), and with a negative prompt that is itself a batch.  Every row's LoRA effect is checked to be far above
the tolerance, so a LoRA given to the wrong row fails.

Tolerance: |latent - stock| <= 1e-3 x max(1, |stock|max) (fp32 UNet and text encoder, --fp32-text-enc as
tests/test_tier2_lora.py explains)."""
import numpy as np
import pytest

from lean_testlib import harness, lbw_presets, lora as kohya, lora_extra, probe_node, sd15

pytestmark = pytest.mark.tier2

CKPT = "lean_sd15n.safetensors"
TOL = 1e-3
EFFECT = 10  # a LoRA must move its row by more than EFFECT x the tolerance
SEED, STEPS, DENOISE = 7, 2, 0.5
LINES = ["a red cube on a table",
         "a blue sphere <lora:pi_a:0.8>",
         "a green cone <lora:pi_b:0.6:0.3> <lora:PI_C:-0.5>",
         "a yellow house <lora:pi_a:0.9:lbw=MIDD>"]
CLEAN = ["a red cube on a table", "a blue sphere", "a green cone", "a yellow house"]  # written here, not parsed
# stock LoraLoader chain per line: (file, strength_model, strength_clip)
STOCK = {0: [], 1: [("pi_a", 0.8, 0.8)], 2: [("pi_b", 0.6, 0.3), ("pi_c", -0.5, -0.5)], 3: [("pi_a_midd", 0.9, 0.9)]}


def _setup(base):
    harness.link_model(base, "checkpoints", sd15.sd15_checkpoint(narrow=True), CKPT)
    for name, seed in (("pi_a", 0), ("pi_b", 1), ("pi_c", 2)):
        harness.link_model(base, "loras", kohya.sd15_lora(seed=seed, narrow=True), name + ".safetensors")
    harness.link_model(base, "loras", lora_extra.filtered_lora(lbw_presets.blocks_on("sd15", "MIDD"), seed=0,
                                                               narrow=True), "pi_a_midd.safetensors")
    harness.link_model(base, "loras", lora_extra.loha_lora(narrow=True), "pi_loha.safetensors")
    harness.link_model(base, "loras", lora_extra.sdxl_style_lora(), "pi_xl.safetensors")


@pytest.fixture(scope="module")
def host(shared_hosts):
    with shared_hosts.use(["--fp32-text-enc"], setup=_setup) as h:
        yield h


_n = [0]


def _name(tag):
    _n[0] += 1
    return f"pi_{tag}_{_n[0]}"


def _probe(name, src):
    return {"class_type": "TestProbe_lean", "inputs": {"name": name, "latent": [src, 0]}}


def _ksampler(model, pos, neg, lat, cfg, steps=STEPS, denoise=DENOISE):
    return {"class_type": "KSampler", "inputs": {"model": model, "positive": pos, "negative": neg,
                                                 "latent_image": lat, "seed": SEED, "steps": steps, "cfg": cfg,
                                                 "sampler_name": "euler", "scheduler": "normal", "denoise": denoise}}


def batch_graph(lines, cfg, neg="blurry", chunks=None, model=("ck", 0), clip=("ck", 1), extra=None):
    """ck -> LeanPromptBatch(model, clip) -> [TestChunkLimit] -> KSampler over len(lines) latents -> probe.
    neg: a text (stock CLIPTextEncode on the checkpoint's CLIP) or a list of lines (a second LeanPromptBatch)."""
    g = {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
         "pb": {"class_type": "LeanPromptBatch", "inputs": {"clip": list(clip), "model": list(model),
                                                             "text": "\n".join(lines), "mode": "lines", "count": 16,
                                                             "seed": 0, "prefix": "", "suffix": ""}},
         "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": len(lines)}}}
    g.update(extra or {})
    if isinstance(neg, str):
        g["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": neg, "clip": ["ck", 1]}}
    else:
        g["neg"] = {"class_type": "LeanPromptBatch", "inputs": {"clip": ["ck", 1], "text": "\n".join(neg),
                                                               "mode": "lines", "count": 16, "seed": 0, "prefix": "",
                                                               "suffix": ""}}
    m = ["pb", 4]
    if chunks is not None:
        g["lim"] = {"class_type": "TestChunkLimit_lean", "inputs": {"model": m, "chunks": chunks,
                                                                    "name": _name("chunks")}}
        m = ["lim", 0]
    g["ks"] = _ksampler(m, ["pb", 0], ["neg", 0], ["lat", 0], cfg)
    name = _name("batch")
    g["p"] = _probe(name, "ks")
    return g, name


def _chain(g, tag, model, clip, loras, model_only=False):
    for j, (f, sm, sc) in enumerate(loras):
        nid = f"{tag}l{j}"
        if model_only:
            g[nid] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": f + ".safetensors",
                                                                     "strength_model": sm}}
            model = [nid, 0]
        else:
            g[nid] = {"class_type": "LoraLoader", "inputs": {"model": model, "clip": clip,
                                                             "lora_name": f + ".safetensors", "strength_model": sm,
                                                             "strength_clip": sc}}
            model, clip = [nid, 0], [nid, 1]
    return model, clip


def add_reference(g, i, n, loras, cfg, text, neg="blurry", neg_loras=(), model=("ck", 0), clip=("ck", 1),
                  after=(), neg_pad=0):
    """The stock run of line i alone: LoraLoader chain -> CLIPTextEncode(text) -> KSampler on LatentFromBatch(i) of
    an n-latent batch (the batch's noise for row i).  neg_loras: a LoraLoader chain (clip only) for the negative's
    CLIP; neg_pad: empty 77-token chunks the negative is padded with (stock ConditioningConcat of "" encoded by the
    same CLIP); after: LoraLoaderModelOnly chain after the line's LoRAs.  Returns the probe name."""
    t = f"r{_n[0]}_{i}_"
    m, c = _chain(g, t, list(model), list(clip), loras)
    m, _ = _chain(g, t + "a", m, None, after, model_only=True)
    g[t + "pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": c}}
    _, nc = _chain(g, t + "n", ["ck", 0], ["ck", 1], [(f, 0.0, sc) for f, sc in neg_loras])
    g[t + "neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": neg, "clip": nc}}
    if neg_pad:
        g[t + "empty"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": nc}}
        for k in range(neg_pad):
            prev = t + ("neg" if k == 0 else f"neg{k - 1}")
            g[t + f"neg{k}"] = {"class_type": "ConditioningConcat", "inputs": {
                "conditioning_to": [prev, 0], "conditioning_from": [t + "empty", 0]}}
        g[t + "negp"] = g.pop(t + f"neg{neg_pad - 1}")
        neg_node = t + "negp"
    else:
        neg_node = t + "neg"
    g[t + "lat"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": n}}
    g[t + "one"] = {"class_type": "LatentFromBatch", "inputs": {"samples": [t + "lat", 0], "batch_index": i,
                                                                "length": 1}}
    g[t + "ks"] = _ksampler(m, [t + "pos", 0], [neg_node, 0], [t + "one", 0], cfg)
    name = _name(f"ref{i}")
    g[t + "p"] = _probe(name, t + "ks")
    return name


def lat(host, name):
    return probe_node.read(host.base, name)[0]["latent.0"].numpy()


def check_rows(batch, refs, plain=None):
    """Row i of the batch equals stock reference i; where plain[i] is given (the same row without LoRAs), the LoRA
    moves it by far more than the tolerance (so a LoRA on the wrong row could not pass)."""
    for i, ref in enumerate(refs):
        bound = TOL * max(1.0, float(np.abs(ref).max()))
        err = float(np.abs(batch[i] - ref[0]).max())
        assert err <= bound, f"latent {i} differs from its stock run by {err} (bound {bound})"
        if plain is not None and plain[i] is not None:
            effect = float(np.abs(plain[i] - ref[0]).max())
            assert effect > EFFECT * bound, f"row {i}: its LoRAs change it by only {effect}"


def run_refs(host, cfg, lines=LINES, clean=CLEAN, stock=STOCK, **kw):
    g = {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}
    names = [add_reference(g, i, len(lines), stock[i], cfg, clean[i], **kw) for i in range(len(lines))]
    plain = [add_reference(g, i, len(lines), [], cfg, clean[i], **kw) if stock[i] else None
             for i in range(len(lines))]
    host.run(g)
    return [lat(host, n) for n in names], [lat(host, p) if p else None for p in plain]


@pytest.fixture(scope="module")
def refs_cfg3(host):
    return run_refs(host, 3.0)


def test_four_lines_one_pass_each_latent_equals_its_stock_run(host, refs_cfg3):
    refs, plain = refs_cfg3
    g, name = batch_graph(LINES, 3.0)
    entry = host.run(g)
    batch, meta = probe_node.read(host.base, name)
    assert meta["executions"]["latent"] == 1, "KSampler ran more than once"
    assert batch["latent.0"].shape == (4, 4, 8, 8)
    check_rows(batch["latent.0"].numpy(), refs, plain)
    report = entry["outputs"]["pb"]["text"]
    assert report[0] == "1: no LoRA", report
    assert report[1] == "2: pi_a.safetensors 0.8", report
    assert report[2] == "3: pi_b.safetensors unet 0.6 te 0.3, pi_c.safetensors -0.5", report
    assert report[3] == "4: pi_a.safetensors 0.9 lbw MIDD", report
    assert any(line.startswith("pi_a.safetensors: UNet 192 modules as low-rank branch, per image (2 of 4")
               for line in report), report


def test_cond_and_uncond_run_apart_by_a_memory_limit_still_equal(host, refs_cfg3):
    refs, plain = refs_cfg3
    g, name = batch_graph(LINES, 3.0, chunks=1)
    host.run(g)
    calls = probe_node.read(host.base, g["lim"]["inputs"]["name"])[1]
    assert calls and all(len(c["cond_or_uncond"]) == 1 and c["rows"] == 4 for c in calls), calls
    assert {c["cond_or_uncond"][0] for c in calls} == {0, 1}, calls  # cond and uncond, each in calls of its own
    check_rows(lat(host, name), refs, plain)
    g, name = batch_graph(LINES, 3.0, chunks=2)  # the host's usual layout: both chunks in one call
    host.run(g)
    calls = probe_node.read(host.base, g["lim"]["inputs"]["name"])[1]
    assert all(sorted(c["cond_or_uncond"]) == [0, 1] and c["rows"] == 8 for c in calls), calls
    check_rows(lat(host, name), refs, plain)


def test_cfg_1_no_uncond_rows(host):
    refs, plain = run_refs(host, 1.0)
    g, name = batch_graph(LINES, 1.0, chunks=4)
    host.run(g)
    calls = probe_node.read(host.base, g["lim"]["inputs"]["name"])[1]
    assert all(c["cond_or_uncond"] == [0] and c["rows"] == 4 for c in calls), calls  # the host skips the negative
    check_rows(lat(host, name), refs, plain)


LONG_NEG = "dark, grainy, " + ", ".join(["noise"] * 45)  # 2 chunks of 77 tokens
NEG = ["blurry", "blurry <lora:pi_c:unet=0:te=0.7>", LONG_NEG, "blurry <lora:pi_b:0:1.2>"]


# a variant: the per-line text-encoder LoRAs and UNet rows run on both hosts above (CI runs it on 0.33.0 only)
@pytest.mark.one_host
def test_negative_prompt_that_is_itself_a_batch(host):
    """The negative is a LeanPromptBatch too (its own text-encoder LoRA per line): row i's uncond rows get negative
    line i encoded by its LoRA'd CLIP and, through the positive's model, line i's UNet LoRAs.  Line 2 has two chunks:
    the others are padded with the empty prompt encoded by their own CLIP (stock ConditioningConcat)."""
    neg_clean = ["blurry", "blurry", LONG_NEG, "blurry"]
    neg_loras = {0: (), 1: (("pi_c", 0.7),), 2: (), 3: (("pi_b", 1.2),)}
    g = {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}
    names = [add_reference(g, i, 4, STOCK[i], 3.0, CLEAN[i], neg=neg_clean[i], neg_loras=neg_loras[i],
                           neg_pad=0 if i == 2 else 1) for i in range(4)]
    plain_neg = add_reference(g, 3, 4, STOCK[3], 3.0, CLEAN[3], neg=neg_clean[3], neg_pad=1)  # plain negative
    host.run(g)
    refs = [lat(host, n) for n in names]
    te_effect = float(np.abs(lat(host, plain_neg) - refs[3]).max())
    assert te_effect > EFFECT * TOL * max(1.0, float(np.abs(refs[3]).max())), te_effect
    g, name = batch_graph(LINES, 3.0, neg=NEG)
    entry = host.run(g)
    assert entry["outputs"]["neg"]["text"][1] == "2: pi_c.safetensors unet 0 te 0.7", entry["outputs"]["neg"]
    check_rows(lat(host, name), refs)


def test_schedule_line_equals_stock_segments(host):
    """Line 1's LoRA has a four-keyframe schedule; 20 steps euler/normal sampled from step 16 (step i at step fraction
    i/19, tests/test_tier2_lora.py); reference: one stock KSamplerAdvanced segment per step, stock LoraLoaderModelOnly
    at that step's strength (np.interp of the keyframes), on row 1's noise.  Line 2 keeps a constant LoRA."""
    steps, first = 20, 16
    kf = [(0.8, 1.0), (0.87, 0.2), (0.93, -0.6), (1.0, 1.5)]
    sched = ",".join(f"{p}:{v}" for p, v in kf)
    lines = ["a red cube", f"a blue sphere <lora:pi_a:1:sched={sched}>", "a green cone <lora:pi_b:0.7>"]
    strengths = [float(np.interp(i / (steps - 1), [p for p, _ in kf], [v for _, v in kf])) for i in range(first, steps)]

    def adv(model, pos, neg, latent, a, b, j, last):
        return {"class_type": "KSamplerAdvanced", "inputs": {
            "model": model, "positive": pos, "negative": neg, "latent_image": latent,
            "add_noise": "enable" if j == 0 else "disable", "noise_seed": SEED, "steps": steps, "cfg": 2.0,
            "sampler_name": "euler", "scheduler": "normal", "start_at_step": a, "end_at_step": b,
            "return_with_leftover_noise": "disable" if last else "enable"}}

    g, name = batch_graph(lines, 2.0)
    g["ks"] = adv(["pb", 4], ["pb", 0], ["neg", 0], ["lat", 0], first, 10000, 0, True)
    host.run(g)
    batch = lat(host, name)

    r = {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
         "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ck", 1]}},
         "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}}}
    refs = []
    for i, (loras, text) in enumerate([([], "a red cube"), ([("pi_a", 0.0, 1.0)], "a blue sphere"),
                                       ([("pi_b", 0.7, 0.7)], "a green cone")]):
        m, c = _chain(r, f"s{i}", ["ck", 0], ["ck", 1], loras)
        r[f"s{i}pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": c}}
        r[f"s{i}one"] = {"class_type": "LatentFromBatch", "inputs": {"samples": ["lat", 0], "batch_index": i,
                                                                     "length": 1}}
        segs = [(first, 10000)] if i != 1 else [(k, k + 1) for k in range(first, steps)]
        prev = [f"s{i}one", 0]
        for j, (a, b) in enumerate(segs):
            mj = m
            if i == 1 and strengths[j] != 0:
                r[f"s{i}m{j}"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
                    "model": ["ck", 0], "lora_name": "pi_a.safetensors", "strength_model": strengths[j]}}
                mj = [f"s{i}m{j}", 0]
            elif i == 1:
                mj = ["ck", 0]
            r[f"s{i}k{j}"] = adv(mj, [f"s{i}pos", 0], ["neg", 0], prev, a, b, j, j == len(segs) - 1)
            prev = [f"s{i}k{j}", 0]
        refs.append(_name(f"sched{i}"))
        r[f"s{i}p"] = _probe(refs[-1], prev[0])
    # the same row at constant strength 1: the schedule must matter
    r["cl"] = {"class_type": "LoraLoader", "inputs": {"model": ["ck", 0], "clip": ["ck", 1],
                                                      "lora_name": "pi_a.safetensors", "strength_model": 1.0,
                                                      "strength_clip": 1.0}}
    r["cpos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a blue sphere", "clip": ["cl", 1]}}
    r["ck1"] = adv(["cl", 0], ["cpos", 0], ["neg", 0], ["s1one", 0], first, 10000, 0, True)
    const = _name("const")
    r["cp"] = _probe(const, "ck1")
    host.run(r)
    refs = [lat(host, n) for n in refs]
    bound = TOL * max(1.0, float(np.abs(refs[1]).max()))
    assert float(np.abs(lat(host, const) - refs[1]).max()) > EFFECT * bound, "the schedule must change the result"
    check_rows(batch, refs)


def test_plain_lora_nodes_before_and_after_stack_with_the_per_image_ones(host):
    """LeanLoraLoader before Prompt Batch (model and CLIP) and stock LoraLoaderModelOnly after it: every row gets both,
    plus its own line's LoRAs."""
    lines = ["a red cube on a table", "a blue sphere <lora:pi_a:0.8>"]
    before = {"class_type": "LeanLoraLoader", "inputs": {"model": ["ck", 0], "clip": ["ck", 1],
                                                         "lora_name": "pi_c.safetensors", "strength_model": 0.5,
                                                         "strength_clip": 0.5, "schedule": "", "block_weights": ""}}
    g, name = batch_graph(lines, 3.0, model=("before", 0), clip=("before", 1), extra={"before": before})
    g["after"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["pb", 4], "lora_name": "pi_b.safetensors",
                                                                  "strength_model": 0.4}}
    g["ks"]["inputs"]["model"] = ["after", 0]
    host.run(g)
    r = {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}
    stock = {0: [("pi_c", 0.5, 0.5)], 1: [("pi_c", 0.5, 0.5), ("pi_a", 0.8, 0.8)]}
    refs = [add_reference(r, i, 2, stock[i], 3.0, CLEAN[i], after=[("pi_b", 0.4, 0.0)]) for i in range(2)]
    plain = add_reference(r, 1, 2, stock[0], 3.0, CLEAN[1], after=[("pi_b", 0.4, 0.0)])  # row 1 without pi_a
    host.run(r)
    check_rows(lat(host, name), [lat(host, n) for n in refs], [None, lat(host, plain)])


def test_no_tags_gives_the_input_model_and_todays_conditioning(host):
    g, name = batch_graph(CLEAN, 3.0)
    g["pc"] = {"class_type": "TestProbe_lean", "inputs": {"name": _name("cond"), "conditioning": ["pb", 0]}}
    g["plain"] = {"class_type": "KSampler", "inputs": {**g["ks"]["inputs"], "model": ["ck", 0]}}
    g["pp"] = _probe(_name("plainks"), "plain")
    entry = host.run(g)
    assert entry["outputs"]["pb"]["text"] == ["no LoRA tags found"]
    assert np.array_equal(lat(host, name), lat(host, g["pp"]["inputs"]["name"]))


def _error(host, lines, **kw):
    g, _ = batch_graph(lines, 3.0, **kw)
    entry = host.run(g, expect_error=True)
    assert host.alive()
    return host.error_text(entry)


def test_bad_tags_are_clear_errors_naming_the_prompt(host):
    msg = _error(host, ["a cube", "a sphere <lora:pi_zz:1>"])
    assert "prompt 2" in msg and "pi_zz" in msg and "not found" in msg, msg
    msg = _error(host, ["a cube <lora:pi_loha:1>"])
    assert "prompt 1" in msg and "pi_loha.safetensors" in msg and "LoRA/LoCon" in msg, msg
    msg = _error(host, ["a cube <lora:pi_a:1:lbw=1,1,1>"])
    assert "prompt 1" in msg and "3 values given; SD1.5 takes 17" in msg, msg
    g, _ = batch_graph(["a cube <lora:pi_a:1>"], 3.0)
    del g["pb"]["inputs"]["model"]
    g["ks"]["inputs"]["model"] = ["ck", 0]
    entry = host.run(g, expect_error=True)
    assert "no model is connected" in host.error_text(entry), host.error_text(entry)


def test_lora_for_another_model_is_named_in_the_report(host):
    g, _ = batch_graph(["a cube", "a sphere <lora:pi_xl:1>"], 3.0)
    entry = host.run(g)
    report = entry["outputs"]["pb"]["text"]
    assert any("prompt 2: pi_xl.safetensors matched nothing in this model" in line for line in report), report
