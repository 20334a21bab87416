"""Tier 1: core.ckpt.file_identity, what the checkpoint loader compares before reusing a loaded (mapped) model."""
import os


def test_file_identity_changes_when_rewritten_in_place_or_replaced(tmp_path):
    from lean_nodes.core import ckpt
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x" * 100)
    a = ckpt.file_identity(f)
    with open(f, "r+b") as h:
        h.truncate(50)
    b = ckpt.file_identity(f)
    g = tmp_path / "n.safetensors"
    g.write_bytes(b"x" * 50)
    os.utime(g, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns))
    os.replace(g, f)
    c = ckpt.file_identity(f)
    assert a != b and b != c and len({a, b, c}) == 3
    assert ckpt.file_identity(tmp_path / "gone") is None
