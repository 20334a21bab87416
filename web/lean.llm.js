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
    w.options.read_only = true; // the Vue node renderer draws its own textarea and reads this
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

// The server names a node by its execution id: "12" in the root graph, "5:12" for node 12 inside the subgraph
// that node 5 of the root graph instantiates (deeper nesting adds more parts).  Walk from the root graph, not
// from the graph the canvas shows: the user may have a subgraph open, or the root while the node runs inside one.
function findNode(id) {
  if (id == null) return null;
  let graph = app.rootGraph ?? app.graph;
  let node = null;
  for (const part of String(id).split(":")) {
    if (!graph?.getNodeById) return null;
    node = graph.getNodeById(Number(part)) ?? graph.getNodeById(part) ?? null;
    if (!node) return null;
    graph = node.subgraph ?? null;
  }
  return node;
}

const streams = new Map(); // node id -> streamed text
const THINK_BUTTON = "lean_llm_thinking_toggle";

// The final prompt first; the model's reasoning stays collapsed behind a toggle (it is never part of the prompt).
function formatFinal(r, showThinking) {
  const parts = [];
  if (r.status) parts.push(`[${r.status}]`);
  parts.push(r.prompt || "(no prompt)");
  if (r.thinking) {
    parts.push(showThinking ? "▾ thinking\n" + r.thinking
                            : `▸ thinking (${r.thinking.length} characters, collapsed)`);
  }
  return parts.join("\n\n");
}

function thinkingToggle(node) {
  let b = node.widgets?.find((x) => x.name === THINK_BUTTON);
  if (!b) {
    b = node.addWidget("button", THINK_BUTTON, null, () => {
      node.__leanShowThinking = !node.__leanShowThinking;
      b.label = node.__leanShowThinking ? "hide thinking" : "show thinking";
      if (node.__leanLast) setText(node, formatFinal(node.__leanLast, node.__leanShowThinking));
    }, { serialize: false });
    b.label = "show thinking";
    b.serialize = false; // display only: never in widgets_values
  }
  return b;
}

function showFinal(node, r) {
  node.__leanLast = r;
  setText(node, formatFinal(r, !!node.__leanShowThinking));
}

// The servers the openai backend may contact, and the only ones LEAN_LLM_API_KEY is sent to.  A setting, not a node
// input: a shared workflow sets base_url, never this list.  ComfyUI stores it in user/default/comfy.settings.json,
// where nodes/llm.py reads it (together with the LEAN_LLM_SERVERS environment variable) on every run.
const SERVERS_SETTING = {
  id: "Lean.LLM.Servers",
  category: ["Lean", "LLM", "Servers"],
  name: "LLM servers (comma-separated, e.g. http://192.168.1.20:11434,https://llm.example.org)",
  tooltip:
    "The OpenAI-compatible servers Local LLM Loader may use besides this computer, and the only ones " +
    "LEAN_LLM_API_KEY is sent to (list a loopback server here too if it needs the key). A workflow's base_url " +
    "naming any other machine is refused before any connection. Same as the LEAN_LLM_SERVERS environment variable.",
  type: "text",
  defaultValue: "",
};

app.registerExtension({
  name: "lean.LLM",
  settings: [SERVERS_SETTING],
  setup() {
    api.addEventListener("lean.llm.stream", ({ detail }) => {
      const node = findNode(detail?.node);
      if (!node || node.type !== NODE) return;
      const key = String(detail.node);
      if (detail.start) streams.set(key, "");
      if (detail.delta) streams.set(key, (streams.get(key) || "") + detail.delta);
      if (detail.done) {
        streams.delete(key);
        showFinal(node, detail);
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
      thinkingToggle(this);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const res = message?.lean_llm?.[0];
      if (res) showFinal(this, res);
      return r;
    };
  },
});
