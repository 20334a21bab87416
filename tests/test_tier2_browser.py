"""Tier 2, in a real browser: Debian chromium + Playwright against the host's own frontend.

A user drags each shipped workflow onto the editor: no missing-node dialog, the graph holds exactly the file's
nodes, no console error from a lean script (the frontend logs unrelated ones of its own).  The Canny workflow is
queued with the Run button and must succeed in /history.  Typing `<lora:` in a prompt box offers the LoRA files;
Prompt Batch shows its prompt count; with the locale set to zh a Lean node gets its Chinese title.

Screenshots of every dropped workflow are saved under the pytest tmp dir (and to $LEAN_SCREENSHOTS when set;
scripts/make_thumbnails.py turns those into the workflows' .jpg thumbnails)."""
import collections
import json
import os
import pathlib
import time

import pytest

from lean_testlib import REPO, browser, prereq, shipped

pytestmark = [pytest.mark.tier2,
              pytest.mark.skipif(browser.available() is not None, reason=prereq(f"no browser: {browser.available()}"))]

FILES = shipped.workflow_files()


@pytest.fixture(scope="module")
def host(comfy_sd15):
    shipped.put_fixtures(comfy_sd15.base)
    browser.set_setting(comfy_sd15, "Comfy.Workflow.ShowMissingModelsWarning", False)
    browser.set_setting(comfy_sd15, "Comfy.Locale", "en")
    # clean screenshots: no minimap or render stats, text drawn at every zoom
    browser.set_setting(comfy_sd15, "Comfy.Minimap.Visible", False)
    browser.set_setting(comfy_sd15, "Comfy.Graph.CanvasInfo", False)
    browser.set_setting(comfy_sd15, "LiteGraph.Canvas.MinFontSizeForLOD", 1)
    return comfy_sd15


@pytest.fixture(scope="module")
def b():
    with browser.Browser() as br:
        yield br


@pytest.fixture(scope="module")
def page(b, host):
    return b.editor(host.url)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {d}")
    return d


def test_lean_extensions_register_without_errors(b, page):
    names = browser.lean_extensions(page)
    for ext in ("lean.LoraAutocomplete", "lean.PromptBatch", "lean.LLM"):
        assert ext in names, f"{ext} not registered (got {names})"
    assert not b.lean_errors, "\n".join(b.lean_errors)


def test_missing_node_dialog_is_detected(page):
    """The check the drop tests rely on can fail: a workflow with an unknown node type opens the dialog."""
    bad = {"last_node_id": 1, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4,
           "nodes": [{"id": 1, "type": "LeanNoSuchNode", "pos": [0, 0], "size": [200, 60], "flags": {}, "order": 0,
                      "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": []}]}
    browser.drop_workflow(page, bad, "bad.json")
    deadline = time.time() + 10
    while time.time() < deadline and not browser.missing_nodes_dialog(page):
        page.wait_for_timeout(200)
    text = browser.missing_nodes_dialog(page)
    browser.close_dialogs(page)
    assert text and "LeanNoSuchNode" in text, text


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_dropped_workflow_loads_completely(b, page, path, shots):
    before = len(b.lean_errors)
    data = shipped.load(path)
    if shipped.not_in_this_checkout(data):
        pytest.skip(f"feature not merged in this checkout: {shipped.not_in_this_checkout(data)}")
    browser.drop_workflow(page, path)
    page.wait_for_timeout(1500)  # previews and widgets
    dialog = browser.missing_nodes_dialog(page)
    png = shots / f"{path.stem}.png"
    page.screenshot(path=str(png))
    if os.environ.get("LEAN_SCREENSHOTS") and not dialog:  # the graph alone, for the thumbnails
        out = pathlib.Path(os.environ["LEAN_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        browser.graph_screenshot(page, out / png.name)
    if dialog:
        browser.close_dialogs(page)
    assert not dialog, f"missing-node dialog after dropping {path.name}: {dialog}"
    assert not browser.unregistered_types(page)
    assert not browser.broken_nodes(page), f"nodes the editor could not build: {browser.broken_nodes(page)}"
    got = collections.Counter(browser.node_types(page))
    want = collections.Counter(n["type"] for n in data["nodes"])
    assert got == want, f"{path.name}: graph has {dict(got)}, file has {dict(want)}"
    assert b.lean_errors[before:] == [], "\n".join(b.lean_errors[before:])
    assert png.stat().st_size > 10_000


def _fresh_node(page, node_type):
    """An empty graph with one node at a readable zoom; returns its id."""
    return page.evaluate("""(t) => {
        window.app.graph.clear();
        const n = window.LiteGraph.createNode(t);
        n.pos = [120, 120];
        n.size = [420, 320];
        window.app.graph.add(n);
        window.app.canvas.ds.scale = 1;
        window.app.canvas.ds.offset = [0, 0];
        window.app.canvas.setDirty(true, true);
        return n.id;
    }""", node_type)


def test_lora_autocomplete_offers_the_loras_folder(b, page):
    before = len(b.lean_errors)
    nid = _fresh_node(page, "CLIPTextEncode")
    box = page.locator("textarea.comfy-multiline-input").first
    box.wait_for(state="visible")
    box.click()
    box.press_sequentially("a castle <lora:add", delay=20)
    item = page.locator(f'.lean-lora-popup .lean-lora-item[data-name="{shipped.LORA}"]')
    item.wait_for(state="visible", timeout=15_000)
    page.keyboard.press("Enter")
    value = page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'text').value", nid)
    assert value == "a castle <lora:add_detail:1>", value
    assert not page.locator(".lean-lora-popup").is_visible()
    # no popup when the text is not a LoRA tag
    box.press_sequentially(" <embedding:", delay=20)
    page.wait_for_timeout(600)
    assert not page.locator(".lean-lora-popup").is_visible()
    assert b.lean_errors[before:] == [], "\n".join(b.lean_errors[before:])


def test_prompt_batch_shows_its_prompt_count(b, page, host):
    if "LeanPromptBatch" not in shipped.declared_nodes():
        pytest.skip("LeanPromptBatch is not merged in this checkout")
    nid = _fresh_node(page, "LeanPromptBatch")
    box = page.locator("textarea.comfy-multiline-input").first
    box.wait_for(state="visible")
    box.click()
    box.press_sequentially("a cat\na dog\n# a comment\n{a red|a blue} bird", delay=5)
    page.wait_for_function("(id) => /3 prompts/.test(window.app.graph.getNodeById(id).lean_prompt_count_text || '')",
                           arg=nid, timeout=15_000)
    # combinatorial: 1 + 1 + 2 = 4 combinations
    page.evaluate("""(id) => { const n = window.app.graph.getNodeById(id);
        const w = n.widgets.find(w => w.name === 'mode'); w.value = 'combinatorial'; w.callback?.(w.value); }""", nid)
    page.wait_for_function("(id) => /4 prompts/.test(window.app.graph.getNodeById(id).lean_prompt_count_text || '')",
                           arg=nid, timeout=15_000)


def test_llm_node_shows_the_prompt_with_thinking_collapsed(b, page):
    """After a run the LLM node shows the prompt; the reasoning stays collapsed until the toggle opens it, and
    neither display widget is saved into widgets_values."""
    before = len(b.lean_errors)
    nid = _fresh_node(page, "LeanLLMPrompt")
    res = {"prompt": "a lighthouse at dusk, oil painting", "thinking": "The user wants a calm scene.", "status": "", "tokens": 9}
    text = "(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'lean_llm_output').value"
    n_values = page.evaluate("(id) => window.app.graph.getNodeById(id).serialize().widgets_values.length", nid)
    page.evaluate("([id, r]) => window.app.graph.getNodeById(id).onExecuted({lean_llm: [r]})", [nid, res])
    shown = page.evaluate(text, nid)
    assert res["prompt"] in shown and res["thinking"] not in shown and "collapsed" in shown, shown
    page.evaluate("""(id) => { const n = window.app.graph.getNodeById(id);
        const b = n.widgets.find(w => w.name === 'lean_llm_thinking_toggle'); b.callback(b); }""", nid)
    shown = page.evaluate(text, nid)
    assert res["prompt"] in shown and res["thinking"] in shown, shown
    values = page.evaluate("(id) => window.app.graph.getNodeById(id).serialize().widgets_values", nid)
    assert len(values) == n_values, values  # the display widgets add nothing to the saved widget values
    assert b.lean_errors[before:] == [], "\n".join(b.lean_errors[before:])


def test_run_button_queues_the_canny_workflow(b, page, host):
    path = shipped.WORKFLOWS / "lean_canny_controlnet.json"
    if shipped.not_in_this_checkout(shipped.load(path)):
        pytest.skip("LeanCanny is not merged in this checkout")
    before = set(host.get("/history"))
    browser.drop_workflow(page, path)
    page.evaluate("""() => {  // small and fast on CPU: 64x64, 1 step
        for (const n of window.app.graph._nodes) {
            const set = (name, v) => { const w = n.widgets?.find(w => w.name === name); if (w) w.value = v; };
            if (n.type === 'EmptyLatentImage') { set('width', 64); set('height', 64); }
            if (n.type === 'KSampler') set('steps', 1);
            if (n.type === 'LeanCanny') set('resolution', 64);
        }
    }""")
    page.locator('[data-testid="queue-button"]').first.click()
    deadline = time.time() + 600
    entry = None
    while time.time() < deadline:
        new = {k: v for k, v in host.get("/history").items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("completed") or
                v.get("status", {}).get("status_str") == "error"]
        if done:
            entry = done[0]
            break
        time.sleep(1)
    assert entry is not None, "the Run button queued nothing that finished"
    assert entry["status"]["status_str"] == "success", host.error_text(entry)
    classes = {n["class_type"] for n in entry["prompt"][2].values()}
    assert {"LeanCanny", "ControlNetApplyAdvanced", "KSampler"} <= classes
    assert [f for f in host.output_files(entry) if f.is_file()]


def test_locale_zh_shows_translated_node_titles(b, host):
    zh = json.loads((REPO / "locales" / "zh" / "nodeDefs.json").read_text())
    try:
        browser.set_setting(host, "Comfy.Locale", "zh")
        page = b.editor(host.url)
        checked = 0
        for node_type in ("LeanLLMLoader", "LeanCanny", "LeanPromptBatch"):
            if not page.evaluate("(t) => t in window.LiteGraph.registered_node_types", node_type):
                continue
            title = page.evaluate("(t) => { const n = window.LiteGraph.createNode(t); return n.title; }", node_type)
            assert title == zh[node_type]["display_name"], (node_type, title)
            checked += 1
        assert checked
        page.close()
    finally:
        browser.set_setting(host, "Comfy.Locale", "en")
