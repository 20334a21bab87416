"""Tier 2 (issue 21): LoRA files with bad metadata or crafted headers beside good ones, in the real host.

On main a LoRA whose ss_tag_frequency holds 1e999 raised OverflowError: GET /lean/loras answered 500 for every LoRA
and the LoRA nodes failed.  Here the route stays 200, lists the good LoRAs with their trigger words and the bad
ones with an `error` that names the file (never an absolute path), and both LoRA nodes run with such a file (no
trigger words, a note in their report).  Expected trigger words come from the `safetensors` package reading the
files' metadata.  Crafted *checkpoint* headers through the Lean loaders are cases of the bad-input catalogue
(lean_testlib/bad_inputs.py, CRAFTED; tests/test_tier2_bad_inputs.py), which also checks the host keeps serving."""
import json

import pytest

from lean_testlib import bad_inputs, lora as kohya

pytestmark = pytest.mark.tier2

CKPT = "lean_sd15.safetensors"
MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
GOOD_A, GOOD_B = "lean_hdr_good_a.safetensors", "lean_hdr_good_b.safetensors"
INF, OVERLAP, DIMS = "lean_hdr_inf.safetensors", "lean_hdr_overlap.safetensors", "lean_hdr_4mb_dims.safetensors"


def _tiny_lora(path, metadata):
    """A one-module kohya LoRA for the SD1.5 fixture (rank 4), written by the safetensors package."""
    from safetensors.torch import save_file
    sd = kohya.make_lora_state_dict(seed=3, rank=4, te=False)
    save_file({k: v for k, v in sd.items() if k.startswith(MODULE + ".")}, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def loras(comfy_sd15):
    d = comfy_sd15.base / "models" / "loras"
    d.mkdir(parents=True, exist_ok=True)
    made = [
        _tiny_lora(d / GOOD_A, {"ss_tag_frequency": json.dumps({"10_a": {"hero": 5, "red cape": 2}})}),
        _tiny_lora(d / GOOD_B, {"ss_tag_frequency": json.dumps({"5_b": {"villain": 3}})}),
        _tiny_lora(d / INF, bad_inputs.tag_frequency_inf_metadata()),
        bad_inputs.write_header_file(d / OVERLAP, bad_inputs.CRAFTED["crafted_overlap.safetensors"][0], b"\x00" * 16),
        bad_inputs.write_header_file(d / DIMS, bad_inputs.CRAFTED["crafted_4mb_dims.safetensors"][0], b"\x00" * 4),
    ]
    yield d
    for p in made:      # the host is shared by the session: leave its loras folder as it was
        p.unlink()


def _expected_triggers(path):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        freq = json.loads(f.metadata()["ss_tag_frequency"])
    totals = {}
    for tags in freq.values():
        for t, n in tags.items():
            totals[t] = totals.get(t, 0) + n
    return [t for t, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]


def _listing(comfy):
    status, raw = comfy.request("/lean/loras", raw=True)
    assert status == 200, raw[:2000]
    return {x["name"]: x for x in json.loads(raw)["loras"]}, raw.decode()


def test_bad_lora_metadata_leaves_the_listing_at_200(comfy_sd15, loras):
    got, raw = _listing(comfy_sd15)
    for name in (GOOD_A, GOOD_B):
        assert got[name]["triggers"] == _expected_triggers(loras / name) and "error" not in got[name], got[name]
    assert got[INF]["triggers"] == [] and got[INF]["error"].startswith(f"{INF}: its ss_tag_frequency"), got[INF]
    assert "inf" in got[INF]["error"]
    assert got[OVERLAP]["triggers"] == [] and got[OVERLAP]["error"].startswith(f"{OVERLAP}: tensor"), got[OVERLAP]
    assert "overlap tensor" in got[OVERLAP]["error"]   # the reason, not just the file name
    assert got[DIMS]["error"].startswith(f"{DIMS}: tensor") and "1000 dimensions" in got[DIMS]["error"], got[DIMS]
    assert str(comfy_sd15.base) not in raw and "/models/loras" not in raw   # no absolute path in the answer
    again, _ = _listing(comfy_sd15)
    assert again == got                     # the errors are remembered, not turned into a 500 the second time
    assert comfy_sd15.alive()


def _outputs(entry, node):
    return entry["outputs"].get(node, {})


def test_lora_nodes_run_with_bad_metadata(comfy_sd15, loras):
    """LeanLoraLoader on the 1e999 LoRA, then LeanLoraTags with it and a good one: both run, the loader's trigger
    words are empty and its report says why; the tags node still gives the good LoRA's words."""
    text = f"a cat <lora:{INF[:-12]}:0.5> <lora:{GOOD_A[:-12]}:0.5>"
    g = {"k": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
         "l": {"class_type": "LeanLoraLoader", "inputs": {
             "model": ["k", 0], "clip": ["k", 1], "lora_name": INF, "strength_model": 1.0, "strength_clip": 1.0,
             "schedule": "", "block_weights": ""}},
         "t": {"class_type": "LeanLoraTags", "inputs": {"model": ["l", 0], "clip": ["l", 1], "text": text}},
         "pl": {"class_type": "PreviewAny", "inputs": {"source": ["l", 2]}},
         "pt": {"class_type": "PreviewAny", "inputs": {"source": ["t", 3]}},
         "px": {"class_type": "PreviewAny", "inputs": {"source": ["t", 2]}}}
    entry = comfy_sd15.run(g, timeout=600)
    assert _outputs(entry, "pl")["text"] == [""]
    assert _outputs(entry, "pt")["text"] == [", ".join(_expected_triggers(loras / GOOD_A))]
    assert _outputs(entry, "px")["text"] == ["a cat"]
    for node in ("l", "t"):
        report = "\n".join(_outputs(entry, node)["text"])
        assert f"trigger words: none ({INF}: its ss_tag_frequency" in report, report
        assert str(comfy_sd15.base) not in report
    assert comfy_sd15.alive()
