"""Tier 1: progressive exposure.  Every Lean node shows at most 4 non-advanced widgets (or a documented exception),
keeps the input order of the base commit (tests/data/input_order.json: new inputs only at the end), has a tooltip
on every input, and docs/workflows.md's "Essential vs advanced inputs" table says exactly what the code does."""
import json
import re

import pytest

from lean_testlib import REPO
from lean_testlib.node_inputs import static_inputs

MAX_VISIBLE = 4
EXCEPTIONS = {}  # node id -> reason; documented in docs/workflows.md (none today)
BASE = json.loads((REPO / "tests" / "data" / "input_order.json").read_text())


def _all_nodes():
    out = {}
    for f in sorted((REPO / "nodes").glob("*.py")):
        if not f.name.startswith("_"):
            out.update(static_inputs(f.read_text()))
    return out


NODES = _all_nodes()


def _doc_table():
    text = (REPO / "docs" / "workflows.md").read_text()
    sec = text.split("## Essential vs advanced inputs", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in sec.splitlines():
        m = re.match(r"\|\s*(Lean\w+)\s*\|([^|]*)\|([^|]*)\|", line)
        if m:
            split = lambda s: [] if s.strip() == "(none)" else [x.strip() for x in s.split(",")]  # noqa: E731
            rows[m.group(1)] = (split(m.group(2)), split(m.group(3)))
    return rows


def test_every_node_was_read():
    assert set(BASE["nodes"]) <= set(NODES), set(BASE["nodes"]) - set(NODES)
    assert "LeanSystemCheck" in NODES


@pytest.mark.parametrize("node", sorted(NODES))
def test_at_most_four_visible_widgets(node):
    visible = [n for _, n, w, o in NODES[node] if w and o.get("advanced") is not True]
    if node in EXCEPTIONS:
        return
    assert len(visible) <= MAX_VISIBLE, f"{node} shows {len(visible)} widgets: {visible}"


@pytest.mark.parametrize("node", sorted(BASE["nodes"]))
def test_input_order_unchanged_since_the_base_commit(node):
    for group, names in BASE["nodes"][node].items():
        now = [n for g, n, _, _ in NODES[node] if g == group]
        assert now[:len(names)] == names, f"{node}.{group}: was {names}, now {now} (add new inputs at the end only)"


@pytest.mark.parametrize("node", sorted(NODES))
def test_every_input_has_a_tooltip(node):
    for _, name, _, opts in NODES[node]:
        assert opts.get("tooltip"), f"{node}.{name} has no tooltip"


@pytest.mark.parametrize("node", sorted(NODES))
def test_advanced_flag_is_true_or_absent(node):
    for _, name, _, opts in NODES[node]:
        assert opts.get("advanced", True) is True, f"{node}.{name}: advanced must be True or left out"


def test_docs_table_matches_the_nodes():
    table = _doc_table()
    assert set(table) == set(NODES), f"docs/workflows.md table: missing {set(NODES) - set(table)}, " \
                                     f"extra {set(table) - set(NODES)}"
    for node, rows in NODES.items():
        visible = [n for _, n, w, o in rows if w and o.get("advanced") is not True]
        advanced = [n for _, n, _, o in rows if o.get("advanced") is True]
        assert table[node] == (visible, advanced), (node, table[node], (visible, advanced))


def test_the_reader_sees_advanced_and_links():
    # the static reader itself, on a node written here (so a broken reader cannot pass the tests above)
    src = '''
class X:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("MODEL", {"tooltip": "t"}), "b": (["x", "y"], {"tooltip": "t"}),
                             "c": ("INT", dict(BASE, advanced=True, tooltip="t")),
                             "d": ("STRING", {"forceInput": True, "tooltip": "t"})},
                "optional": {"e": ("FLOAT", {"advanced": True, "tooltip": "t"})}}
NODE_CLASS_MAPPINGS = {"LeanX": X}
'''
    rows = static_inputs(src)["LeanX"]
    assert [(g, n, w, o.get("advanced")) for g, n, w, o in rows] == [
        ("required", "a", False, None), ("required", "b", True, None), ("required", "c", True, True),
        ("required", "d", False, None), ("optional", "e", True, True)]
