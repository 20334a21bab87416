"""Drive the host's real frontend in Debian's chromium with Playwright (sync API), as a user would.

    with Browser() as b:
        page = b.editor(host.url)                # editor loaded, window.app.graph ready
        drop_workflow(page, path)                # a `drop` event carrying the file, on the canvas
        node_types(page), missing_nodes_dialog(page), b.lean_errors
"""
import json
import os
import pathlib
import shutil
import time

CHROMIUM = os.environ.get("LEAN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
VIEWPORT = {"width": 1920, "height": 1080}


def available():
    """None when a browser test can run, else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set LEAN_CHROMIUM)"
    return None


def set_setting(host, key, value):
    status, data = host.request(f"/settings/{key}", value, method="POST")
    if status != 200:
        raise RuntimeError(f"POST /settings/{key} -> {status}: {data}")


# The node renderers a frontend offers.  "litegraph": nodes drawn on the canvas, text boxes as DOM widgets laid
# over it.  "vue": the Vue node renderer ("Nodes 2.0", setting Comfy.VueNodes.Enabled), every node a DOM element.
# Frontend 1.27 has no Vue renderer (no such setting); 1.49 has it.
VUE_SETTING = "Comfy.VueNodes.Enabled"
VUE_SINCE = (1, 30)


def frontend_version(comfy_path):
    """(major, minor, patch) of the frontend package a host serves, from its requirements.txt pin; None if unknown."""
    import re
    try:
        text = (pathlib.Path(comfy_path) / "requirements.txt").read_text()
    except OSError:
        return None
    m = re.search(r"^comfyui[-_]frontend[-_]package\s*==\s*(\d+)\.(\d+)\.(\d+)", text, re.M | re.I)
    return tuple(int(x) for x in m.groups()) if m else None


def frontend_modes(comfy_path):
    """The renderer modes to test on a host: ["litegraph"], plus "vue" when its frontend has the Vue renderer.
    A browser test in "vue" mode asserts that the renderer really is on (see set_mode), so a wrong guess
    here fails instead of testing litegraph twice."""
    v = frontend_version(comfy_path) if comfy_path else None
    return ["litegraph", "vue"] if v and v[:2] >= VUE_SINCE else ["litegraph"]


def set_mode(host, mode):
    """The user setting for a renderer mode; takes effect on the next page load."""
    set_setting(host, VUE_SETTING, mode == "vue")


def renderer(page):
    """"vue" when the page draws nodes with the Vue renderer, else "litegraph"."""
    return "vue" if page.evaluate("!!window.LiteGraph.vueNodesMode") else "litegraph"


def is_lean_message(text, url=""):
    """A console message that comes from this pack's scripts (served under /extensions/comfyui-lean/)."""
    return "comfyui-lean" in (url or "") or "comfyui-lean" in (text or "") or "[lean" in (text or "").lower()


class Browser:
    def __init__(self, viewport=VIEWPORT):
        self.viewport = viewport
        self.console = []        # (type, text, url)
        self.page_errors = []    # str

    def __enter__(self):
        from playwright.sync_api import sync_playwright
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        self.context = self.browser.new_context(viewport=self.viewport)
        return self

    def __exit__(self, *exc):
        try:
            self.browser.close()
        finally:
            self._pw.stop()

    def new_page(self):
        page = self.context.new_page()
        page.set_default_timeout(60_000)
        page.on("console", lambda m: self.console.append((m.type, m.text, (m.location or {}).get("url", ""))))
        page.on("pageerror", lambda e: self.page_errors.append(f"{e.name}: {e.message}\n{e.stack or ''}"))
        pending = page.lean_pending = set()  # HTTP requests of the page still in flight (settle() waits for none)
        page.on("request", lambda r: pending.add(r))  # Playwright takes Python functions, not builtins
        page.on("requestfinished", lambda r: pending.discard(r))
        page.on("requestfailed", lambda r: pending.discard(r))
        return page

    def editor(self, url, page=None):
        page = page or self.new_page()
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        wait_ready(page)
        return page

    @property
    def lean_errors(self):
        errs = [f"console.{t}: {text} ({url})" for t, text, url in self.console
                if t == "error" and is_lean_message(text, url)]
        errs += [e for e in self.page_errors if is_lean_message(e)]
        return errs


def wait_ready(page, timeout=120_000):
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=timeout)
    # the extensions (ours included) are registered once the node definitions have been loaded
    page.wait_for_function("Object.keys(window.LiteGraph.registered_node_types || {}).length > 50", timeout=timeout)
    # frontend 1.49 blocks the whole page (a full-screen PrimeVue BlockUI mask) while its loading spinner is on;
    # clicks land on the mask until it is gone
    page.wait_for_function("!document.querySelector('.p-blockui-mask')", timeout=timeout)
    work_around_missing_default_loaders(page)


def work_around_missing_default_loaders(page):
    """Frontend 1.27 maps model folders to stock loader nodes (CheckpointLoaderSimple, LoraLoader,
    UpscaleModelLoader, ...).  When one of those nodes is absent from the host (here UpscaleModelLoader: the
    host's optional `spandrel` package is not installed), every later node with a `ckpt_name`/`lora_name`/
    `vae_name` combo fails to build (TypeError in isAssetBrowserEligible) and is queued without a class_type.
    A complete ComfyUI install never hits this; the test host does, so drop the providers whose node is
    missing.  Returns the model folders fixed (empty on a complete host)."""
    return page.evaluate("""() => {
        const pinia = document.querySelector('#vue-app')?.__vue_app__?.config?.globalProperties?.$pinia;
        const store = pinia?._s?.get('modelToNode');
        if (!store) return [];
        store.registerDefaults();
        const fixed = [];
        for (const [folder, providers] of Object.entries(store.modelToNodeMap)) {
            const ok = providers.filter(p => p && p.nodeDef);
            if (ok.length !== providers.length) { store.modelToNodeMap[folder] = ok; fixed.push(folder); }
        }
        return fixed;
    }""")


def lean_extensions(page):
    return page.evaluate("(window.app.extensions || []).map(e => e.name).filter(n => n.startsWith('lean.'))")


def drop_workflow(page, path_or_data, name=None):
    """Dispatch a `drop` event carrying the workflow as a File on the graph canvas, like a file dragged
    from the desktop; waits until the graph holds the dropped nodes."""
    if isinstance(path_or_data, (str, pathlib.Path)):
        text = pathlib.Path(path_or_data).read_text()
        name = name or pathlib.Path(path_or_data).name
    else:
        text = json.dumps(path_or_data)
        name = name or "workflow.json"
    n = len(json.loads(text)["nodes"])
    page.evaluate("""([text, name]) => {
        const canvas = document.querySelector('canvas#graph-canvas');
        const dt = new DataTransfer();
        dt.items.add(new File([text], name, {type: 'application/json'}));
        const r = canvas.getBoundingClientRect();
        for (const type of ['dragenter', 'dragover', 'drop']) {
            canvas.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt,
                                                      clientX: r.left + r.width / 2, clientY: r.top + r.height / 2}));
        }
    }""", [text, name])
    page.wait_for_function("n => window.app.graph._nodes.length === n", arg=n, timeout=60_000)
    settle(page)


# Prompt Batch's preview asks the server DEBOUNCE_MS (300, web/lean.promptBatch.js) after a change
SETTLE_FIRST_MS = 400


def settle(page, timeout=10.0):
    """Let dialogs, widget callbacks and the requests they start finish: SETTLE_FIRST_MS (the longest debounce of
    the pack's scripts, plus margin), then until no HTTP request of the page is in flight (pages made by
    Browser.new_page count them) and two animation frames have been drawn.  Replaces fixed waits of 0.5-2 s per
    dropped workflow; a request still open after `timeout` s is left (the checks that follow then see its state)."""
    page.wait_for_timeout(SETTLE_FIRST_MS)
    pending = getattr(page, "lean_pending", None)
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        page.wait_for_timeout(50)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def node_types(page):
    return page.evaluate("window.app.graph._nodes.map(n => n.type)")


def missing_nodes_dialog(page):
    """The text of what the editor shows the user about missing node types, when it shows it, else None.

    Frontend 1.27 opens a dialog listing them (.comfy-missing-nodes).  Frontend 1.49 opens no dialog: it raises
    an error overlay in the top right of the canvas ([data-testid=error-overlay], "Missing node: <type>" for
    one type, "N errors" for several) whose "View details" button opens the Errors tab of the right side
    panel.  The overlay also carries other kinds of error (a missing model, a failed run), so it only counts here
    while the frontend's missing-nodes store holds types; its text is returned with those types appended (the
    types the overlay names only when there is a single one)."""
    return page.evaluate("""() => {
        const list = document.querySelector('.comfy-missing-nodes');
        if (list) {
            const dlg = list.closest('.p-dialog') || list;
            return dlg.innerText || 'missing nodes';
        }
        const overlay = document.querySelector('[data-testid="error-overlay"]');
        if (!overlay || !overlay.offsetParent) return null;
        const pinia = document.querySelector('#vue-app')?.__vue_app__?.config?.globalProperties?.$pinia;
        const types = (pinia?._s?.get('missingNodesError')?.missingNodesError?.nodeTypes || [])
            .map(t => typeof t === 'string' ? t : t.type);
        if (!types.length) return null;
        return overlay.innerText + '\\nmissing node types: ' + types.join(', ');
    }""")


def close_dialogs(page):
    page.keyboard.press("Escape")
    page.evaluate("""() => document.querySelectorAll(
        '.p-dialog-close-button, .p-dialog-header-close, [data-testid="error-overlay-dismiss"]').forEach(b => b.click())""")
    page.wait_for_timeout(200)


def unregistered_types(page):
    return page.evaluate("""() => window.app.graph._nodes.map(n => n.type)
        .filter(t => !(t in window.LiteGraph.registered_node_types))""")


def command(page, command_id):
    """Run one of the editor's commands (e.g. Workspace.ToggleFocusMode)."""
    return page.evaluate("(id) => window.app.extensionManager.command.execute(id)", command_id)


def broken_nodes(page):
    """Nodes the editor could not build from their definition (no comfyClass: they would be queued without a
    class_type).  Frontend-only nodes (notes, reroutes) are virtual and not counted."""
    return page.evaluate("window.app.graph._nodes.filter(n => !n.isVirtualNode && !n.comfyClass).map(n => [n.id, n.type])")


def graph_screenshot(page, path, margin=16):
    """The whole graph alone: focus mode (no menus), fit to the view, clipped to the nodes and groups."""
    command(page, "Workspace.ToggleFocusMode")
    try:
        page.wait_for_timeout(400)
        command(page, "Comfy.Canvas.FitView")
        page.wait_for_timeout(800)
        box = page.evaluate("""() => {
            const c = window.app.canvas, ds = c.ds, g = window.app.graph;
            let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
            const add = (x, y, w, h) => { x0 = Math.min(x0, x); y0 = Math.min(y0, y);
                                          x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h); };
            for (const n of g._nodes) add(n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30);
            for (const gr of g._groups || []) { const b = gr._bounding || gr.bounding; add(b[0], b[1], b[2], b[3]); }
            const r = c.canvas.getBoundingClientRect();
            return {x: r.left + (x0 + ds.offset[0]) * ds.scale, y: r.top + (y0 + ds.offset[1]) * ds.scale,
                    width: (x1 - x0) * ds.scale, height: (y1 - y0) * ds.scale};
        }""")
        vp = page.viewport_size
        x = max(0, box["x"] - margin)
        y = max(0, box["y"] - margin)
        clip = {"x": x, "y": y, "width": min(vp["width"] - x, box["width"] + 2 * margin),
                "height": min(vp["height"] - y, box["height"] + 2 * margin)}
        page.screenshot(path=str(path), clip=clip)
    finally:
        command(page, "Workspace.ToggleFocusMode")
        page.wait_for_timeout(300)
    return path


_VISIBLE_JS = """(el) => {
    if (!el || !el.isConnected) return false;
    if (el.checkVisibility && !el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) return false;
    const r = el.getBoundingClientRect();
    // at least a line of text high: a widget squeezed to a few pixels shows nothing
    return r.width >= 8 && r.height >= 8 && r.right > 0 && r.bottom > 0 && r.left < innerWidth && r.top < innerHeight;
}"""


def node_texts(page, node_id):
    """The texts a node shows the user as DOM, in the renderer the page uses, visible elements only: with the Vue
    renderer the node's element (.lg-node[data-node-id]) -- its text and the values of its text boxes; with
    litegraph the DOM widgets laid over the canvas (text boxes, DOM elements) of that node.  Canvas-drawn text is
    not in it.  The node must be in the graph the canvas shows (a node inside a subgraph: open the subgraph)."""
    return page.evaluate("""([id, visibleSrc]) => {
        const visible = eval(visibleSrc);
        const out = [];
        const take = (el) => {
            if (!visible(el)) return;
            if (el instanceof HTMLTextAreaElement || el instanceof HTMLInputElement) out.push(el.value);
            else out.push(el.innerText);
        };
        if (window.LiteGraph.vueNodesMode) {
            const el = document.querySelector(`.lg-node[data-node-id="${id}"]`);
            if (!visible(el)) return out;
            out.push(el.innerText);
            el.querySelectorAll('textarea, input').forEach(take);
            return out;
        }
        const node = window.app.canvas.graph.getNodeById(id);
        for (const w of node?.widgets || []) take(w.inputEl || w.element);
        return out;
    }""", [node_id, _VISIBLE_JS])


def wait_node_shows(page, node_id, pattern, timeout=15_000):
    """Wait until node_texts(page, node_id) has a text matching the regular expression `pattern`; returns them."""
    import re
    deadline = time.time() + timeout / 1000
    while True:
        texts = node_texts(page, node_id)
        if any(re.search(pattern, t or "") for t in texts):
            return texts
        if time.time() > deadline:
            raise AssertionError(f"node {node_id} ({renderer(page)} renderer) does not show /{pattern}/; it shows {texts}")
        page.wait_for_timeout(200)


def text_box(page, node_id, widget_name):
    """A Locator for the text box a user types into for a node's text widget, in the renderer the page uses
    (litegraph: the widget's DOM textarea over the canvas; Vue: the textarea inside the node labelled with the
    widget's name)."""
    tag = f"{node_id}-{widget_name}".replace(":", "-")
    found = page.evaluate("""([id, name, tag]) => {
        let el = null;
        if (window.LiteGraph.vueNodesMode) {
            const node = document.querySelector(`.lg-node[data-node-id="${id}"]`);
            const w = window.app.canvas.graph.getNodeById(id)?.widgets?.find(w => w.name === name);
            const label = [...(node?.querySelectorAll('label') || [])]
                .find(l => l.textContent.trim() === (w?.label || name));
            el = label?.htmlFor ? document.getElementById(label.htmlFor) : null;
            if (el && !(el instanceof HTMLTextAreaElement)) el = el.querySelector?.('textarea') || null;
        } else {
            const w = window.app.canvas.graph.getNodeById(id)?.widgets?.find(w => w.name === name);
            el = w?.inputEl || null;
        }
        if (!el) return false;
        el.setAttribute('data-lean-box', tag);
        return true;
    }""", [node_id, widget_name, tag])
    if not found:
        raise AssertionError(f"no text box for widget {widget_name!r} of node {node_id} ({renderer(page)} renderer)")
    return page.locator(f'[data-lean-box="{tag}"]')


def dispatch_api_event(page, event_type, detail):
    """Dispatch a server message on the frontend's api object, as the websocket would (`api.addEventListener`)."""
    page.evaluate("""([type, detail]) => {
        const api = window.app.api || window.comfyAPI?.api?.api;
        api.dispatchCustomEvent(type, detail);
    }""", [event_type, detail])


def convert_to_subgraph(page, node_ids):
    """Turn nodes of the root graph into a subgraph (the frontend's own "Convert to Subgraph"); returns the id of
    the new subgraph node in the root graph (find the nodes inside with subgraph_nodes)."""
    return page.evaluate("""(ids) => {
        const g = window.app.rootGraph || window.app.graph;
        const nodes = ids.map(id => g.getNodeById(id));
        const {node} = g.convertToSubgraph(new Set(nodes));
        return node.id;
    }""", node_ids)


def subgraph_nodes(page, subgraph_node_id):
    """[(id, type)] of the nodes inside the subgraph a root-graph node instantiates."""
    return page.evaluate("""(id) => {
        const g = window.app.rootGraph || window.app.graph;
        const sg = g.getNodeById(id).subgraph;
        return (sg.nodes || sg._nodes).map(n => [n.id, n.type]);
    }""", subgraph_node_id)


def open_subgraph(page, subgraph_node_id):
    """Open (navigate into) the subgraph a root-graph node instantiates, as double-clicking its title would."""
    page.evaluate("""(id) => {
        const g = window.app.rootGraph || window.app.graph;
        const n = g.getNodeById(id);
        window.app.canvas.openSubgraph(n.subgraph, n);
        window.app.canvas.ds.scale = 1;
        window.app.canvas.ds.offset = [0, 0];
        window.app.canvas.setDirty(true, true);
    }""", subgraph_node_id)
    page.wait_for_timeout(800)


def close_subgraph(page):
    page.evaluate("""() => {
        const root = window.app.rootGraph || window.app.graph;
        if (window.app.canvas.graph !== root) window.app.canvas.setGraph(root);
    }""")
    page.wait_for_timeout(300)
