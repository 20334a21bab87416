"""Tier 1: LoRA file metadata (core/lora_meta.py): trigger words from kohya's ss_tag_frequency, made inert and
capped; bad metadata is an error naming the file; the cache reads each file identity once, errors included.

The reference for the metadata is the `safetensors` package reading the same file; the sanitised words are
written out by hand."""
import json
import os
import time

import pytest

from lean_nodes.core import lora_meta, st_header


def _write(path, tags=None, metadata=None):
    import torch
    from safetensors.torch import save_file
    meta = dict(metadata or {})
    if tags is not None:
        meta["ss_tag_frequency"] = tags if isinstance(tags, str) else json.dumps(tags)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4)}, str(path), metadata=meta)
    return path


def test_trigger_words_from_safetensors_header(tmp_path):
    from safetensors import safe_open
    p = _write(tmp_path / "x.safetensors", {"set1": {"leanstyle": 3, " red ": 1}, "set2": {"leanstyle": 2, "blue": 4}},
               {"other": "kept"})
    with safe_open(str(p), "pt") as f:
        ref = f.metadata()
    meta = lora_meta.read_safetensors_metadata(p)
    assert meta == ref
    assert lora_meta.trigger_words(meta) == ["leanstyle", "blue", "red"]
    assert lora_meta.trigger_words({}) == [] and lora_meta.trigger_words({"other": "x"}) == []
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x01")
    with pytest.raises(ValueError, match="bad.safetensors: .*too short"):
        lora_meta.read_safetensors_metadata(bad)


@pytest.mark.parametrize("tags, words", [
    ('{"d": {"t": 1e999}}', ("'t'", "inf", "finite")),            # the reproduction: OverflowError on main
    ('{"d": {"t": -1}}', ("'t'", "-1")),
    ('{"d": {"t": NaN}}', ("not valid JSON",)),
    ('{"d": {"t": true}}', ("'t'", "True")),
    ('{"d": {"t": "3"}}', ("'t'", "'3'")),
    ('{"d": {"t": ' + "9" * 5000 + '}}', ("'t'", "5000 digits")),
    ('{"d": ["a", "b"]}', ("'d'", "not an object")),
    ('["a"]', ("not a JSON object",)),
    ("{bad", ("not valid JSON",)),
    ('{"d": ' + "[" * 50_000 + "]" * 50_000 + "}", ("nested too deeply",)),
])
def test_bad_tag_frequency_is_an_error_naming_the_file(tags, words):
    t0 = time.perf_counter()
    with pytest.raises(lora_meta.LoraMetadataError) as e:
        lora_meta.trigger_words({"ss_tag_frequency": tags}, name="style.safetensors")
    assert time.perf_counter() - t0 < 1.0                      # a hang bound, not a speed claim
    msg = str(e.value)
    assert msg.startswith("style.safetensors: its ss_tag_frequency") and "still works" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_trigger_words_are_made_inert():
    freq = {"d": {
        "<lora:evil:1>": 50,                  # a LoRA tag: the brackets go, the text stays plain words
        "{red|blue} cat": 40,                 # a choice: the braces go
        "__secrets__": 30,                    # a wildcard: runs of underscores become one
        "line1\nline2\r\n\tend": 20,          # line breaks and tabs become spaces
        "zero\u200bwidth\x07bell": 15,        # format and control characters become spaces
        "# comment me": 12,                   # a leading '#' would comment the prompt line out
        "a" * 65: 11,                         # longer than MAX_TRIGGER_LEN: dropped
        "<>{}": 10,                           # nothing left: dropped
        "  pixel   art ": 9,
        "pixel art": 1,                       # the same word once cleaned: counts merged (9 + 1)
        "snake_case_tag": 2,                  # single underscores are kept
    }}
    words = lora_meta.trigger_words({"ss_tag_frequency": json.dumps(freq)})
    assert words == ["lora:evil:1", "red|blue cat", "_secrets_", "line1 line2 end", "zero width bell", "comment me",
                     "pixel art", "snake_case_tag"]
    for w in words:
        assert not set(w) & set("<>{}\n\r\t\x07\u200b") and "__" not in w and len(w) <= lora_meta.MAX_TRIGGER_LEN


def test_trigger_words_are_capped_in_count():
    freq = {"d": {f"tag{i:03d}": 1000 - i for i in range(500)}}
    words = lora_meta.trigger_words({"ss_tag_frequency": json.dumps(freq)})
    assert words == [f"tag{i:03d}" for i in range(lora_meta.MAX_TRIGGERS)]
    assert lora_meta.trigger_words({"ss_tag_frequency": json.dumps(freq)}, limit=1000) == words  # the cap holds
    assert lora_meta.trigger_words({"ss_tag_frequency": json.dumps(freq)}, limit=3) == words[:3]


# ------------------------------------------------------------------ the cache

class Counting:
    def __init__(self):
        self.calls = []

    def __call__(self, path):
        self.calls.append(os.path.basename(str(path)))
        return lora_meta.read_safetensors_metadata(path)


def test_a_bad_file_is_read_once_and_its_error_kept(tmp_path):
    """The issue: failures were not cached, so a bad (or 64 MB) header was parsed again on every request."""
    bad = _write(tmp_path / "inf.safetensors", '{"d": {"t": 1e999}}')
    good = _write(tmp_path / "good.safetensors", {"d": {"hero": 2}})
    crafted = tmp_path / "crafted.safetensors"
    crafted.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a": [1]}      ')
    read = Counting()
    cache = lora_meta.TriggerCache(read)
    for _ in range(5):
        words, error = cache.get(bad)
        assert words == [] and error.startswith("inf.safetensors: its ss_tag_frequency") and "inf" in error
        assert cache.get(good) == (["hero"], None)
        words, error = cache.get(crafted)
        assert words == [] and error.startswith("crafted.safetensors: tensor 'a'")
    assert sorted(read.calls) == ["crafted.safetensors", "good.safetensors", "inf.safetensors"]
    for e in (cache.get(bad)[1], cache.get(crafted)[1]):
        assert str(tmp_path) not in e


def test_a_changed_file_is_read_again(tmp_path):
    p = _write(tmp_path / "x.safetensors", '{"d": {"t": 1e999}}')
    read = Counting()
    cache = lora_meta.TriggerCache(read)
    assert cache.get(p)[1]
    _write(p, {"d": {"fixed": 1, "now": 3}})
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert cache.get(p) == (["now", "fixed"], None)
    assert cache.get(p) == (["now", "fixed"], None)
    assert len(read.calls) == 2


def test_unreadable_and_other_files(tmp_path):
    d = tmp_path / "folder.safetensors"          # a directory with a LoRA's name: open() fails with the full path
    d.mkdir()
    words, error = lora_meta.TriggerCache().get(d)
    assert words == [] and error.startswith("folder.safetensors: cannot be read") and str(tmp_path) not in error
    gone = tmp_path / "gone.safetensors"
    words, error = lora_meta.TriggerCache().get(gone)
    assert words == [] and "gone.safetensors" in error and str(tmp_path) not in error
    pt = tmp_path / "old.pt"
    pt.write_bytes(b"not read")
    assert lora_meta.TriggerCache(lambda p: pytest.fail("a .pt file has no safetensors header")).get(pt) == ([], None)


def test_an_unexpected_failure_is_kept_as_an_error(tmp_path):
    p = _write(tmp_path / "x.safetensors", {"d": {"a": 1}})

    def broken(path):
        raise RuntimeError("/secret/absolute/path")
    words, error = lora_meta.TriggerCache(broken).get(p)
    assert words == [] and error == "x.safetensors: its metadata could not be read (RuntimeError)"


def test_metadata_goes_through_the_shared_reader(tmp_path):
    """A header the shared reader refuses (overlapping tensors) is refused for metadata too: one set of rules."""
    p = tmp_path / "overlap.safetensors"
    hb = json.dumps({"__metadata__": {"ss_tag_frequency": '{"d": {"t": 1}}'},
                     "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                     "b": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}).encode()
    p.write_bytes(len(hb).to_bytes(8, "little") + hb + b"xy")
    with pytest.raises(st_header.HeaderError, match="overlap"):
        lora_meta.read_safetensors_metadata(p)
