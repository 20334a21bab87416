"""Tier 2: GET /lean/loras in the real host (the list behind the `<lora:` autocomplete).

The expected list comes from the host's own stock LoraLoader definition (/object_info), and the expected trigger
words from the `safetensors` package reading the same file's metadata, not from the route's code.  The contract
checked is what web/lean.loraAutocomplete.js uses: `name` and `triggers` (most frequent kohya tags first); the route
itself is served by nodes/lora.py (the LoRA feature)."""
import json
import os
import time

import pytest

from lean_testlib import harness, lora

pytestmark = pytest.mark.tier2


def _write_lora(path, metadata):
    import torch
    from safetensors.torch import save_file
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320)},
              str(path), metadata=metadata)
    return path


def _expected_triggers(path, limit=12):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    words = []
    totals = {}
    for tags in json.loads(meta.get("ss_tag_frequency", "{}")).values():
        for tag, n in tags.items():
            totals[tag] = totals.get(tag, 0) + n
    words += [t for t, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    out = []
    for w in words:
        if w.lower() not in [o.lower() for o in out]:
            out.append(w)
    return out[:limit]


@pytest.fixture(scope="module")
def loras(comfy, tmp_path_factory):
    d = comfy.base / "models" / "loras"
    src = tmp_path_factory.mktemp("loras_src")
    tagged = _write_lora(src / "tagged.safetensors", {
        "ss_tag_frequency": json.dumps({"10_pixel": {"pixel art": 40, "sprite": 12, "1girl": 3},
                                        "5_extra": {"sprite": 30, "retro": 7}}),
        })
    harness.link_model(comfy.base, "loras", tagged, "tagged.safetensors")
    harness.link_model(comfy.base, "loras", lora.sd15_lora(), "plain.safetensors")
    (d / "styles").mkdir(exist_ok=True)
    harness.link_model(comfy.base, "loras", tagged, "styles/nested.safetensors")
    (d / "broken.safetensors").write_bytes(b"\xff" * 64)         # not a safetensors header
    (d / "notes.txt").write_text("not a LoRA")
    return {"tagged": tagged}


def _get(comfy):
    status, data = comfy.request("/lean/loras")
    assert status == 200, data
    return {x["name"]: x for x in data["loras"]}


def test_lists_what_stock_lora_loader_lists(comfy, loras):
    got = _get(comfy)
    stock = comfy.object_info("LoraLoader")["input"]["required"]["lora_name"][0]
    assert sorted(got) == sorted(stock), (sorted(got), stock)
    assert {"tagged.safetensors", "plain.safetensors", "styles/nested.safetensors", "broken.safetensors"} <= set(got)
    assert "notes.txt" not in got


def test_trigger_words_come_from_the_metadata(comfy, loras):
    got = _get(comfy)
    expected = _expected_triggers(loras["tagged"])
    assert expected == ["sprite", "pixel art", "retro", "1girl"]
    assert got["tagged.safetensors"]["triggers"][:len(expected)] == expected
    plain = _expected_triggers(lora.sd15_lora())
    assert got["plain.safetensors"]["triggers"][:len(plain)] == plain
    assert got["broken.safetensors"]["triggers"] == []     # a bad header is no error, and no crash
    assert comfy.alive()


def test_metadata_is_re_read_when_the_file_changes(comfy, loras, tmp_path):
    path = comfy.base / "models" / "loras" / "changing.safetensors"
    _write_lora(path, {"ss_tag_frequency": json.dumps({"a": {"first": 1}})})
    assert _get(comfy)["changing.safetensors"]["triggers"] == ["first"]
    time.sleep(0.01)
    _write_lora(path, {"ss_tag_frequency": json.dumps({"a": {"second": 5, "third": 1}})})
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert _get(comfy)["changing.safetensors"]["triggers"] == ["second", "third"]
    path.unlink()


def test_prompt_batch_preview_route_answers(comfy):
    """The route lean.promptBatch.js calls."""
    from urllib.parse import urlencode
    status, data = comfy.request("/lean/prompt_batch/preview?" + urlencode(
        {"text": "a cat\na dog\n# comment\n{red|blue} bird", "mode": "combinatorial", "count": 16}))
    assert status == 200 and data["count"] == 4, data
