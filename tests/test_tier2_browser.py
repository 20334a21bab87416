"""Tier 2, in a real browser: Debian chromium + Playwright against the host's own frontend.

A user drags each shipped workflow onto the editor: no missing-node dialog, the graph holds exactly the file's
nodes, no console error from a lean script (the frontend logs unrelated ones of its own).  The Canny workflow is
queued with the Run button and must succeed in /history.  Typing `<lora:` in a prompt box offers the LoRA files;
Prompt Batch shows its prompt count; the LLM node shows the streamed and the final text; Load Checkpoint (mmap)
shows its load report after a run; the LLM and Prompt Batch nodes do the same inside a subgraph; with the locale
set to zh a Lean node gets its Chinese title.

Every test runs once per node renderer the host's frontend offers (browser.frontend_modes): "litegraph" (nodes
drawn on the canvas) and, on frontends that have it, "vue" (the Vue node renderer, "Nodes 2.0", the user setting
Comfy.VueNodes.Enabled); each mode is a fresh page loaded after the setting is set.  What a node shows is checked
as the renderer shows it to the user: visible DOM text on the node (browser.node_texts).

Screenshots of every dropped workflow are saved under the pytest tmp dir (and to $LEAN_SCREENSHOTS when set;
scripts/make_thumbnails.py turns those into the workflows' .jpg thumbnails)."""
import collections
import json
import os
import pathlib
import re
import time

import pytest

from lean_testlib import REPO, browser, harness, prereq, shipped

pytestmark = [pytest.mark.tier2,
              pytest.mark.skipif(browser.available() is not None, reason=prereq(f"no browser: {browser.available()}"))]

FILES = [p for p in shipped.workflow_files() if p.stem not in shipped.PEER_WORKFLOWS]  # those: with their peer pack
MODES = browser.frontend_modes(harness.find_host()[0])


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


@pytest.fixture(scope="module", params=MODES)
def mode(request, host):
    """The node renderer of this round of tests; the user setting is set before the round's page loads."""
    browser.set_mode(host, request.param)
    yield request.param
    browser.set_mode(host, "litegraph")


@pytest.fixture(scope="module")
def page(b, host, mode):
    p = b.editor(host.url)
    assert browser.renderer(p) == mode, f"asked for the {mode} renderer, the page uses {browser.renderer(p)}"
    yield p
    p.close()


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
    """The check the drop tests rely on can fail: a workflow with an unknown node type is reported to the user
    (frontend 1.27: the missing-nodes dialog; 1.49: the error overlay), in every renderer mode."""
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
def test_dropped_workflow_loads_completely(b, page, mode, path, shots):
    before = len(b.lean_errors)
    data = shipped.load(path)
    browser.drop_workflow(page, path)  # waits until its previews and widgets have settled
    dialog = browser.missing_nodes_dialog(page)
    png = shots / f"{path.stem}-{mode}.png"
    page.screenshot(path=str(png))
    if os.environ.get("LEAN_SCREENSHOTS") and not dialog and mode == "litegraph":  # the graph alone, for thumbnails
        out = pathlib.Path(os.environ["LEAN_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        browser.graph_screenshot(page, out / f"{path.stem}.png")
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
    box = browser.text_box(page, nid, "text")
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
    before = len(b.lean_errors)
    nid = _fresh_node(page, "LeanPromptBatch")
    box = browser.text_box(page, nid, "text")
    box.wait_for(state="visible")
    box.click()
    box.press_sequentially("a cat\na dog\n# a comment\n{a red|a blue} bird", delay=5)
    page.wait_for_function("(id) => /3 prompts/.test(window.app.graph.getNodeById(id).lean_prompt_count_text || '')",
                           arg=nid, timeout=15_000)
    browser.wait_node_shows(page, nid, r"\b3 prompts")  # on the node, as the renderer shows it
    # combinatorial: 1 + 1 + 2 = 4 combinations
    page.evaluate("""(id) => { const n = window.app.graph.getNodeById(id);
        const w = n.widgets.find(w => w.name === 'mode'); w.value = 'combinatorial'; w.callback?.(w.value); }""", nid)
    page.wait_for_function("(id) => /4 prompts/.test(window.app.graph.getNodeById(id).lean_prompt_count_text || '')",
                           arg=nid, timeout=15_000)
    browser.wait_node_shows(page, nid, r"\b4 prompts")
    values = page.evaluate("(id) => window.app.graph.getNodeById(id).serialize().widgets_values", nid)
    assert not [v for v in values if "prompts" in str(v)], values  # the count display is not saved with the node
    # the shipped workflow, at the node size it was saved with: the count has room on the node
    path = shipped.WORKFLOWS / "lean_prompt_batch_16.json"
    browser.drop_workflow(page, path)
    nid = page.evaluate("window.app.graph._nodes.find(n => n.type === 'LeanPromptBatch').id")
    browser.wait_node_shows(page, nid, r"\b16 prompts")
    assert b.lean_errors[before:] == [], "\n".join(b.lean_errors[before:])


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
    texts = browser.wait_node_shows(page, nid, re.escape(res["thinking"]))  # as the renderer shows it
    assert any(res["prompt"] in t for t in texts), texts
    assert browser.text_box(page, nid, "lean_llm_output").evaluate("e => e.readOnly"), "the output box is editable"
    assert b.lean_errors[before:] == [], "\n".join(b.lean_errors[before:])


def _stream(page, node_ref, text):
    """The messages nodes/llm.py sends while the model writes, then the final one, dispatched on the frontend's api
    as the websocket delivers them."""
    browser.dispatch_api_event(page, "lean.llm.stream", {"node": node_ref, "start": True, "tokens": 0, "max_tokens": 12})
    for i, word in enumerate(text.split(" ")):
        browser.dispatch_api_event(page, "lean.llm.stream", {"node": node_ref, "delta": (" " if i else "") + word,
                                                             "tokens": i + 1, "max_tokens": 12})


def test_llm_node_shows_the_streamed_text(b, page):
    before = len(b.lean_errors)
    nid = _fresh_node(page, "LeanLLMPrompt")
    _stream(page, str(nid), "a misty harbour at dawn")
    texts = browser.wait_node_shows(page, nid, r"\[5/12 tokens\]\s+a misty harbour at dawn")
    browser.dispatch_api_event(page, "lean.llm.stream", {"node": str(nid), "done": True, "prompt": "a misty harbour",
                                                         "thinking": "", "status": "", "tokens": 5})
    texts = browser.wait_node_shows(page, nid, r"^a misty harbour$")
    assert not any("tokens]" in t for t in texts), texts
    assert b.lean_errors[before:] == [], "\n".join(b.lean_errors[before:])


def _fresh_subgraph(page, node_types):
    """An empty root graph whose nodes of `node_types` are converted into one subgraph (the frontend's own
    conversion); returns (subgraph node id, {type: id inside the subgraph})."""
    browser.close_subgraph(page)
    page.evaluate("""(types) => {
        const g = window.app.rootGraph || window.app.graph;
        g.clear();
        types.forEach((t, i) => { const n = window.LiteGraph.createNode(t); n.pos = [120 + 460 * i, 120];
                                  n.size = [420, 320]; g.add(n); });
    }""", node_types)
    ids = page.evaluate("() => (window.app.rootGraph || window.app.graph)._nodes.map(n => n.id)")
    sg = browser.convert_to_subgraph(page, ids)
    inner = {t: i for i, t in browser.subgraph_nodes(page, sg)}
    assert set(inner) == set(node_types), inner
    return sg, inner


def test_lean_nodes_work_inside_a_subgraph(b, page):
    """A Lean node inside a subgraph: the LLM stream, addressed by its execution id "<subgraph node>:<node>",
    reaches it (also while the root graph is shown), and Prompt Batch counts what is typed into it."""
    if not page.evaluate("typeof (window.app.rootGraph || window.app.graph).convertToSubgraph === 'function'"):
        pytest.skip("this frontend has no subgraphs")
    before = len(b.lean_errors)
    sg, inner = _fresh_subgraph(page, ["LeanLLMPrompt", "LeanPromptBatch"])
    try:
        ref = f"{sg}:{inner['LeanLLMPrompt']}"
        _stream(page, ref, "a red lantern")  # root graph on screen: the node is not drawn, but gets the text
        value = page.evaluate("""([sg, id]) => (window.app.rootGraph || window.app.graph).getNodeById(sg).subgraph
            .getNodeById(id).widgets.find(w => w.name === 'lean_llm_output').value""", [sg, inner["LeanLLMPrompt"]])
        assert "a red lantern" in value, value
        browser.open_subgraph(page, sg)
        browser.wait_node_shows(page, inner["LeanLLMPrompt"], r"\[3/12 tokens\]\s+a red lantern")
        _stream(page, ref, "a blue kite")  # the subgraph on screen
        browser.wait_node_shows(page, inner["LeanLLMPrompt"], r"\[3/12 tokens\]\s+a blue kite")

        pid = inner["LeanPromptBatch"]
        box = browser.text_box(page, pid, "text")
        box.wait_for(state="visible")
        box.click()
        box.press_sequentially("a cat\n{a red|a blue} bird", delay=5)
        browser.wait_node_shows(page, pid, r"\b2 prompts")
    finally:
        browser.close_subgraph(page)
    assert b.lean_errors[before:] == [], "\n".join(b.lean_errors[before:])


def _wait_history(host, before, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        new = {k: v for k, v in host.get("/history").items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("completed") or
                v.get("status", {}).get("status_str") == "error"]
        if done:
            return done[0]
        time.sleep(0.1)
    return None


def _queue_with_run_button(page, host):
    """Click the editor's Run button; the /history entry of what it queued, which must have succeeded."""
    before = set(host.get("/history"))
    page.locator('[data-testid="queue-button"]').first.click()
    entry = _wait_history(host, before)
    assert entry is not None, "the Run button queued nothing that finished"
    assert entry["status"]["status_str"] == "success", host.error_text(entry)
    return entry


def _report_is_shown(b, page, nid, widget, report, before_errors):
    """The report text the server sent appears on the node, in a read-only box, with no console error of ours."""
    texts = browser.wait_node_shows(page, nid, re.escape(report.splitlines()[0]))
    assert any(report in t for t in texts), texts
    assert browser.text_box(page, nid, widget).evaluate("e => e.readOnly"), f"the {widget} box is editable"
    assert b.lean_errors[before_errors:] == [], "\n".join(b.lean_errors[before_errors:])


def test_checkpoint_loader_shows_its_load_report_after_a_run(b, page, host, mode):
    """Queue Load Checkpoint (mmap) -> VAE Decode -> Preview with the Run button; the report the server sends
    back (in /history) appears on the node, as the renderer shows it."""
    before_errors = len(b.lean_errors)
    load_mode = {"litegraph": "mmap", "vue": "read"}[mode]  # a real load in each round, not the cached one
    nid = page.evaluate("""([ckpt, loadMode]) => {
        const g = window.app.graph; g.clear();
        const add = (t, x, y) => { const n = window.LiteGraph.createNode(t); n.pos = [x, y]; g.add(n); return n; };
        const ld = add('LeanCheckpointLoader', 60, 80), lat = add('EmptyLatentImage', 60, 420);
        const dec = add('VAEDecode', 520, 200), pv = add('PreviewImage', 820, 200);
        const set = (n, name, v) => { n.widgets.find(w => w.name === name).value = v; };
        set(ld, 'ckpt_name', ckpt); set(ld, 'load_mode', loadMode); set(ld, 'load_clip', false);
        set(lat, 'width', 64); set(lat, 'height', 64);
        lat.connect(0, dec, 0); ld.connect(2, dec, 1); dec.connect(0, pv, 0);
        window.app.canvas.ds.scale = 1; window.app.canvas.ds.offset = [0, 0];
        window.app.canvas.setDirty(true, true);
        return ld.id;
    }""", ["lean_sd15.safetensors", load_mode])
    entry = _queue_with_run_button(page, host)
    report = entry["outputs"][str(nid)]["text"][0]
    assert "lean_sd15.safetensors" in report and f"mode {load_mode}" in report, report
    _report_is_shown(b, page, nid, "load_report", report, before_errors)


def test_system_check_shows_its_report_on_the_node(b, page, host, mode):
    """System Check (Lean) queued with the Run button: the report in /history appears, read-only, on the node."""
    before_errors = len(b.lean_errors)
    nid = page.evaluate("""() => {
        const g = window.app.graph; g.clear();
        const n = window.LiteGraph.createNode('LeanSystemCheck'); n.pos = [60, 80]; g.add(n);
        window.app.canvas.ds.scale = 1; window.app.canvas.ds.offset = [0, 0];
        window.app.canvas.setDirty(true, true);
        return n.id;
    }""")
    entry = _queue_with_run_button(page, host)
    report = entry["outputs"][str(nid)]["text"][0]
    assert report.startswith("== Lean Nodes system check ==") and "-- Result:" in report, report[:500]
    _report_is_shown(b, page, nid, "system_report", report, before_errors)


def test_run_button_queues_the_canny_workflow(b, page, host):
    path = shipped.WORKFLOWS / "lean_canny_controlnet.json"
    browser.drop_workflow(page, path)
    page.evaluate("""() => {  // small and fast on CPU: 64x64, 1 step
        for (const n of window.app.graph._nodes) {
            const set = (name, v) => { const w = n.widgets?.find(w => w.name === name); if (w) w.value = v; };
            if (n.type === 'EmptyLatentImage') { set('width', 64); set('height', 64); }
            if (n.type === 'KSampler') set('steps', 1);
            if (n.type === 'LeanCanny') set('resolution', 64);
        }
    }""")
    entry = _queue_with_run_button(page, host)
    classes = {n["class_type"] for n in entry["prompt"][2].values()}
    assert {"LeanCanny", "ControlNetApplyAdvanced", "KSampler"} <= classes
    assert [f for f in host.output_files(entry) if f.is_file()]


def test_locale_zh_shows_translated_node_titles(b, host, mode):
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


def _widget_inputs(host, node_type):
    """(essential, advanced) widget input names of a node, from the server's /object_info (not the frontend)."""
    spec = host.object_info(node_type)["input"]
    essential, advanced = [], []
    for group in ("required", "optional"):
        for name, s in (spec.get(group) or {}).items():
            kind = s[0]
            opts = s[1] if len(s) > 1 and isinstance(s[1], dict) else {}
            is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") \
                or opts.get("forceInput") is False
            if is_widget and not opts.get("forceInput"):
                (advanced if opts.get("advanced") else essential).append(name)
    return essential, advanced


LEAN_WIDGET_NODES = sorted(set(shipped.declared_nodes()) - {"LeanSystemCheck", "LeanPromptBatchCheck"})  # no widgets


@pytest.mark.parametrize("node_type", LEAN_WIDGET_NODES)
def test_fresh_node_shows_the_essential_widgets_and_expanding_shows_the_rest(b, page, host, mode, node_type):
    if mode != "vue":  # the classic renderer: only the node's widget list is read, on the round's page
        _check_folded_inputs(page, host, mode, node_type)
        return
    # a page of its own: expanding a node's advanced inputs changes editor state (the side panel) for what follows
    page = b.editor(host.url)
    try:
        _check_folded_inputs(page, host, mode, node_type)
    finally:
        page.close()


def _check_folded_inputs(page, host, mode, node_type):
    """Vue renderer (frontend 1.49+): a fresh node shows only its essential widgets, at most four, and "Show advanced
    inputs" shows the rest.  The classic renderer ignores the flag: every widget is on the node, none lost."""
    essential, advanced = _widget_inputs(host, node_type)
    assert 0 < len(essential) <= 4, (node_type, essential, advanced)
    nid = page.evaluate("""(t) => {
        const g = window.app.graph; g.clear();
        const n = window.LiteGraph.createNode(t); n.pos = [120, 120]; g.add(n);
        window.app.canvas.ds.scale = 1; window.app.canvas.ds.offset = [0, 0];
        window.app.canvas.setDirty(true, true);
        return n.id;
    }""", node_type)
    names = page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.map(w => w.name)", nid)
    assert set(essential + advanced) <= set(names), (essential, advanced, names)
    if mode != "vue":
        return
    el = page.locator(f'.lg-node[data-node-id="{nid}"]')
    el.wait_for(state="visible")

    def shown():
        lines = {l.strip() for l in el.inner_text().splitlines()}
        return {n for n in essential + advanced if n in lines}

    page.wait_for_timeout(300)
    assert shown() == set(essential), f"{node_type}: a fresh node shows {sorted(shown())}, expected {essential}"
    button = el.get_by_text("Show advanced inputs")
    if not advanced:
        assert button.count() == 0, f"{node_type} has no advanced input but offers to show them"
        return
    button.click()
    deadline = time.time() + 10
    while shown() != set(essential + advanced) and time.time() < deadline:
        page.wait_for_timeout(200)
    assert shown() == set(essential + advanced), f"{node_type}: expanded shows {sorted(shown())}"
