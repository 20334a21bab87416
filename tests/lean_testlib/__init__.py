"""Test support for Lean Nodes: the tier-2 host harness and fixture generators.

Named ``lean_testlib`` so it never collides with the host's own top-level modules
(``nodes``, ``utils``, ``comfy`` ...)."""
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def cache_dir() -> pathlib.Path:
    """Where generated fixtures live: outside git, keyed by generator version and seed."""
    d = pathlib.Path(os.environ.get("LEAN_CACHE", pathlib.Path.home() / ".cache" / "lean-nodes"))
    d.mkdir(parents=True, exist_ok=True)
    return d
