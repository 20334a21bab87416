"""Tier 2: the 2026 model families (Z-Image, Flux.2 Klein and dev, Qwen-Image; lean_testlib.families: tiny files
with the published key names) through the Lean loaders inside a real ComfyUI, against the stock nodes:

* Load Diffusion Model (mmap) gives stock UNETLoader's latent bit for bit (default and fp8_e4m3fn weights), one
  sampling step on the family's own latent and a conditioning from its own text encoder;
* Load Text Encoder (mmap) gives stock CLIPLoader's conditioning bit for bit (tensor, pooled output, attention mask)
  for SD1.5's CLIP-L, Qwen3-4B (as Z-Image's and Flux.2 Klein's encoder), Mistral Small 3.x (Flux.2-dev's, its
  tekken tokenizer in the file) and Qwen2.5-VL-7B (Qwen-Image's), and
  Load Dual Text Encoders (mmap) stock DualCLIPLoader's for Flux.1's T5-XXL + CLIP-L.

ComfyUI 0.3.64 knows Qwen-Image but neither Z-Image nor Flux.2: those cases skip there with that reason (on the
CI allow-list).  The tiny Qwen encoders are built by the host from the test-only hook tiny_te_node.py (installed
in every test host), which tells the host's own encoder classes the fixtures' layer counts.
"""
import json
import re

import pytest
import torch

from lean_testlib import families, flux_files, graphs, harness, inproc, probe_node

pytestmark = pytest.mark.tier2

DM = "LeanDiffusionModelLoader"
TE = "LeanTextEncoderLoader"
DUAL = "LeanDualTextEncoderLoader"
FILES = {  # name in the host -> (folder, generator)
    "lean_zimage_tiny.safetensors": ("diffusion_models", families.zimage_tiny),
    "lean_flux2_klein_tiny.safetensors": ("diffusion_models", families.flux2_tiny),
    "lean_qwen_image_tiny.safetensors": ("diffusion_models", families.qwen_image_tiny),
    "lean_flux2_dev_tiny.safetensors": ("diffusion_models", families.flux2_dev_tiny),
    "lean_mistral3_24b_tiny.safetensors": ("text_encoders", families.mistral3_24b_tiny),
    "lean_qwen3_4b_tiny.safetensors": ("text_encoders", families.qwen3_4b_tiny),
    "lean_qwen25_7b_tiny.safetensors": ("text_encoders", families.qwen25_7b_tiny),
    "lean_sd15_clip_l.safetensors": ("text_encoders", families.sd15_clip_l),
    "lean_flux_t5_tiny.safetensors": ("text_encoders", flux_files.tiny_t5xxl),
    "lean_flux_clip_l_tiny.safetensors": ("text_encoders", flux_files.tiny_clip_l),
}
# family -> (diffusion model, text encoder, CLIPLoader type, empty-latent node and its size)
FAMILY = {
    "zimage": ("lean_zimage_tiny.safetensors", "lean_qwen3_4b_tiny.safetensors", "lumina2",
               ("EmptySD3LatentImage", 64)),
    "flux2": ("lean_flux2_klein_tiny.safetensors", "lean_qwen3_4b_tiny.safetensors", "flux2",
              ("EmptyFlux2LatentImage", 128)),
    "qwen_image": ("lean_qwen_image_tiny.safetensors", "lean_qwen25_7b_tiny.safetensors", "qwen_image",
                   ("EmptySD3LatentImage", 64)),
    # Flux.2-dev: the Flux2 DiT at dev's text width, Mistral Small 3.x (left padding, tekken tokenizer in the file)
    "flux2_dev": ("lean_flux2_dev_tiny.safetensors", "lean_mistral3_24b_tiny.safetensors", "flux2",
                  ("EmptyFlux2LatentImage", 128)),
}
MISSING_064 = families.MISSING_064
PROMPT = "a red cube on a wooden table, soft light"


LORAS = [("qwen_image", "peft"), ("qwen_image", "diffsynth"), ("qwen_image", "onetrainer"),
         ("qwen_image", "onetrainer_kohya"), ("zimage", "aitoolkit"), ("zimage", "onetrainer"),
         ("zimage", "onetrainer_comfy"), ("zimage", "onetrainer_kohya"), ("flux2", "aitoolkit"), ("flux2", "musubi"),
         ("flux2", "lokr")]


ZIMAGE_ONLY = {"LAYERS": ("layers.",), "REFINERS": ("noise_refiner.", "context_refiner.")}


def _lora_name(family, naming):
    return f"lean_{family}_lora_{naming}.safetensors"


def _files(base):
    for name, (folder, make) in FILES.items():
        harness.link_model(base, folder, make(), name)
    for family, naming in LORAS:
        harness.link_model(base, "loras", families.family_lora(family, naming), _lora_name(family, naming))
    for only in ZIMAGE_ONLY.values():
        harness.link_model(base, "loras", families.family_lora("zimage", "aitoolkit", only=only),
                           f"lean_zimage_lora_only_{only[0].strip('.')}.safetensors")


@pytest.fixture(scope="module")
def host(shared_hosts):
    with shared_hosts.use(setup=_files) as h:
        yield h


def _knows(host, family):
    """Skip (reason on the CI allow-list) where the host's CLIPLoader has no type for the family."""
    types = host.object_info("CLIPLoader")["input"]["required"]["type"][0]
    typ = FAMILY[family][2] if family in FAMILY else family
    if typ not in types or (family == "zimage" and "flux2" not in types):  # 0.3.64's lumina2 is Gemma-2 only
        pytest.skip(MISSING_064[family])


def _te_node(loader, clip_name, typ):
    if loader == "CLIPLoader":
        return {"class_type": "CLIPLoader", "inputs": {"clip_name": clip_name, "type": typ, "device": "default"}}
    return {"class_type": TE, "inputs": {"clip_name": clip_name, "type": typ, "device": "default",
                                         "load_mode": "mmap", "weight_dtype": "default"}}


def _encode(host, loader, clip_name, typ, name, prompt=PROMPT):
    g = {"c": _te_node(loader, clip_name, typ),
         "e": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["c", 0], "text": prompt}},
         "p": {"class_type": "TestProbe_lean", "inputs": {"name": name, "conditioning": ["e", 0]}}}
    entry = host.run(g)
    tensors, meta = probe_node.read(host.base, name)
    return tensors, meta, entry


def _assert_same_cond(ref, got):
    assert set(ref) == set(got), (sorted(ref), sorted(got))
    for k in ref:
        assert ref[k].shape == got[k].shape, (k, ref[k].shape, got[k].shape)
        assert torch.equal(ref[k], got[k]), f"{k}: max abs diff {(ref[k] - got[k]).abs().max().item()}"


def test_te_inputs_follow_cliploader(host):
    info = host.object_info()
    for lean, stock in ((TE, "CLIPLoader"), (DUAL, "DualCLIPLoader")):
        node, ref = info[lean], info[stock]
        assert node["category"] == "lean/loaders" and node["description"]
        req = dict(node["input"]["required"])
        sreq = {**ref["input"]["required"], **ref["input"].get("optional", {})}
        assert list(req)[:len(sreq)] == list(sreq), (list(req), list(sreq))
        assert list(req)[len(sreq):] == ["load_mode", "weight_dtype"]
        for k in sreq:
            assert req[k][0] == sreq[k][0], k  # the same options in the same order
        for k, spec in req.items():
            assert spec[1].get("tooltip"), k
        assert req["load_mode"][0] == info[DM]["input"]["required"]["load_mode"][0]  # one load_mode spec
        assert sum(1 for spec in req.values() if not spec[1].get("advanced")) <= 4
        assert node["output"] == ["CLIP", "STRING"]


TE_CASES = [("sd15_clip_l", "lean_sd15_clip_l.safetensors", "stable_diffusion"),
            ("zimage", "lean_qwen3_4b_tiny.safetensors", "lumina2"),
            ("flux2", "lean_qwen3_4b_tiny.safetensors", "flux2"),
            ("qwen_image", "lean_qwen25_7b_tiny.safetensors", "qwen_image"),
            ("flux2_dev", "lean_mistral3_24b_tiny.safetensors", "flux2")]


@pytest.mark.parametrize("case,clip_name,typ", TE_CASES, ids=[c[0] for c in TE_CASES])
def test_te_same_conditioning_as_cliploader(host, case, clip_name, typ):
    if case in MISSING_064:
        _knows(host, case)
    mark = len(host.log())
    ref, ref_meta, _ = _encode(host, "CLIPLoader", clip_name, typ, f"te_stock_{case}")
    got, got_meta, entry = _encode(host, TE, clip_name, typ, f"te_lean_{case}")
    log = host.log()[mark:]
    host.free()
    assert torch.isfinite(ref["cond.0.0"]).all() and ref["cond.0.0"].std() > 0
    _assert_same_cond(ref, got)
    assert ref_meta["keys"] == got_meta["keys"]
    if case == "qwen_image":
        assert ref["cond.0.0"].shape[-1] == 3584
    elif case in ("zimage", "flux2", "flux2_dev"):
        width = {"zimage": 2560, "flux2": 3 * 2560, "flux2_dev": 3 * 5120}[case]
        assert ref["cond.0.0"].shape[-1] == width, ref["cond.0.0"].shape
        assert "[lean test] tiny LLM fixture" in log, log[-2000:]
    text = entry["outputs"]["c"]["text"][0]
    assert clip_name in text and "clip: " in text and f"type {typ}" in text, text
    assert "peak RSS" in text and "model:" not in text, text


def test_dual_same_conditioning_as_dualcliploader(host):
    """Flux.1's two files: stock DualCLIPLoader(type flux) vs Load Dual Text Encoders (mmap): T5 tokens and
    CLIP-L's pooled output bit for bit."""
    files = {"clip_name1": "lean_flux_t5_tiny.safetensors", "clip_name2": "lean_flux_clip_l_tiny.safetensors",
             "type": "flux", "device": "default"}
    out = {}
    for loader in ("DualCLIPLoader", DUAL):
        inputs = dict(files)
        if loader == DUAL:
            inputs.update(load_mode="mmap", weight_dtype="default")
        name = f"dual_{loader}"
        host.run({"c": {"class_type": loader, "inputs": inputs},
                  "e": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["c", 0], "text": PROMPT}},
                  "p": {"class_type": "TestProbe_lean", "inputs": {"name": name, "conditioning": ["e", 0]}}})
        out[loader] = probe_node.read(host.base, name)[0]
    host.free()
    ref, got = out["DualCLIPLoader"], out[DUAL]
    assert ref["cond.0.0"].shape[-1] == 4096 and "pooled.0.0" in ref
    assert ref["cond.0.0"].std() > 0
    _assert_same_cond(ref, got)


def _sample_graph(family, loader, weight_dtype, name):
    dm, te, typ, (empty, size) = FAMILY[family]
    inputs = {"unet_name": dm, "weight_dtype": weight_dtype}
    if loader == DM:
        inputs["load_mode"] = "mmap"
    return {
        "m": {"class_type": loader, "inputs": inputs},
        "c": _te_node("CLIPLoader", te, typ),
        "e": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["c", 0], "text": PROMPT}},
        "l": {"class_type": empty, "inputs": {"width": size, "height": size, "batch_size": 1}},
        "s": {"class_type": "KSampler", "inputs": {"model": ["m", 0], "positive": ["e", 0], "negative": ["e", 0],
                                                   "latent_image": ["l", 0], "seed": 7, "steps": 1, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "p": {"class_type": "TestProbe_lean", "inputs": {"name": name, "latent": ["s", 0]}},
    }


MODEL_NAMES = {"zimage": "Lumina2 (ZImage)", "flux2": "Flux2 (Flux2)", "qwen_image": "QwenImage (QwenImage)",
               "flux2_dev": "Flux2 (Flux2)"}


# Qwen-Image fp8_e4m3fn is a variant on 0.3.64 (the only family it knows; fp8 loading runs there in
# test_tier2_flux.py): marker one_host, CI runs it on 0.33.0 only
@pytest.mark.parametrize("family,weight_dtype", [
    (f, d) if (f, d) != ("qwen_image", "fp8_e4m3fn") else pytest.param(f, d, marks=pytest.mark.one_host)
    for f in FAMILY for d in ("default", "fp8_e4m3fn")])
def test_dm_same_latent_as_unetloader(host, family, weight_dtype):
    if family in MISSING_064:
        _knows(host, family)
    mark = len(host.log())
    host.run(_sample_graph(family, "UNETLoader", weight_dtype, f"dm_stock_{family}_{weight_dtype}"))
    entry = host.run(_sample_graph(family, DM, weight_dtype, f"dm_lean_{family}_{weight_dtype}"))
    log = host.log()[mark:]
    host.free()
    ref = probe_node.read(host.base, f"dm_stock_{family}_{weight_dtype}")[0]["latent.0"]
    got = probe_node.read(host.base, f"dm_lean_{family}_{weight_dtype}")[0]["latent.0"]
    assert torch.isfinite(ref).all() and ref.std() > 0
    assert torch.equal(got, ref), f"max abs diff {(got - ref).abs().max().item()}"
    assert "keys missing" not in log and "has no place" not in log and "left over keys" not in log, log[-3000:]
    text = entry["outputs"]["m"]["text"][0]
    keys = {"zimage": families.zimage_keys, "flux2": families.flux2_keys, "qwen_image": families.qwen_image_keys,
            "flux2_dev": lambda: families.flux2_keys(context_in_dim=3 * 5120)}
    n = len(keys[family]()) + (2 if family == "flux2_dev" else 0)  # dev's guidance_in
    assert f"({n} of {n} tensors)" in text, text
    assert MODEL_NAMES[family] in text, text
    if weight_dtype == "fp8_e4m3fn":
        assert "weights float8_e4m3fn" in text, text
        name = f"dm_stock_{family}_default"
        if not (host.base / "output" / "probe" / f"{name}.safetensors").exists():
            host.run(_sample_graph(family, "UNETLoader", "default", name))
            host.free()
        ref_default = probe_node.read(host.base, name)[0]["latent.0"]
        assert not torch.equal(ref, ref_default)  # fp8 weights give another latent: the comparison sees weights


# ------------------------------------------------------------------ Prompt Batch on the LLM encoders
LONG = ("a lighthouse on a rocky coast at dusk, waves breaking on the rocks, warm light in the windows, " * 6).strip()
PB_PROMPTS = ["x", "a red cube on a wooden table", LONG]  # 1, 6 and ~110 words: very different token counts
# Flux.2 Klein: the host pads every prompt to 512 tokens; these go past it (~650 and ~900 tokens)
OVER_512 = ["x", " ".join([LONG] * 5), " ".join([LONG] * 7)]


SAMPLER = {"seed": 7, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}


def _stock_alone(g, texts, name, tag=""):
    """Add to `g` stock CLIPTextEncode(text i) sampled alone on image i's noise (LatentFromBatch of the graph's
    latent "l"), with the graph's model "m" and CLIP "c": node ids e/f/s/p + tag + i, probe f"{name}{i}"."""
    for i, text in enumerate(texts):
        e, f, k = f"e{tag}{i}", f"f{tag}{i}", f"s{tag}{i}"
        g[e] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["c", 0], "text": text}}
        g[f] = {"class_type": "LatentFromBatch", "inputs": {"samples": ["l", 0], "batch_index": i, "length": 1}}
        g[k] = {"class_type": "KSampler", "inputs": {**SAMPLER, "model": ["m", 0], "positive": [e, 0],
                                                     "negative": [e, 0], "latent_image": [f, 0]}}
        g[f"p{tag}{i}"] = {"class_type": "TestProbe_lean", "inputs": {"name": f"{name}{i}", "latent": [k, 0],
                                                                      "conditioning": [e, 0]}}


def _pb_graph(family, prompts=PB_PROMPTS):
    dm, te, typ, (empty, size) = FAMILY[family]
    g = {"m": {"class_type": "UNETLoader", "inputs": {"unet_name": dm, "weight_dtype": "default"}},
         "c": _te_node("CLIPLoader", te, typ),
         "l": {"class_type": empty, "inputs": {"width": size, "height": size, "batch_size": len(prompts)}}}
    g["b"] = {"class_type": "LeanPromptBatch", "inputs": {"clip": ["c", 0], "text": "\n".join(prompts),
                                                         "mode": "lines", "count": 16, "seed": 0, "prefix": "",
                                                         "suffix": "", "model": ["m", 0]}}
    g["s"] = {"class_type": "KSampler", "inputs": {**SAMPLER, "model": ["b", 4], "positive": ["b", 0],
                                                   "negative": ["b", 0], "latent_image": ["l", 0]}}
    g["p"] = {"class_type": "TestProbe_lean", "inputs": {"name": f"pb_{family}", "latent": ["s", 0],
                                                         "conditioning": ["b", 0]}}
    _stock_alone(g, prompts, f"pb_{family}_ref")  # stock: the prompt alone, on image i's noise
    return g


# Flux.2-dev (Mistral: no tokenizer padding): all under 512 tokens (~150-200 with the system prompt), so the model's
# own left padding to 512 covers them in one call.  Past 512 tokens dev takes the path Klein's OVER_512 case tests
# (padded at the start, the split keeps each row's last max(own, 512) tokens).
UNDER_512 = ["x", "a red cube on a wooden table", "a lighthouse on a rocky coast at dusk, waves breaking"]
PB_CASES = [("qwen_image", PB_PROMPTS), ("zimage", PB_PROMPTS), ("flux2", PB_PROMPTS), ("flux2", OVER_512),
            ("flux2_dev", UNDER_512)]


@pytest.mark.parametrize("family,prompts", PB_CASES,
                         ids=["qwen_image", "zimage", "flux2", "flux2-over-512", "flux2_dev"])
def test_prompt_batch_entry_equals_its_prompt_alone(host, family, prompts):
    """One KSampler pass over LeanPromptBatch's batch of prompts of very different lengths (its `model` output):
    image i equals stock CLIPTextEncode(prompt i) sampled alone on image i's noise, within 1e-4 of the latent's
    scale (the float summation order of a different batch or attention row; a padded prompt moves it by ~0.2 of
    its scale).  Qwen-Image on 0.33: shorter prompts zero-padded and masked (its attention reads the mask: one model
    call).  Flux.2 Klein up to 512 tokens: the host's tokenizer pads every prompt to 512, one shape already.
    Z-Image (its NextDiT drops the text mask and puts the image tokens after the text), Klein over 512 tokens and
    Qwen-Image on 0.3.64 (its attention ignores the mask): the padding would be read as content, so the `model`
    output runs each token length with its own text (nodes/_text_split.py).  Flux.2-dev (Mistral Small 3.x, whose
    tokenizer pads nothing): the model pads every prompt under 512 tokens with zeros at the start, and Prompt Batch
    pads the same way: prompts under 512 stay one model call, a longer one in the batch splits the call."""
    if family != "qwen_image":
        _knows(host, family)
    _check_prompt_batch(host, family, prompts)


def test_prompt_batch_lengths_and_per_image_loras_on_zimage(host):
    """The length split and the per-image LoRA branch together (Z-Image, prompts of three lengths, a LoRA tag on two
    of them): each image equals stock UNETLoader (-> LoraLoaderModelOnly at the tag's strength where its line has
    the tag) + CLIPTextEncode(the line without its tag) sampled alone on its noise, within 1e-4 of its scale.  The
    split's sub-calls tell the LoRA branch which entries their rows are (core/lora_rows.ROW_ENTRIES_KEY)."""
    _knows(host, "zimage")
    lora = _lora_name("zimage", "aitoolkit")
    tag = f"<lora:{lora.rsplit('.', 1)[0]}:{STRENGTH}>"
    clean = ["x", "a red cube on a wooden table", LONG.rstrip(",")]
    lines = [f"{clean[0]} {tag}", clean[1], f"{clean[2]} {tag}"]
    g = _pb_graph("zimage", lines)
    for i, text in enumerate(clean):  # stock references: the clean line, the LoRA where the line has the tag
        g[f"e{i}"]["inputs"]["text"] = text
        if tag in lines[i]:
            g[f"lo{i}"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["m", 0], "lora_name": lora,
                                                                         "strength_model": STRENGTH}}
            g[f"s{i}"]["inputs"]["model"] = [f"lo{i}", 0]
    _stock_alone(g, clean, "plain_zimage_", tag="plain")  # the same lines without any LoRA: the LoRA must show
    host.run(g)
    host.free()
    out = probe_node.read(host.base, "pb_zimage")[0]["latent.0"]
    refs = [probe_node.read(host.base, f"pb_zimage_ref{i}")[0]["latent.0"][0] for i in range(3)]
    plain = [probe_node.read(host.base, f"plain_zimage_{i}")[0]["latent.0"][0] for i in range(3)]
    for i, ref in enumerate(refs):
        scale = ref.abs().max().item()
        err = (out[i] - ref).abs().max().item()
        print(f"zimage + LoRA image {i}: max abs diff {err:.3g} on a scale of {scale:.3g}")
        assert err <= 1e-4 * max(1.0, scale), (i, err, scale)
        moved = (plain[i] - ref).abs().max().item()
        if tag in lines[i]:
            assert moved > 100 * max(err, 1e-6), (i, err, moved)  # the LoRA's effect is far above the tolerance
        else:
            assert moved == 0.0, (i, moved)


# text-encoder passes of Prompt Batch's encode, per family: "fewer" than one per prompt (and one for the empty prompt
# that pads, where one is encoded) where the encoder is one decoder-only LLM whose conditioning is per token
# (nodes/_host.causal_llm_encoder), with the prompts side by side in one row (_host.packed_llm_rows: "packed" in the
# log); Qwen-Image's encoder cuts its template from the first row only, so one pass per prompt; Klein's prompts are
# 512 tokens or more (its tokenizer pads them with the pad token: not side by side) and a pass holds at most 512
# tokens on the CPU (prompt_batch.LLM_PASSES)
PASSES = {"zimage": "fewer", "flux2_dev": "fewer", "qwen_image": "each", "flux2": "each"}
PACKED = {"zimage", "flux2_dev"}


def test_prompt_batch_llm_prompts_side_by_side_equal_each_alone(host):
    """Prompt Batch's encode with an LLM text encoder's prompts side by side in one row (nodes/_host.packed_llm_rows;
    lean_testlib.llm_pack, in the host's Python, on the tiny Qwen3-4B encoder as Z-Image's): each prompt's
    conditioning equals the host's own encode of the prompt alone within 1e-5 of its scale (float summation order
    only: the masked attention scores weigh exactly 0), in one pass for 9 prompts of 8-103 tokens, in several where
    a pass holds 64 tokens; where the host's call is refused or never reaches the hook, and where a prompt holds the
    pad token, the prompts are padded rows instead (no pass packed), with the same result.  Fails (checked) where
    the mask lets the prompts see each other, and where the hook is never called and that goes unnoticed (~1.0 of
    the scale).  Positions not started again per prompt move it only by float rounding (1.7e-6: the host's RoPE
    depends on relative positions), so they restart as in the prompt alone without a check that could tell."""
    _knows(host, "zimage")
    res = inproc.run_json("llm_pack")
    cases = {c["name"]: c for c in res["cases"]}
    assert list(cases) == ["side by side", "small passes", "refused", "not called", "a pad token in a prompt"]
    for c in cases.values():
        print(c)
        assert c["max_rel"] <= 1e-5, c
    assert len(set(cases["side by side"]["lengths"])) == 9  # the prompts really differ in length
    assert cases["side by side"]["passes"] == cases["side by side"]["packed"] == 1
    small = cases["small passes"]
    short = [n for n in small["lengths"] if n <= 64]  # a longer prompt has a pass of its own
    assert small["passes"] >= len(small["lengths"]) - len(short) + sum(short) / 64, small
    assert 1 <= small["packed"] < small["passes"], small
    for name in ("refused", "not called", "a pad token in a prompt"):
        assert cases[name]["packed"] == 0 and cases[name]["passes"] >= 1, cases[name]
    assert res["pad_in_row"]


def _check_prompt_batch(host, family, prompts):
    mark = len(host.log())
    entry = host.run(_pb_graph(family, prompts))
    host.free()
    said = "\n".join(entry["outputs"]["b"]["text"])
    found = re.findall(r"LeanPromptBatch: (\d+) prompts, (\d+) text-encoder pass", host.log()[mark:])
    assert len(found) == 1, found
    count, passes = map(int, found[0])
    got, meta = probe_node.read(host.base, f"pb_{family}")
    # one more encode for the empty prompt that pads, except where the padding is masked (Qwen-Image on 0.33) or
    # zeros at the start (Flux.2)
    encodes = count + (0 if family.startswith("flux2") or "mask.0.0" in got else 1)
    print(f"{family}: {count} prompts, {passes} text-encoder passes for {encodes} encodes")
    assert count == len(prompts)
    assert passes < encodes if PASSES[family] == "fewer" else passes == encodes, (family, passes, encodes)
    packed = re.findall(r"text-encoder pass\(es\) \((\d+) packed", host.log()[mark:])
    assert (len(packed) == 1 and 1 <= int(packed[0]) <= passes) if family in PACKED else not packed, packed
    out = got["latent.0"]
    assert out.shape[0] == len(prompts)
    refs = [probe_node.read(host.base, f"pb_{family}_ref{i}")[0] for i in range(len(prompts))]
    lengths = [r["cond.0.0"].shape[1] for r in refs]
    if family == "flux2" and prompts is PB_PROMPTS:
        assert set(lengths) == {512}, lengths
    else:
        assert len(set(lengths)) == len(prompts), lengths  # the prompts really differ in length
        assert got["cond.0.0"].shape[1] == max(lengths)  # padded to the longest
        if family == "flux2":
            assert min(lengths[1:]) > 512, lengths
        if family == "flux2_dev":  # under 512 tokens, padded at the start as the model does: one call
            assert max(lengths) < 512, lengths
            assert "tokens padded at the start with zeros" in said and "runs each length" not in said, said
        if family == "flux2" and prompts is OVER_512:  # padded at the start: each row keeps its last tokens
            assert "the model runs each length on its own text (3 calls per step)" in said, said
    if family == "qwen_image" and "mask.0.0" in got:  # 0.33's Qwen-Image reads the mask: own tokens, rest masked
        mask = got["mask.0.0"]
        assert mask.shape == (len(prompts), max(lengths))
        assert [int(m.sum()) for m in mask] == lengths
    for i, r in enumerate(refs):
        ref = r["latent.0"][0]
        scale = ref.abs().max().item()
        err = (out[i] - ref).abs().max().item()
        others = min((out[j] - ref).abs().max().item() for j in range(len(prompts)) if j != i)
        print(f"{family} image {i}: {lengths[i]} tokens, max abs diff {err:.3g} on a scale of {scale:.3g}, "
              f"nearest other image {others:.3g}")
        assert err <= 1e-4 * max(1.0, scale), (i, err, scale)
        assert others > 100 * max(err, 1e-6), (i, err, others)  # the check tells the prompts apart


# ------------------------------------------------------------------ LoRA (dynamic) against stock LoraLoaderModelOnly
STRENGTH = 0.8


@pytest.mark.parametrize("family,naming", LORAS, ids=[f"{f}-{n}" for f, n in LORAS])
def test_lora_equals_stock(host, family, naming):
    """A LoRA in a trainer's naming: stock LoraLoaderModelOnly maps every key (no "lora key not loaded"), and
    LeanLoraLoader (the dynamic branch, CLIP None, strength_clip 0) gives its latent within 1e-3 of the scale, on
    Load Diffusion Model (mmap)'s model; the LoRA changes the result.  LoKr (Flux.2): not low-rank, so LeanLoraLoader
    hands it to the host's own patching, and says so in its report."""
    if family in MISSING_064:
        _knows(host, family)
    lora = _lora_name(family, naming)
    names = {k: f"lora_{family}_{naming}_{k}" for k in ("base", "stock", "lean")}
    mark = len(host.log())
    for kind, name in names.items():
        g = _sample_graph(family, DM, "default", name)
        if kind == "stock":
            g["x"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["m", 0], "lora_name": lora,
                                                                      "strength_model": STRENGTH}}
        elif kind == "lean":
            g["nc"] = {"class_type": "TestNoneClip_lean", "inputs": {}}
            g["x"] = {"class_type": "LeanLoraLoader", "inputs": {"model": ["m", 0], "clip": ["nc", 0],
                                                                 "lora_name": lora, "strength_model": STRENGTH,
                                                                 "strength_clip": 0.0, "schedule": "",
                                                                 "block_weights": ""}}
        if kind != "base":
            g["s"]["inputs"]["model"] = ["x", 0]
        entry = host.run(g)
        if kind == "stock":
            log = host.log()[mark:]
            assert "lora key not loaded" not in log, [x for x in log.splitlines() if "lora key not loaded" in x][:5]
        if kind == "lean" and naming == "lokr":
            report = json.dumps(entry.get("outputs", {}))
            assert "host patching" in report, report[:2000]
    host.free()
    base, stock, lean = (probe_node.read(host.base, names[k])[0]["latent.0"] for k in ("base", "stock", "lean"))
    scale = max(1.0, stock.abs().max().item())
    assert (stock - base).abs().max() > 1e-2 * scale, "the LoRA changed nothing: the comparison would not see it"
    err = (lean - stock).abs().max().item()
    assert err <= 1e-3 * scale, err


@pytest.mark.parametrize("preset", list(ZIMAGE_ONLY))
def test_zimage_block_weight_preset_equals_stock_on_filtered_file(host, preset):
    """Z-Image block weights: LeanLoraLoader with the preset (LAYERS: L0.., refiners 0; REFINERS: the reverse)
    equals stock LoraLoaderModelOnly on the same LoRA filtered to those blocks' modules, within 1e-3; the preset
    differs from the whole LoRA (the blocks it drops matter)."""
    _knows(host, "zimage")
    filtered = f"lean_zimage_lora_only_{ZIMAGE_ONLY[preset][0].strip('.')}.safetensors"
    names = {k: f"bw_zimage_{preset}_{k}" for k in ("stock", "lean", "full")}
    for kind, name in names.items():
        g = _sample_graph("zimage", DM, "default", name)
        if kind == "stock":
            g["x"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["m", 0], "lora_name": filtered,
                                                                      "strength_model": STRENGTH}}
        else:
            g["nc"] = {"class_type": "TestNoneClip_lean", "inputs": {}}
            g["x"] = {"class_type": "LeanLoraLoader", "inputs": {
                "model": ["m", 0], "clip": ["nc", 0], "lora_name": _lora_name("zimage", "aitoolkit"),
                "strength_model": STRENGTH, "strength_clip": 0.0, "schedule": "",
                "block_weights": preset if kind == "lean" else ""}}
        g["s"]["inputs"]["model"] = ["x", 0]
        host.run(g)
    host.free()
    stock, lean, full = (probe_node.read(host.base, names[k])[0]["latent.0"] for k in ("stock", "lean", "full"))
    scale = max(1.0, stock.abs().max().item())
    assert (full - stock).abs().max() > 1e-2 * scale, "the preset drops nothing the comparison would see"
    err = (lean - stock).abs().max().item()
    assert err <= 1e-3 * scale, err


# ------------------------------------------------------------------ LoRA from Prompt Tags and schedules
TAGGED = [("zimage", "aitoolkit"), ("flux2", "musubi"), ("qwen_image", "peft")]


def _steps_graph(family, name, lora=None, segments=None, steps=4):
    """Load Diffusion Model (mmap) -> (lora: (class_type, inputs), as node "x") -> KSamplerAdvanced on the family's
    flow-matching sampling (euler, simple) -> probe; segments: [(model ref, start step, end step)] for a chain."""
    g = _sample_graph(family, DM, "default", name)
    del g["s"]
    model = ["m", 0] if lora is None else graphs.add_lora(g, lora, ["m", 0], "x")
    g["p"]["inputs"]["latent"] = graphs.sampler_segments(g, segments or [(model, 0, 10000)], ["e", 0], ["e", 0],
                                                         ["l", 0], seed=7, steps=steps)
    return g


# sampling steps of the schedule check: 4 (they start at 0, 1/4, 1/2 and 3/4 of the sampling); Z-Image 2 (0 and 1/2:
# a step of its 3840-wide DiT costs ~2.2 s on the CPU, and SWITCH still falls between two steps)
SCHED_STEPS = {"zimage": 2}
SWITCH = 0.4  # where the checked schedule (and the tag's start=) turns the LoRA on


@pytest.mark.one_host  # 0.3.64 knows only Qwen-Image, whose tags and schedules are variants of test_tier2_lora.py's
@pytest.mark.parametrize("family,naming", TAGGED, ids=[f for f, _ in TAGGED])
def test_tags_and_schedules_equal_stock(host, family, naming):
    """LoRA from Prompt Tags and a strength schedule on the family's flow-matching sampling (euler, simple, 4 steps,
    which start at 0, 1/4, 1/2 and 3/4 of the sampling; Z-Image 2, at 0 and 1/2): the tag <lora:name:0.8> equals
    stock LoraLoaderModelOnly at 0.8; LeanLoraLoader's schedule 0 before 0.4 and 1 from there, and the tag's
    start=0.4, equal stock KSamplerAdvanced on the plain model for the steps that start before 0.4 (0-2; Z-Image 0-1),
    then the LoRA at 1 for the rest; all within 1e-3 of the latent's scale, and the schedule changes the result (the
    comparison sees it)."""
    if family in MISSING_064:
        _knows(host, family)
    lora = _lora_name(family, naming)
    stem = lora[:-len(".safetensors")]
    steps = SCHED_STEPS.get(family, 4)
    first = sum(1 for i in range(steps) if i / steps < SWITCH)  # the steps that start before the switch: plain
    full = ("LoraLoaderModelOnly", {"lora_name": lora, "strength_model": 1.0})

    def g_(lora_node, segments=None):
        return _steps_graph(family, "", lora_node, segments=segments, steps=steps)
    graphs = {
        "tag_stock": g_(("LoraLoaderModelOnly", {"lora_name": lora, "strength_model": STRENGTH})),
        "tag_lean": g_(("LeanLoraTags", {"text": f"{PROMPT} <lora:{stem}:{STRENGTH}>"})),
        "sched_stock": g_(full, segments=[(["m", 0], 0, first), (["x", 0], first, 10000)]),
        "sched_full": g_(full),
        "sched_lean": g_(("LeanLoraLoader", {
            "lora_name": lora, "strength_model": 1.0, "strength_clip": 0.0, "schedule": f"0:0,{SWITCH}:0,{SWITCH}:1,1:1",
            "block_weights": ""})),
        "sched_tag": g_(("LeanLoraTags", {"text": f"<lora:{stem}:1:start={SWITCH}>"})),
    }
    out = {}
    for kind, g in graphs.items():
        name = f"tags_{family}_{kind}"
        g["p"]["inputs"]["name"] = name
        host.run(g)
        out[kind] = probe_node.read(host.base, name)[0]["latent.0"]
    host.free()
    for got, ref, what in (("tag_lean", "tag_stock", "tag"), ("sched_lean", "sched_stock", "schedule"),
                           ("sched_tag", "sched_stock", "tag start=0.4")):
        scale = max(1.0, out[ref].abs().max().item())
        err = (out[got] - out[ref]).abs().max().item()
        assert err <= 1e-3 * scale, (what, err, scale)
    # the schedule's effect exceeds the tolerance three times over (Flux.2's tiny LoRA moves the latent by ~4e-3 of
    # its scale in the first two steps), so a schedule applied as a constant fails the comparison above
    scale = max(1.0, out["sched_full"].abs().max().item())
    diff = (out["sched_full"] - out["sched_stock"]).abs().max().item()
    assert diff > 3e-3 * scale, ("the schedule changes too little for the comparison to see it", diff, scale)
