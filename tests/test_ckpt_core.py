"""Tier 1: core/ckpt.py against safetensors / torch reading the same files."""
import os
import pathlib
import struct

import pytest
import torch

from lean_nodes.core import ckpt as core
from lean_testlib import cache_dir, pagecache, windows_semantics

MODES = ("mmap", "read")


def _tensors():
    g = torch.Generator().manual_seed(0)
    t = {
        "a.weight": torch.randn(64, 33, generator=g),
        "a.half": torch.randn(7, 5, generator=g).half(),
        "b.bf16": torch.randn(3, 9, generator=g).bfloat16(),
        "b.ids": torch.arange(77, dtype=torch.int64).reshape(1, 77),
        "c.mask": torch.rand(5, generator=g) > 0.5,
        "c.scalar": torch.tensor(3.5),
        "c.empty": torch.zeros(0, 4),
        "d.u8": torch.randint(0, 255, (13,), dtype=torch.uint8, generator=g),
    }
    if hasattr(torch, "float8_e4m3fn"):
        t["e.fp8"] = torch.randn(6, 6, generator=g).to(torch.float8_e4m3fn)
    return t


@pytest.fixture(scope="module")
def st_file(tmp_path_factory):
    from safetensors.torch import save_file
    p = tmp_path_factory.mktemp("ck") / "small.safetensors"
    save_file(_tensors(), str(p), metadata={"format": "pt", "note": "lean"})
    return p


def _reference(path):
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize("mode", MODES)
def test_keys_shapes_values_match_safetensors(st_file, mode):
    ref, meta = _reference(st_file)
    with core.open_checkpoint(st_file, mode) as ck:
        assert ck.format == "safetensors"
        assert sorted(ck.keys()) == sorted(ref)
        assert ck.metadata == meta
        for k, r in ref.items():
            assert ck.shape(k) == tuple(r.shape), k
            assert ck.dtype(k) == r.dtype, k
        got = ck.read_subset(list(ref))
        for k, r in ref.items():
            assert got[k].dtype == r.dtype and got[k].shape == r.shape, k
            assert torch.equal(got[k].view(torch.uint8) if r.dtype.itemsize == 1 and r.dtype != torch.bool else got[k],
                               r.view(torch.uint8) if r.dtype.itemsize == 1 and r.dtype != torch.bool else r), k
        assert ck.bytes_read == sum(r.numel() * r.element_size() for r in ref.values())


@pytest.mark.parametrize("mode", MODES)
def test_subset_reads_only_what_is_asked(st_file, mode):
    ref, _ = _reference(st_file)
    with core.open_checkpoint(st_file, mode) as ck:
        views = ck.views()  # detection-style access: free, not counted
        assert views["a.weight"].shape == (64, 33)
        assert ck.bytes_read == 0 and not ck.keys_read
        got = ck.read_subset(["a.half", "b.ids"])
        assert set(got) == {"a.half", "b.ids"} == ck.keys_read
        assert ck.bytes_read == 7 * 5 * 2 + 77 * 8
        assert torch.equal(got["a.half"], ref["a.half"])


@pytest.mark.parametrize("mode", MODES)
def test_release_keeps_data(st_file, mode):
    """What the loaders do after a tensor is converted into the model: ``release`` drops its pages, and the
    values come back from the file on the next touch (nothing is lost, nothing written)."""
    ref, _ = _reference(st_file)
    with core.open_checkpoint(st_file, mode) as ck:
        views = ck.views()
        half = ck.tensor("a.half")
        assert torch.equal(half, ref["a.half"])
        assert ck.key_of_view(views["a.weight"]) == "a.weight"
        assert ck.key_of_view(half.float()) is None and ck.key_of_view(views["a.weight"].clone()) is None
        for k in ref:
            ck.release(k)
        assert torch.equal(views["a.weight"], ref["a.weight"])
        assert torch.equal(half, ref["a.half"])


def test_views_are_private_copies_never_written_back(st_file):
    before = st_file.read_bytes()
    with core.open_checkpoint(st_file, "mmap") as ck:
        v = ck.views()["a.weight"]
        v.fill_(0.0)  # a node writing into a weight in place must never change the user's file
    assert st_file.read_bytes() == before


def test_mmap_touches_only_the_tensors_used():
    """Independent view through the page cache (mincore): after dropping the file from the cache,
    converting one tensor brings in its pages and leaves the other tensor's pages on disk (but for
    the kernel's read-ahead at its edges)."""
    from safetensors.torch import save_file
    d = cache_dir() / "tmp"
    d.mkdir(exist_ok=True)
    p = d / f"pc_{os.getpid()}.safetensors"
    try:
        # 64 MiB each: the kernel reads ahead up to read_ahead_kb (8 MiB here) around every access
        save_file({"first": torch.ones(32 << 20, dtype=torch.float16),
                   "second": torch.ones(32 << 20, dtype=torch.float16)}, str(p))
        pagecache.evict(str(p))
        if pagecache.resident_bytes(str(p)) > (1 << 20):
            pytest.skip("this filesystem does not let the page cache be dropped; cannot measure")
        with core.open_checkpoint(p, "mmap") as ck:
            info = ck.infos
            t = ck.tensor("second").float()  # what a loader does: the file's tensor converted into the model
            assert t.sum().item() == 32 << 20
            pages = pagecache.resident_pages(str(p))
            first = pagecache.resident_bytes(str(p), info["first"].start + (16 << 20), info["first"].end - (16 << 20), pages)
            second = pagecache.resident_bytes(str(p), info["second"].start, info["second"].end, pages)
        assert second >= info["second"].nbytes - 2 * pagecache.PAGE, second
        assert first == 0, f"{first} bytes of an unused tensor were read"
    finally:
        p.unlink(missing_ok=True)


# ------------------------------------------------------------------ torch format

def test_torch_checkpoint_matches_torch_load(tmp_path):
    t = _tensors()
    p = tmp_path / "model.ckpt"
    torch.save({"state_dict": t, "global_step": 7}, p)
    ref = torch.load(p, weights_only=True)["state_dict"]
    with core.open_checkpoint(p) as ck:
        assert ck.format == "torch"
        assert sorted(ck.keys()) == sorted(ref)
        for k, r in ref.items():
            got = ck.tensor(k)
            assert got.dtype == r.dtype and tuple(got.shape) == tuple(r.shape)
            if r.dtype.itemsize == 1 and r.dtype not in (torch.bool, torch.uint8):
                got, r = got.view(torch.uint8), r.view(torch.uint8)
            assert torch.equal(got, r), k
        assert ck.keys_read == set(ref)


class _WriteFile:
    """Unpickling this calls pathlib.Path.write_text: an arbitrary side effect."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


def _malicious_ckpt(path, target):
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _WriteFile(target)}, path)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    # the payload is real: an unrestricted unpickle does write the file
    probe, probe_target = tmp_path / "probe.ckpt", tmp_path / "probe_written.txt"
    _malicious_ckpt(probe, probe_target)
    torch.load(probe, weights_only=False)
    assert probe_target.read_text() == "pwned"

    p, target = tmp_path / "evil.ckpt", tmp_path / "written_by_pickle.txt"
    _malicious_ckpt(p, target)
    with pytest.raises(core.CheckpointError) as e:
        core.open_checkpoint(p)
    assert "evil.ckpt" in str(e.value) and "refused" in str(e.value)
    assert not target.exists()


# ------------------------------------------------------------------ bad input

def _expect(path, *words, exc=core.CheckpointError, mode="mmap"):
    with pytest.raises(exc) as e:
        core.open_checkpoint(path, mode)
    msg = str(e.value)
    assert os.path.basename(str(path)) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.safetensors", "not found", exc=FileNotFoundError)


def test_truncated_safetensors(st_file, tmp_path):
    data = st_file.read_bytes()
    p = tmp_path / "cut.safetensors"
    p.write_bytes(data[: len(data) - 100])
    _expect(p, "truncated")
    p.write_bytes(data[:20])
    _expect(p, "truncated")
    p.write_bytes(b"")
    _expect(p, "truncated")


def test_corrupt_header(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}" * 10)
    _expect(p, "corrupt")
    p.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 64)
    _expect(p, "corrupt")
    hdr = b'{"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}}'
    p.write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 16)
    _expect(p, "truncated")
    hdr = b'{"x": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 16]}}'
    p.write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 16)
    _expect(p, "unsupported dtype")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.ckpt"
    p.write_text("just some text, not a model\n" * 10)
    _expect(p, "not")
    q = tmp_path / "list.pt"
    torch.save([1, 2, 3], q)
    _expect(q, "not a checkpoint")
    r = tmp_path / "model.gguf"
    r.write_bytes(b"GGUF" + b"\0" * 64)
    _expect(r, "extension")


def test_bad_mode(st_file):
    with pytest.raises(ValueError, match="load_mode"):
        core.open_checkpoint(st_file, "turbo")


def test_report_text():
    r = {"file": "x.safetensors", "format": "safetensors", "file_bytes": 2 << 30, "seconds": 1.5, "mode": "mmap",
         "bytes_read": 1 << 30, "keys_read": 3, "keys_total": 5, "disk_read_bytes": 0, "peak_rss_bytes": 3 << 30,
         "peak_is_for_this_load": True, "rss_before_bytes": 1 << 30, "rss_after_bytes": 2 << 30,
         "parts": {"model": "BaseModel", "clip": None}}
    text = core.format_report(r)
    assert "1.50 s" in text and "1.00 GiB of 2.00 GiB" in text and "clip: off (not read)" in text
    assert "vae: off" in text


def _rss_file():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no RssFile in /proc/self/status")


def test_converted_tensors_leave_no_file_pages_resident():
    """One copy: after a loader converts a mapped fp16 tensor to fp32 and releases it (nodes/checkpoint.py,
    nodes/diffusion_model.py: ``ck.tensor`` -> the model's copy -> ``ck.release``), the file pages it was read
    from are no longer part of this process's RSS while the copy lives (control: before the release they are)."""
    from safetensors.torch import save_file
    d = cache_dir() / "tmp"
    d.mkdir(exist_ok=True)
    p = d / f"rss_{os.getpid()}.safetensors"
    try:
        save_file({"w": torch.ones(32 << 20, dtype=torch.float16)}, str(p))  # 64 MiB
        with core.open_checkpoint(p, "mmap") as ck:
            before = _rss_file()
            t = ck.tensor("w").float()
            grown = _rss_file() - before
            assert grown > 48 << 20, f"control: mapped pages not counted ({grown} bytes)"
            ck.release("w")
            left = _rss_file() - before
            assert t.dtype == torch.float32 and t.sum().item() == 32 << 20
        if windows_semantics.installed():  # Windows' mmap has no madvise: the clean pages stay until Windows trims
            assert left > 48 << 20, left    # the working set (core/ckpt.py CheckpointFile.release)
        else:
            assert left < 4 << 20, f"{left} bytes of file pages still resident after the conversion"
    finally:
        p.unlink(missing_ok=True)


def _mapping_starts():
    with open("/proc/self/maps") as f:
        return {int(line.split("-")[0], 16) for line in f}


def test_weights_in_own_mappings_go_back_to_the_os():
    """Uninitialised module weights of >= 1 MiB get a mapping each (so freeing the module unmaps them, whatever
    glibc does with freed heap); small ones, buffers and modules the predicate refuses are left alone."""
    class Uninit(torch.nn.Linear):  # like ComfyUI's ops: no weight init
        def reset_parameters(self):
            return None

    class WithBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.arange(1 << 19, dtype=torch.float32))  # 2 MiB of values

    with core.weights_in_own_mappings(lambda m: isinstance(m, Uninit)):
        big = Uninit(1024, 512)            # weight 2 MiB, bias 4 KiB
        plain = torch.nn.Linear(1024, 512)  # initialised by torch: must keep its values
        buf = WithBuffer()
    plain_before = plain.weight.detach().clone()
    ptr = big.weight.data_ptr()
    assert ptr % core.PAGE == 0 and ptr in _mapping_starts()
    assert big.weight.requires_grad and big.weight.dtype == torch.float32 and big.weight.shape == (512, 1024)
    assert big.bias.data_ptr() not in _mapping_starts() or big.bias.data_ptr() % core.PAGE
    assert torch.equal(buf.table, torch.arange(1 << 19, dtype=torch.float32))
    with torch.no_grad():
        big.weight.fill_(1.5)
    assert big.weight.sum().item() == 1.5 * 512 * 1024
    del big
    assert ptr not in _mapping_starts()
    assert torch.equal(plain.weight, plain_before)
    # the hook is gone after the block
    later = Uninit(1024, 512)
    assert later.weight.data_ptr() not in _mapping_starts() or later.weight.data_ptr() % core.PAGE


def test_slabs_pack_small_tensors_into_mappings_freed_together():
    from lean_nodes.core import memory
    sl = memory.Slabs(slab=1 << 20)
    g = torch.Generator().manual_seed(3)
    srcs = [torch.randn(n, 7, generator=g).half() for n in (1, 33, 700, 5000, 2)]
    outs = [sl.copy_of(t, torch.float32) for t in srcs]
    for t, o in zip(srcs, outs):
        assert o.dtype == torch.float32 and torch.equal(o, t.float()) and o.data_ptr() % memory.Slabs.ALIGN == 0
    starts = _mapping_starts()
    slab_ptrs = {o.untyped_storage().data_ptr() for o in outs}
    assert len(slab_ptrs) <= 2 and slab_ptrs <= starts           # a few slabs, each its own mapping
    big = sl.empty((512, 1024), torch.float32)                    # 2 MiB >= a quarter slab: a mapping of its own
    assert big.data_ptr() in starts or big.data_ptr() in _mapping_starts()
    with torch.no_grad():
        for o in outs:                                           # writing one never touches another
            o.add_(1)
    for t, o in zip(srcs, outs):
        assert torch.equal(o, t.float() + 1)
    del outs, o
    sl._cur = None                                               # the allocator's hold on its current slab
    assert not (slab_ptrs & _mapping_starts())                   # every slab unmapped with its last tensor


def test_retired_direct_mode_resolves_to_mmap_with_a_note():
    """load_mode=direct (saved workflows may hold it) is retired: it loads as mmap and the report says why; an
    unknown value is an error naming the modes.  CheckpointFile itself only knows the live modes."""
    assert core.resolve_load_mode("mmap") == ("mmap", None)
    assert core.resolve_load_mode("read") == ("read", None)
    mode, note = core.resolve_load_mode("direct")
    assert mode == "mmap" and "direct" in note and "retired" in note and "GPU" in note
    with pytest.raises(ValueError, match="mmap"):
        core.resolve_load_mode("gpu")
    r = {"file": "f", "format": "safetensors", "file_bytes": 1, "seconds": 0.1, "mode": mode, "bytes_read": 1,
         "keys_read": 1, "keys_total": 1, "disk_read_bytes": 0, "peak_rss_bytes": 1, "rss_before_bytes": 1,
         "rss_after_bytes": 1, "parts": {"model": "m"}, "mode_note": note}
    text = core.format_report(r)
    assert "mode mmap" in text and f"note: {note}" in text.splitlines()
    assert "note:" not in core.format_report({**r, "mode_note": None})
