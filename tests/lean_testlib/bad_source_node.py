"""A test-only custom node that makes malformed values no stock node can produce (an empty IMAGE batch, a
1x1 image, a 2-channel image, a 5-d tensor, integers) so the bad-input catalogue can feed them to Lean nodes through a real host.

Not part of the pack: ``install(base)`` links this file into a test host's custom_nodes/ as its own module
before the host starts.  Its id does not start with ``Lean`` (the pack's own checks ignore it).
"""
import os
import pathlib

KINDS = ["empty_batch", "1x1", "2_channels", "rank_5", "int64"]


class TestBadImage_lean:
    DESCRIPTION = "Test source: a malformed IMAGE tensor."
    CATEGORY = "testing"
    FUNCTION = "make"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (KINDS, {"tooltip": "which malformed image"})}}

    def make(self, kind):
        import torch
        if kind == "empty_batch":
            return (torch.zeros((0, 64, 64, 3)),)
        if kind == "1x1":
            return (torch.full((1, 1, 1, 3), 0.5),)
        if kind == "2_channels":
            return (torch.rand((1, 64, 64, 2)),)
        if kind == "rank_5":
            return (torch.rand((1, 2, 64, 64, 3)),)
        if kind == "int64":
            return (torch.ones((1, 64, 64, 3), dtype=torch.int64),)
        raise ValueError(kind)


NODE_CLASS_MAPPINGS = {"TestBadImage_lean": TestBadImage_lean}


def install(base):
    dst = pathlib.Path(base) / "custom_nodes" / "lean_test_bad_source.py"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(pathlib.Path(__file__).resolve(), dst)
    return dst
