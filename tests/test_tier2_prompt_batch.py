"""Tier 2: LeanPromptBatch inside a real ComfyUI, checked against the host's stock nodes.

The host for this module gets a test-only probe node (tests/lean_testlib/probe_node.py, not part of
the pack) that writes the CONDITIONING / LATENT / STRING values it receives to output/probe/, so the
batch can be compared tensor by tensor with stock CLIPTextEncode.  The checkpoint is the SD1.5 fixture's narrow
variant (lean_testlib.sd15.NARROW: SD1.5's CLIP-L and VAE, its UNet's keys and blocks at 320 channels) and the LoRA
its kohya LoRA: what is checked is the text encoder's batch and the rows of one sampler pass.
"""
import itertools
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lean_testlib import graphs, harness, inproc, lora, probe_node, sd15

pytestmark = pytest.mark.tier2

CKPT = "lean_sd15.safetensors"
L = 77


def _setup(base, yaml):
    probe_node.install(base)
    harness.link_model(base, "checkpoints", sd15.sd15_checkpoint(narrow=True), CKPT)
    harness.link_model(base, "loras", lora.sd15_lora(narrow=True), "lean_lora.safetensors")
    wc = base / "models" / "wildcards"
    (wc / "scenes").mkdir(parents=True, exist_ok=True)
    (wc / "colors.txt").write_text("# colours\nred\ngreen\nblue\n")
    (wc / "scenes" / "place.txt").write_text("on a beach\nin a forest\n")
    (wc / "loop.txt").write_text("a __loop__\n")
    (base / "secret.txt").write_text("TOP SECRET\n")
    # a second wildcards folder, declared the way users do it: extra_model_paths.yaml
    extra = base / "extra_wc"
    extra.mkdir()
    (extra / "shapes.txt").write_text("cube\nsphere\n")
    yaml.write_text(f"lean_test:\n  base_path: {base}\n  wildcards: extra_wc\n")
    (base / "input" / "prompt_list.txt").write_text("# from a file\na cat from the file\na dog from the file\n")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A host of its own: wildcards in two folders, the second declared in an extra_model_paths.yaml given at
    start."""
    yaml = tmp_path_factory.mktemp("pb_paths") / "extra_model_paths.yaml"  # written by _setup (base_path: base)
    with harness.own_host(tmp_path_factory, "pb_base", setup=lambda b: _setup(b, yaml),
                          extra_args=["--extra-model-paths-config", str(yaml)]) as h:
        yield h


def probe(name, src_node, out_index=0, kind="conditioning"):
    return {"class_type": "TestProbe_lean", "inputs": {"name": name, kind: [src_node, out_index]}}


def lean_batch(text, clip=("ck", 1), mode="lines", count=16, seed=0, prefix="", suffix="", **extra):
    return {"class_type": "LeanPromptBatch", "inputs": {"clip": list(clip), "text": text, "mode": mode,
                                                        "count": count, "seed": seed, "prefix": prefix,
                                                        "suffix": suffix, **extra}}


def stock_encode(text, clip=("ck", 1)):
    return {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": list(clip)}}


def ckpt():
    return {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}


LONG = ", ".join(["word"] * 45)  # 90 tokens: 2 chunks
LONGER = ", ".join(["thing"] * 90)  # 180 tokens: 3 chunks
PROMPTS = [
    "a red cube on a table",
    "(a green sphere:1.3) in a (dark:0.6) room",
    LONG,
    "a small house, " + LONGER,
    "(masterpiece:1.2), " + LONG + ", (blurry:0.5)",
    "x",
    "a red cube on a table",  # a repeat, and a prompt whose first chunk equals prompt 2's first chunk:
    LONG + ", a cat",         # identical chunks are encoded once and shared
]


def test_node_contract(host):
    info = host.object_info("LeanPromptBatch")
    assert list(info["input"]["required"]) == ["clip", "text", "mode", "count", "seed", "prefix", "suffix"]
    # new inputs and outputs only at the end (participant/latent of the distributed batch, then model of per-image
    # LoRAs): saved workflows keep their links
    assert list(info["input"]["optional"]) == ["text_file", "guidance", "participant", "latent", "model"]
    assert info["input"]["required"]["mode"][0] == ["lines", "random", "combinatorial"]
    assert info["input"]["required"]["text"][1]["dynamicPrompts"] is False  # the browser must not expand {a|b}
    assert "prompt_list.txt" in info["input"]["optional"]["text_file"][0]
    assert info["output"] == ["CONDITIONING", "STRING", "INT", "LATENT", "MODEL"]
    assert info["output_is_list"] == [False, True, False, False, False]
    assert info["display_name"] == "Prompt Batch (wildcards)"
    assert info["category"].startswith("lean/") and info["description"]


def _close(a, b, what):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= 1e-4 * max(1.0, b.abs().max().item()), f"{what}: max abs diff {err}"


def test_every_entry_equals_stock_clip_text_encode(host):
    g = {"ck": ckpt(), "pb": lean_batch("\n".join(PROMPTS)), "pbp": probe("batch", "pb"),
         "pbs": probe("batch_strings", "pb", 1, "strings"), "pbn": probe("batch_n", "pb", 2, "number"),
         "e": stock_encode(""), "ep": probe("empty", "e"),
         # CLIPSetLastLayer(-2) path (clip skip): the batch must follow the clip's layer setting too
         "skip": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["ck", 1], "stop_at_clip_layer": -2}},
         "pb2": lean_batch("\n".join(PROMPTS[:3]), clip=("skip", 0)), "pb2p": probe("batch_skip", "pb2")}
    # a LoRA on the text encoder (the kohya fixture, strength 4 so its effect is plain)
    g["lo"] = {"class_type": "LoraLoader", "inputs": {"model": ["ck", 0], "clip": ["ck", 1],
                                                      "lora_name": "lean_lora.safetensors",
                                                      "strength_model": 1.0, "strength_clip": 4.0}}
    g["pb3"] = lean_batch("\n".join(PROMPTS[:3]), clip=("lo", 1))
    g["pb3p"] = probe("batch_lora", "pb3")
    for i in range(3):
        g[f"lo{i}"] = stock_encode(PROMPTS[i], clip=("lo", 1))
        g[f"lo{i}p"] = probe(f"lora_{i}", f"lo{i}")
    for i, p in enumerate(PROMPTS):
        g[f"s{i}"] = stock_encode(p)
        g[f"s{i}p"] = probe(f"stock_{i}", f"s{i}")
        if i < 3:
            g[f"k{i}"] = stock_encode(p, clip=("skip", 0))
            g[f"k{i}p"] = probe(f"skip_{i}", f"k{i}")
    host.run(g)

    t, meta = probe_node.read(host.base, "batch")
    assert meta["executions"]["conditioning"] == 1
    cond, pooled = t["cond.0.0"], t["pooled.0.0"]
    stock = [probe_node.read(host.base, f"stock_{i}")[0] for i in range(len(PROMPTS))]
    lengths = [s["cond.0.0"].shape[1] for s in stock]
    assert sorted(set(lengths)) == [L, 2 * L, 3 * L], lengths  # the prompts really have 1, 2 and 3 chunks
    n = len(PROMPTS)
    assert cond.shape == (n, max(lengths), 768) and pooled.shape == (n, 768)
    empty = probe_node.read(host.base, "empty")[0]["cond.0.0"][0]
    assert empty.shape == (L, 768)
    for i, s in enumerate(stock):
        T = lengths[i]
        _close(cond[i, :T], s["cond.0.0"][0], f"prompt {i} cond")
        _close(pooled[i], s["pooled.0.0"][0], f"prompt {i} pooled")
        for start in range(T, cond.shape[1], L):  # padding: the encoded empty prompt, never zeros
            _close(cond[i, start:start + L], empty, f"prompt {i} padding at {start}")
            assert cond[i, start:start + L].abs().amax(dim=-1).min() > 0
    # the entries really differ (so the comparisons above can fail)
    for i, j in itertools.combinations(range(n), 2):
        if PROMPTS[i] != PROMPTS[j]:
            assert not torch.allclose(cond[i], cond[j], atol=1e-3), (i, j)
    assert probe_node.read(host.base, "batch_strings")[1]["strings"] == PROMPTS
    assert probe_node.read(host.base, "batch_n")[1]["number"] == [n]

    skip = probe_node.read(host.base, "batch_skip")[0]
    for i in range(3):
        s = probe_node.read(host.base, f"skip_{i}")[0]
        T = s["cond.0.0"].shape[1]
        _close(skip["cond.0.0"][i, :T], s["cond.0.0"][0], f"clip-skip prompt {i}")
        _close(skip["pooled.0.0"][i], s["pooled.0.0"][0], f"clip-skip prompt {i} pooled")
    assert not torch.allclose(skip["cond.0.0"][0, :L], cond[0, :L], atol=1e-3), "CLIPSetLastLayer had no effect"

    with_lora = probe_node.read(host.base, "batch_lora")[0]
    for i in range(3):
        s = probe_node.read(host.base, f"lora_{i}")[0]
        T = s["cond.0.0"].shape[1]
        _close(with_lora["cond.0.0"][i, :T], s["cond.0.0"][0], f"LoRA prompt {i}")
        _close(with_lora["pooled.0.0"][i], s["pooled.0.0"][0], f"LoRA prompt {i} pooled")
    assert (with_lora["cond.0.0"][0, :L] - cond[0, :L]).abs().max() > 1e-3, "the LoRA had no effect"


SIXTEEN = [f"a {c} {s} {extra}" for c, s, extra in zip(
    ["red", "green", "blue", "yellow"] * 4,
    ["cube", "sphere", "cone", "torus", "house", "tree", "car", "boat"] * 2,
    ["", LONG, "", "at night", "", LONGER, "", ""] * 2)]


# a variant of test_every_entry_equals_stock_clip_text_encode, which runs on both hosts (CI runs it on 0.33.0 only)
@pytest.mark.one_host
def test_sixteen_prompts_one_sampler_pass_sixteen_different_images(host):
    text = "\n".join(SIXTEEN)
    g = graphs.prompt_batch_txt2img(text, ckpt=CKPT, prefix="pb16")
    g["lp"] = probe("sampler_out", "5", 0, "latent")
    # stock references for a few entries: same noise (LatentFromBatch keeps the batch index), the
    # prompt encoded by CLIPTextEncode and padded with stock ConditioningConcat("") to the batch length
    chunks = {0: 1, 1: 2, 5: 3}  # SIXTEEN[1] has LONG (2 chunks), SIXTEEN[5] LONGER (3 chunks)
    graphs.add_stock_references(g, SIXTEEN, chunks, 3, "ref_")
    entry = host.run(g)

    files = [f for f in host.output_files(entry) if f.name.startswith("pb16")]
    assert len(files) == 16, files
    imgs = [np.asarray(Image.open(f), dtype=np.int16) for f in sorted(files)]
    assert all(im.shape == (64, 64, 3) for im in imgs)
    for a, b in itertools.combinations(range(16), 2):
        assert np.abs(imgs[a] - imgs[b]).mean() > 0.5, f"images {a} and {b} are the same"

    lat, meta = probe_node.read(host.base, "sampler_out")
    assert meta["executions"]["latent"] == 1, "KSampler ran more than once"
    batch = lat["latent.0"]
    assert batch.shape == (16, 4, 8, 8)
    for i in chunks:
        ref = probe_node.read(host.base, f"ref_{i}")[0]["latent.0"][0]
        err = (batch[i] - ref).abs().max().item()
        assert err < 1e-3 * max(1.0, ref.abs().max().item()), f"latent {i} differs from the stock path by {err}"
        other = (batch[(i + 3) % 16] - ref).abs().max().item()
        assert other > 100 * max(err, 1e-6), "the reference would also match another entry"


def test_wildcards_from_models_folder_and_extra_model_paths(host):
    text = "a __colors__ __shapes__ __scenes/place__"
    g = {"ck": ckpt(), "pb": lean_batch(text, mode="random", count=12, seed=5, prefix="{photo|drawing}"),
         "ps": probe("wild", "pb", 1, "strings"), "pn": probe("wild_n", "pb", 2, "number"),
         # the documented way to see every prompt: stock Preview Any runs once per list item, in order
         "pv": {"class_type": "PreviewAny", "inputs": {"source": ["pb", 1]}}}
    entry = host.run(g)
    got = probe_node.read(host.base, "wild")[1]["strings"]
    assert entry["outputs"]["pv"]["text"] == got
    assert len(got) == 12 and probe_node.read(host.base, "wild_n")[1]["number"] == [12]
    allowed = {f"{p}, a {c} {s} {pl}" for p in ("photo", "drawing") for c in ("red", "green", "blue")
               for s in ("cube", "sphere") for pl in ("on a beach", "in a forest")}
    assert set(got) <= allowed, set(got) - allowed
    assert len(set(got)) > 3
    # both folders are read: the colours live in models/wildcards, the shapes only in the extra_model_paths one
    assert {c for c in ("red", "green", "blue") if any(f" {c} " in x for x in got)} and \
        {s for s in ("cube", "sphere") if any(f" {s} " in x for x in got)}
    # the seed is all that matters: after the host drops its cached outputs, seed 5 draws the same list again
    # and seed 6 another
    host.free()
    again = {"ck": ckpt(), "pb": lean_batch(text, mode="random", count=12, seed=5, prefix="{photo|drawing}"),
             "ps": probe("wild_again", "pb", 1, "strings")}
    host.run(again)
    assert probe_node.read(host.base, "wild_again")[1]["strings"] == got
    again["pb"]["inputs"]["seed"] = 6
    again["ps"]["inputs"]["name"] = "wild_other"
    host.run(again)
    assert probe_node.read(host.base, "wild_other")[1]["strings"] != got


def test_text_file_from_input_folder(host):
    g = {"ck": ckpt(), "pb": lean_batch("", text_file="prompt_list.txt"), "ps": probe("file", "pb", 1, "strings")}
    host.run(g)
    assert probe_node.read(host.base, "file")[1]["strings"] == ["a cat from the file", "a dog from the file"]


@pytest.mark.parametrize("inputs, message", [
    (dict(text="  \n# only a comment\n"), "no prompt"),
    (dict(text="a __colours__ cube"), "unknown wildcard __colours__.*Close matches: __colors__"),
    (dict(text="x __../../secret__"), "__../../secret__ is refused"),
    (dict(text="x __loop__"), r"cycle: __loop__ -> __loop__"),
    (dict(text="{a|b|c} {d|e|f}", mode="combinatorial", count=4), "would make 9 prompts, more than count=4"),
    (dict(text="a {b|c"), "never closed"),
])
def test_bad_input_gives_a_clear_error_and_the_server_keeps_running(host, inputs, message):
    import re
    before = sorted(p.name for p in (host.base / "output").iterdir())
    g = {"ck": ckpt(), "pb": lean_batch(**{"text": "", **inputs}), "ps": probe("err", "pb", 1, "strings")}
    entry = host.run(g, expect_error=True)
    err = host.error_text(entry)
    assert "LeanPromptBatch" in err and re.search(message, err), err
    assert "TOP SECRET" not in err
    assert host.alive() and host.get("/system_stats")
    assert sorted(p.name for p in (host.base / "output").iterdir()) == before


def test_none_clip_is_a_clear_error(host):
    g = {"nc": {"class_type": "TestNoneClip_lean", "inputs": {}}, "pb": lean_batch("a cat", clip=("nc", 0)),
         "ps": probe("none", "pb", 1, "strings")}
    entry = host.run(g, expect_error=True)
    assert "clip input is None" in host.error_text(entry)
    assert host.alive()


def test_preview_route_counts_without_running(host):
    import urllib.parse

    def get(**q):
        return host.request("/lean/prompt_batch/preview?" + urllib.parse.urlencode(q))

    assert get(text="a\nb\n# c", mode="lines") == (200, {"count": 2, "mode": "lines", "cap": 16, "over_cap": False,
                                                         "at_least": False})
    status, body = get(text="{a|b} __colors__ __shapes__", mode="combinatorial", count=8)
    assert status == 200 and body["count"] == 12 and body["over_cap"] is True
    status, body = get(text="x", mode="lines", text_file="prompt_list.txt")
    assert (status, body["count"]) == (200, 3)
    status, body = get(text="x __../../secret__", mode="lines")
    assert status == 400 and "refused" in body["error"] and "TOP SECRET" not in str(body)
    status, body = get(text="x", text_file="../secret.txt")
    assert status == 400 and "refused" in body["error"] and "TOP SECRET" not in str(body)
    status, body = get(text="__loop__", mode="random")
    assert status == 400 and "cycle" in body["error"]


def test_sdxl_layout_two_encoders_and_fallback_path():
    """SDXL's text encoder (the host's SDXLClipModel: CLIP-L and CLIP-G, cond concatenated on channels,
    pooled output from CLIP-G), shrunk to 3 layers with random weights, in a subprocess with the
    host's modules.  Both the one-pass batch and the one-by-one fallback path equal stock CLIPTextEncode per
    prompt (padded with the encoded empty prompt)."""
    import json
    import os
    import subprocess

    harness.require_host()
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-m", "lean_testlib.sdxl_tiny"], cwd=tests_dir, env=env,
                       capture_output=True, text=True, timeout=600)
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT_JSON ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT_JSON "):])
    assert res["shape"] == [5, 3 * L, 32 + 64], res["shape"]  # CLIP-L 32 + CLIP-G 64 channels, 3 chunks
    assert res["pooled_shape"] == [5, 64]  # CLIP-G's pooled output, as stock SDXL
    assert res["stats"]["passes"] == 1 and res["stats"]["rows"] == 8  # 8 chunks + the empty one - 1 repeat
    assert [p["tokens"] for p in res["prompts"]] == [L, L, 2 * L, 3 * L, L]
    assert res["each_shape"] == res["shape"]
    for i, p in enumerate(res["prompts"]):
        tol = 1e-4 * max(1.0, p["scale"])
        for path in (p, p["each"]):
            assert path["cond_err"] <= tol and path["pad_err"] <= tol and path["pooled_err"] <= tol, (i, p)
    assert res["distinct_0_1"] > 1.0


def test_per_entry_text_encoder_loras_keep_qwen_image_masked_padding():
    """Qwen-Image's path (its model reads the text mask, so prompts are zero-padded and masked) with a different
    text-encoder LoRA set per entry (issue 23): the groups' entries are merged with the same masked padding, to the
    whole batch's length also for a participant's share (lean_testlib.masked_groups: a stand-in encoder, the
    reference written by hand)."""
    res = inproc.run_json("masked_groups")
    assert [c["name"] for c in res["cases"]] == ["whole batch", "participant 2-3", "participant 1-2"]
    for c in res["cases"]:
        assert c["shape"][1] == 12 and c["cond_equal"] and c["mask_equal"], c


def test_length_split_runs_each_entry_with_its_own_prompt_length():
    """Prompt Batch's length split (nodes/_text_split.py, for models that read text padding: Z-Image, Flux.2 over 512
    tokens) on the layouts the host's sampler makes (lean_testlib.text_split: a stand-in model whose output reads
    every text token; the reference written by hand row by row): rows of the batch's entry e see e's own tokens,
    other rows of the same width (a negative) their own text; cond + uncond chunks, a latent batch of 2N, a
    batch-axis context window; a call not from the sampler stays whole; Lumina2's num_tokens and a text mask are cut;
    each sub-call names its rows' entries for the per-image LoRA branch."""
    res = inproc.run_json("text_split")
    assert [c["name"] for c in res["cases"]] == ["cond only", "cond + uncond of the same width", "latent batch of 2N",
                                                 "context window", "not from the sampler",
                                                 "num_tokens and attention_mask"]
    for c in res["cases"]:
        assert c["equal"] and c["entries_ok"] and c["calls"] == c["expect_calls"], c
