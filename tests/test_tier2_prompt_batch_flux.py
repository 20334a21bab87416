"""Tier 2: LeanPromptBatch on Flux's text encoder (the host's FluxClipModel: T5-XXL + CLIP-L, shrunk, random
weights: lean_testlib.flux_te_tiny), in a subprocess with the host's modules.

Every entry of the batch is checked against stock CLIPTextEncode and CLIPTextEncodeFlux (same text in clip_l and
t5xxl) of its prompt alone, with prompts whose T5 sequences have different lengths (256, ~300, ~600 tokens) and a
prompt of two CLIP-L chunks; one KSampler pass on the tiny Flux diffusion model gives N different latents, each
equal to stock sampling of its prompt alone.
"""
import json
import os
import subprocess
import sys

import pytest

from lean_testlib import harness

pytestmark = pytest.mark.tier2


def _run(mode):
    harness.require_host()
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-m", "lean_testlib.flux_te_tiny", mode], cwd=tests_dir, env=env,
                       capture_output=True, text=True, timeout=900)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT_JSON ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT_JSON "):])


def test_flux_every_entry_equals_stock_clip_text_encode_and_clip_text_encode_flux():
    res = _run("encode")
    prompts = res["prompts"]
    t5 = [p["tokens"] for p in prompts]
    # the prompts really differ in T5 length: Flux pads to 256, longer prompts are never cut
    assert t5[0] == 256 and 256 < t5[2] < 512 and t5[4] > 512, t5
    assert [p["clip_chunks"] for p in prompts][-1] == 2  # a prompt of two CLIP-L chunks, one T5 sequence
    assert res["shape"] == [len(prompts), max(t5), 64] and res["pooled_shape"] == [len(prompts), 768]
    assert res["texts_ok"] and res["n"] == len(prompts)
    # batched: one text-encoder call per T5 length (256, ~300, ~600), the repeated prompt encoded once
    assert res["encode_calls"] == 3 and res["stats"]["passes"] == 3 and res["stats"]["rows"] == 7, res["stats"]
    assert res["keys"] == ["guidance", "pooled_output"] and res["guidance"] == 2.5
    for i, p in enumerate(prompts):
        tol = 1e-4 * max(1.0, p["scale"])
        for k in ("cond_err", "pooled_err", "flux_cond_err", "flux_pooled_err", "pad_err"):
            assert p[k] <= tol, (i, k, p)
        assert p["stock_keys"] == ["pooled_output"]
        # the same keys and guidance as CLIPTextEncodeFlux (guidance 2.5 given to both)
        assert p["flux_keys"] == res["keys"] and p["flux_guidance"] == res["guidance"]
    # the one-by-one fallback gives the same batch
    assert res["each_vs_batch"] <= 1e-4 * 10 and res["each_pooled_vs_batch"] <= 1e-4 * 10
    assert res["distinct_0_1"] > 0.5 and res["distinct_pooled_0_1"] > 0.5  # entries differ: the checks can fail


def test_flux_one_sampler_pass_gives_n_different_latents_each_as_stock():
    res = _run("sample")
    assert res["shape"] == [4, 16, 16, 16] and res["cond_shape"][0] == 4 and res["cond_shape"][2] == 4096
    assert res["pairs_min"] > 0.1, "two entries of the batch gave the same latent"
    assert set(res["refs"]) == {"0", "2"} and res["refs"]["0"]["padded"] and not res["refs"]["2"]["padded"]
    for i, r in res["refs"].items():
        assert r["err"] <= 1e-4 * max(1.0, r["scale"]), (i, r)
        assert r["other"] > 100 * max(r["err"], 1e-6), (i, r)  # the reference does not match any entry
