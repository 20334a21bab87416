// lean.PromptBatch: LeanPromptBatch shows how many prompts its current text expands to, before queueing.
// Asks GET /lean/prompt_batch/preview (read-only, same expansion as the node) a moment after each edit of
// text / mode / count / prefix / suffix / text_file, and shows "→ N prompts" on the node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

import { t } from "./lean.i18n.js";

const NODE = "LeanPromptBatch";
const WIDGET = "lean_prompt_count";
const WATCH = ["text", "mode", "count", "prefix", "suffix", "text_file"];
const DEBOUNCE_MS = 300;
const MAX_URL = 7000; // the host refuses longer request lines

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function isLinked(node, name) {
  const inp = node.inputs?.find((i) => i.name === name);
  return inp?.link != null;
}

const OK_COLOR = "#9c9";
const ERROR_COLOR = "#e77";

// The count is a DOM element (addDOMWidget), so both node renderers show it as text: litegraph lays it over the
// canvas, the Vue node renderer ("Nodes 2.0") puts it inside the node.  A canvas-drawn widget would be a picture
// in a <canvas> under the Vue renderer.  Hosts without addDOMWidget get the canvas-drawn one.
function countWidget(node) {
  let w = widget(node, WIDGET);
  if (w) return w;
  if (typeof node.addDOMWidget === "function") {
    const el = document.createElement("div");
    el.className = "lean-prompt-count";
    Object.assign(el.style, {
      font: "12px sans-serif", padding: "2px 10px", color: OK_COLOR, whiteSpace: "nowrap", overflow: "hidden",
      textOverflow: "ellipsis", pointerEvents: "none", boxSizing: "border-box", lineHeight: "18px",
    });
    w = node.addDOMWidget(WIDGET, "lean_prompt_count", el, {
      serialize: false, // display only: not part of widgets_values (positions are a contract), never an input
      hideOnZoom: false,
      margin: 2, // the default (10 px each side) leaves no room for a line of text
      getValue: () => el.textContent,
      setValue: (v) => { el.textContent = v ?? ""; },
      getMinHeight: () => 24,
      getMaxHeight: () => 24,
    });
    w.serialize = false;
    // a fixed height: as a growable DOM widget, litegraph would squeeze it to a few pixels when a saved node is
    // smaller than the sum of its widgets' minimum heights
    w.computeSize = (width) => [width, 24];
    w.setError = (error) => { el.style.color = error ? ERROR_COLOR : OK_COLOR; el.dataset.error = error ? "1" : ""; };
    return w;
  }
  w = node.addCustomWidget({
    name: WIDGET,
    type: "lean_prompt_count",
    value: "",
    error: false,
    serialize: false, // display only: not part of widgets_values (positions are a contract), never an input
    options: { serialize: false },
    draw(ctx, _node, width, y, height) {
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      ctx.fillStyle = this.error ? ERROR_COLOR : OK_COLOR;
      ctx.fillText(this.value || "", 15, y + (height || 20) * 0.7, width - 30);
      ctx.restore();
    },
    computeSize(width) {
      return [width, 20];
    },
  });
  return w;
}

function show(node, text, error = false) {
  const w = countWidget(node);
  w.value = text;
  w.error = error;
  w.setError?.(error);
  node.lean_prompt_count_text = text; // for tests and other extensions
  node.setDirtyCanvas?.(true, false);
}

async function refresh(node) {
  const my = (node.__leanPreviewSeq = (node.__leanPreviewSeq || 0) + 1);
  if (isLinked(node, "text")) {
    show(node, t("promptBatch.linked"));
    return;
  }
  const params = new URLSearchParams();
  for (const name of WATCH) {
    const w = widget(node, name);
    if (w && w.value != null) params.set(name, String(w.value));
  }
  const url = "/lean/prompt_batch/preview?" + params.toString();
  if (url.length > MAX_URL) {
    show(node, t("promptBatch.tooLong"));
    return;
  }
  let text, error = false;
  try {
    const r = await api.fetchApi(url);
    const d = await r.json();
    if (!r.ok || d.error) {
      text = d.error ? "⚠ " + d.error : `${t("promptBatch.failed")} (${r.status})`;
      error = true;
    } else if (d.over_cap) {
      text = t("promptBatch.overCap", { n: d.count, cap: d.cap });
      error = true;
    } else {
      text = d.count === 1 ? t("promptBatch.one") : t("promptBatch.count", { n: d.count });
    }
  } catch (e) {
    text = t("promptBatch.unavailable");
    error = true;
  }
  if (my === node.__leanPreviewSeq) show(node, text, error);
}

function schedule(node) {
  clearTimeout(node.__leanPreviewTimer);
  node.__leanPreviewTimer = setTimeout(() => refresh(node), DEBOUNCE_MS);
}

function watch(node) {
  for (const name of WATCH) {
    const w = widget(node, name);
    if (!w || w.__leanWatched) continue;
    w.__leanWatched = true;
    const callback = w.callback;
    w.callback = function () {
      const r = callback?.apply(this, arguments);
      schedule(node);
      return r;
    };
    w.inputEl?.addEventListener("input", () => schedule(node));
  }
  countWidget(node);
}

app.registerExtension({
  name: "lean.PromptBatch",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      watch(this);
      schedule(this);
      return r;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      watch(this);
      schedule(this); // values loaded from a workflow
      return r;
    };
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const r = onConnectionsChange?.apply(this, arguments);
      schedule(this);
      return r;
    };
  },
});
