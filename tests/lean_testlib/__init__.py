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


def declared_nodes():
    """Every node id the pack declares, read from the NODE_CLASS_MAPPINGS dict literals in nodes/*.py with ast
    (no import): a module that fails to import in the host drops out of /object_info, and this is what makes
    that visible."""
    import ast
    names = set()
    for path in sorted((REPO / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODE_CLASS_MAPPINGS" for t in node.targets):
                assert isinstance(node.value, ast.Dict), f"{path.name}: NODE_CLASS_MAPPINGS must be a dict literal"
                names |= {k.value for k in node.value.keys}
    return names


def made_in_order(make, items, workers=2, ahead=4):
    """``make(item)`` for each item, yielded in order, computed by ``workers`` threads up to ``ahead`` items ahead.
    For fixture tensors seeded per key (``sd15.seeded_normal``), which are the same whatever thread makes them: torch
    releases the GIL while it draws random numbers and converts, so a fresh cache's big fixtures take both cores."""
    from concurrent.futures import ThreadPoolExecutor
    items = list(items)
    with ThreadPoolExecutor(workers) as pool:
        pending = [pool.submit(make, it) for it in items[:ahead]]
        for i in range(len(items)):
            done = pending.pop(0)
            if i + ahead < len(items):
                pending.append(pool.submit(make, items[i + ahead]))
            yield done.result()


# Skips for a missing prerequisite (a ComfyUI host, chromium/Playwright, llama_cpp) start with this; under CI=true
# tests/conftest.py turns each of them into a failure, so CI cannot pass by skipping.  Other skips stay skips.
PREREQ = "missing prerequisite: "


def strict():
    """True under CI (CI=true): a missing prerequisite fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def prereq(why):
    """A skip reason for a missing prerequisite (see PREREQ)."""
    return PREREQ + why
