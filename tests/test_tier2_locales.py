"""Tier 2: locales/en and locales/zh.

en/nodeDefs.json must equal a fresh generation from the host's /object_info (scripts/make_locales.py), zh must
translate every node, input and output en has, and the host must serve both through GET /i18n.  The strings the
web extensions look up (t("...") in web/lean.*.js) must exist in both main.json files."""
import importlib.util
import json
import re

import pytest

from lean_testlib import REPO, declared_nodes

pytestmark = pytest.mark.tier2

LOCALES = REPO / "locales"
CJK = re.compile(r"[\u4e00-\u9fff]")


def _make_locales():
    spec = importlib.util.spec_from_file_location("lean_make_locales", REPO / "scripts" / "make_locales.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load(lang, name):
    return json.loads((LOCALES / lang / name).read_text())


def test_en_node_defs_equal_a_fresh_generation(comfy):
    fresh = _make_locales().en_node_defs(comfy.object_info())
    committed = _load("en", "nodeDefs.json")
    assert set(fresh) >= declared_nodes()
    # nodes of feature branches not merged into this checkout yet are compared once they are
    committed = {k: v for k, v in committed.items() if k in declared_nodes()}
    assert committed == fresh, "locales/en/nodeDefs.json is stale: run python scripts/make_locales.py"


def test_zh_translates_every_node_input_and_output():
    en, zh = _load("en", "nodeDefs.json"), _load("zh", "nodeDefs.json")
    gaps = _make_locales().missing_in(zh, en)
    assert not gaps, "zh lacks:\n" + "\n".join(gaps)
    assert set(zh) == set(en), f"zh has nodes en does not: {set(zh) - set(en)}"
    for node, d in zh.items():
        assert CJK.search(d["display_name"]), f"{node}: display name not translated"
        assert CJK.search(d["description"]), f"{node}: description not translated"
        assert set(d["inputs"]) == set(en[node]["inputs"]), node
        assert set(d["outputs"]) == set(en[node]["outputs"]), node
        for section in ("inputs", "outputs"):
            for k, v in d[section].items():
                if en[node][section][k].get("tooltip"):
                    assert CJK.search(v["tooltip"]), f"{node}.{section}.{k}: tooltip not translated"
        # the hint in parentheses stays recognisable (e.g. "(OpenCV)", "(mmap)", "(GGUF)")
        hint = re.search(r"\(([A-Za-z0-9. ]+)\)$", en[node]["display_name"])
        if hint and re.search(r"[A-Z]", hint.group(1)) and hint.group(1).lower() not in ("dynamic", "wildcards", "local llm"):
            assert hint.group(1) in d["display_name"], (node, d["display_name"])


def test_main_json_has_the_strings_the_extensions_use():
    used = set()
    for js in (REPO / "web").glob("lean.*.js"):
        used |= set(re.findall(r'\bt\("([A-Za-z0-9_.]+)"', js.read_text()))
    assert used, "no t(...) lookups found in web/lean.*.js"
    for lang in ("en", "zh"):
        main = _load(lang, "main.json")
        assert main["nodeCategories"]["lean"]
        for key in used:
            node = main["lean"]
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"locales/{lang}/main.json lacks lean.{key}"
                node = node[part]
            assert isinstance(node, str) and node, f"{lang}: lean.{key}"
    zh = _load("zh", "main.json")
    en = _load("en", "main.json")
    for key in used:
        def get(d):
            node = d["lean"]
            for part in key.split("."):
                node = node[part]
            return node
        assert set(re.findall(r"\{\w+\}", get(en))) == set(re.findall(r"\{\w+\}", get(zh))), key


def test_host_serves_both_locales(comfy):
    served = comfy.get("/i18n")
    for lang in ("en", "zh"):
        assert lang in served, f"/i18n has no {lang}: {list(served)}"
        defs = _load(lang, "nodeDefs.json")
        for node, d in defs.items():
            assert served[lang]["nodeDefs"][node] == d, f"/i18n {lang} {node} differs from the file"
        main = _load(lang, "main.json")
        assert served[lang]["lean"] == main["lean"]
        assert served[lang]["nodeCategories"]["lean"] == main["nodeCategories"]["lean"]
