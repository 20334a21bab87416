// Lean Nodes: LLM Prompt Writer shows the model's text on the node as it streams.
// Server side: nodes/llm.py sends "lean.llm.stream" {node, delta | start | done, tokens, max_tokens, ...}
// and returns ui.lean_llm = [{prompt, thinking, status, tokens}] when the node finishes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE = "LeanLLMPrompt";
const WIDGET = "lean_llm_output";

function outputWidget(node) {
  let w = node.widgets?.find((x) => x.name === WIDGET);
  if (!w) {
    w = ComfyWidgets.STRING(node, WIDGET, ["STRING", { multiline: true }], app).widget;
    w.options = w.options || {};
    w.options.serialize = false; // display only: never saved in widgets_values' contract, never sent as input
    w.serialize = false;
    if (w.inputEl) {
      w.inputEl.readOnly = true;
      w.inputEl.style.opacity = 0.75;
      w.inputEl.placeholder = "generated text appears here";
    }
  }
  return w;
}

function setText(node, text) {
  const w = outputWidget(node);
  w.value = text;
  if (w.inputEl) {
    w.inputEl.value = text;
    w.inputEl.scrollTop = w.inputEl.scrollHeight;
  }
  node.setDirtyCanvas?.(true, false);
}

function findNode(id) {
  if (id == null) return null;
  const graph = app.graph;
  const local = String(id).split(":").pop(); // subgraph ids look like "5:12"
  return graph?.getNodeById?.(Number(local)) ?? graph?.getNodeById?.(local) ?? null;
}

const streams = new Map(); // node id -> streamed text

function formatFinal(r) {
  const parts = [];
  if (r.status) parts.push(`[${r.status}]`);
  parts.push(r.prompt || "(no prompt)");
  if (r.thinking) parts.push("--- thinking ---\n" + r.thinking);
  return parts.join("\n\n");
}

app.registerExtension({
  name: "lean.LLM",
  setup() {
    api.addEventListener("lean.llm.stream", ({ detail }) => {
      const node = findNode(detail?.node);
      if (!node || node.type !== NODE) return;
      const key = String(detail.node);
      if (detail.start) streams.set(key, "");
      if (detail.delta) streams.set(key, (streams.get(key) || "") + detail.delta);
      if (detail.done) {
        streams.delete(key);
        setText(node, formatFinal(detail));
        return;
      }
      setText(node, `[${detail.tokens ?? 0}/${detail.max_tokens ?? "?"} tokens]\n${streams.get(key) || ""}`);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      outputWidget(this);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const res = message?.lean_llm?.[0];
      if (res) setText(this, formatFinal(res));
      return r;
    };
  },
});
