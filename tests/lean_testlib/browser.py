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
    page.wait_for_timeout(500)  # let dialogs and widget callbacks settle


def node_types(page):
    return page.evaluate("window.app.graph._nodes.map(n => n.type)")


def missing_nodes_dialog(page):
    """The text of the editor's 'missing nodes' dialog when it is open, else None."""
    return page.evaluate("""() => {
        const list = document.querySelector('.comfy-missing-nodes');
        if (!list) return null;
        const dlg = list.closest('.p-dialog') || list;
        return dlg.innerText || 'missing nodes';
    }""")


def close_dialogs(page):
    page.keyboard.press("Escape")
    page.evaluate("""() => document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close')
                     .forEach(b => b.click())""")
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
