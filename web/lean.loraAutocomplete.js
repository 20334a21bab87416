// lean.LoraAutocomplete: typing "<lora:" in any multiline prompt box offers the files of the loras folder
// (from GET /lean/loras, with trigger words read from each file's safetensors metadata when present).
// Arrow keys move, Enter/Tab or a click inserts "<lora:name:1>", Escape closes.  Listens on the document, so
// it works for every node's text box (stock CLIP Text Encode, LoRA from Prompt Tags, Prompt Batch, ...), in both
// node renderers (litegraph's canvas with DOM textareas, and the Vue renderer).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

import { t } from "./lean.i18n.js";

const PARTIAL = /<lora:([^<>:\n]*)$/i; // an open tag right before the caret
const MAX_ITEMS = 30;
const CACHE_MS = 5000;

let cache = { at: 0, loras: null, pending: null };

async function fetchLoras() {
  if (cache.loras && Date.now() - cache.at < CACHE_MS) return cache.loras;
  if (!cache.pending) {
    cache.pending = api
      .fetchApi("/lean/loras")
      .then((r) => (r.ok ? r.json() : { loras: [] }))
      .then((d) => {
        const loras = (Array.isArray(d?.loras) ? d.loras : [])
          .filter((l) => typeof l?.name === "string")
          .map((l) => ({ ...l, stem: l.stem ?? l.name.replace(/\.[^./\\]+$/, ""), triggers: l.triggers ?? [] }));
        cache = { at: Date.now(), loras, pending: null };
        return cache.loras;
      })
      .catch((e) => {
        console.warn("[lean] /lean/loras:", e);
        cache.pending = null;
        return [];
      });
  }
  return cache.pending;
}

// Pixel position of the caret inside a textarea (a hidden mirror div with the same text metrics).
function caretXY(ta) {
  const style = getComputedStyle(ta);
  const div = document.createElement("div");
  for (const p of ["boxSizing", "width", "fontFamily", "fontSize", "fontWeight", "lineHeight", "letterSpacing",
    "paddingTop", "paddingLeft", "paddingRight", "paddingBottom", "borderTopWidth", "borderLeftWidth",
    "whiteSpace", "wordWrap", "tabSize"]) {
    div.style[p] = style[p];
  }
  div.style.position = "absolute";
  div.style.visibility = "hidden";
  div.style.whiteSpace = "pre-wrap";
  div.style.overflow = "hidden";
  div.textContent = ta.value.slice(0, ta.selectionStart);
  const span = document.createElement("span");
  span.textContent = "\u200b";
  div.appendChild(span);
  document.body.appendChild(div);
  const r = ta.getBoundingClientRect();
  const scale = r.width / (ta.offsetWidth || r.width || 1); // the canvas may zoom the DOM widgets
  const x = r.left + (span.offsetLeft - ta.scrollLeft) * scale;
  const y = r.top + (span.offsetTop - ta.scrollTop + parseFloat(style.lineHeight || style.fontSize || "14")) * scale;
  div.remove();
  return { x: Math.min(x, window.innerWidth - 260), y: Math.min(y, window.innerHeight - 40) };
}

const popup = {
  el: null,
  ta: null,
  items: [],
  index: 0,
  start: -1,

  ensure() {
    if (this.el) return this.el;
    const el = document.createElement("div");
    el.className = "lean-lora-popup";
    Object.assign(el.style, {
      position: "fixed", zIndex: 10000, minWidth: "220px", maxWidth: "420px", maxHeight: "260px",
      overflowY: "auto", background: "var(--comfy-menu-bg, #222)", color: "var(--input-text, #ddd)",
      border: "1px solid var(--border-color, #555)", borderRadius: "6px", font: "13px sans-serif",
      boxShadow: "0 4px 14px rgba(0,0,0,.5)", display: "none",
    });
    el.addEventListener("mousedown", (e) => {
      e.preventDefault(); // keep the focus in the textarea
      const item = e.target.closest(".lean-lora-item");
      if (item) this.accept(Number(item.dataset.index));
    });
    document.body.appendChild(el);
    this.el = el;
    return el;
  },

  visible() {
    return !!this.el && this.el.style.display !== "none";
  },

  hide() {
    if (this.el) this.el.style.display = "none";
    this.ta = null;
    this.items = [];
  },

  show(ta, start, items) {
    const el = this.ensure();
    this.ta = ta;
    this.start = start;
    this.items = items;
    this.index = Math.min(this.index, Math.max(0, items.length - 1));
    el.replaceChildren();
    if (!items.length) {
      const empty = document.createElement("div");
      empty.className = "lean-lora-empty";
      empty.textContent = t("loraAutocomplete.empty");
      Object.assign(empty.style, { padding: "4px 8px", opacity: 0.7 });
      el.appendChild(empty);
    }
    items.forEach((l, i) => {
      const row = document.createElement("div");
      row.className = "lean-lora-item";
      row.dataset.index = String(i);
      row.dataset.name = l.name;
      Object.assign(row.style, {
        padding: "4px 8px", cursor: "pointer", whiteSpace: "nowrap", overflow: "hidden", textOverflow: "ellipsis",
        background: i === this.index ? "var(--comfy-input-bg, #444)" : "transparent",
      });
      const name = document.createElement("span");
      name.textContent = l.stem;
      row.appendChild(name);
      if (l.triggers?.length) {
        const trig = document.createElement("span");
        trig.className = "lean-lora-triggers";
        trig.textContent = "  " + l.triggers.slice(0, 4).join(", ");
        Object.assign(trig.style, { opacity: 0.6, fontSize: "11px" });
        row.appendChild(trig);
        row.title = t("loraAutocomplete.triggers") + ": " + l.triggers.join(", ");
      }
      el.appendChild(row);
    });
    const { x, y } = caretXY(ta);
    Object.assign(el.style, { left: `${Math.max(0, x)}px`, top: `${Math.max(0, y)}px`, display: "block" });
    el.children[this.index]?.scrollIntoView?.({ block: "nearest" });
  },

  move(d) {
    if (!this.items.length) return;
    this.index = (this.index + d + this.items.length) % this.items.length;
    this.show(this.ta, this.start, this.items);
  },

  accept(i = this.index) {
    const l = this.items[i];
    const ta = this.ta;
    if (!l || !ta) return this.hide();
    const end = ta.selectionStart;
    const tag = `<lora:${l.stem}:1>`;
    ta.value = ta.value.slice(0, this.start) + tag + ta.value.slice(end);
    const caret = this.start + tag.length;
    ta.setSelectionRange(caret, caret);
    this.hide();
    ta.dispatchEvent(new Event("input", { bubbles: true })); // the widget reads its value from the textarea
    ta.dispatchEvent(new Event("change", { bubbles: true }));
  },
};

// A node's editable text box: the litegraph renderer's DOM widget textarea (.comfy-multiline-input), or a
// textarea inside a node drawn by the Vue node renderer ("Nodes 2.0": .lg-node[data-node-id]).
function isPromptBox(el) {
  if (!(el instanceof HTMLTextAreaElement) || el.readOnly) return false;
  return el.classList.contains("comfy-multiline-input") || !!el.closest(".lg-node[data-node-id]");
}

let seq = 0;
async function onInput(e) {
  const ta = e.target;
  if (!isPromptBox(ta)) return;
  const before = ta.value.slice(0, ta.selectionStart);
  const m = PARTIAL.exec(before);
  if (!m) {
    if (popup.ta === ta) popup.hide();
    return;
  }
  const my = ++seq;
  const loras = await fetchLoras();
  if (my !== seq || document.activeElement !== ta) return; // typed on meanwhile, or left the box
  const q = m[1].toLowerCase();
  const items = loras
    .filter((l) => !q || l.stem.toLowerCase().includes(q) || l.name.toLowerCase().includes(q))
    .sort((a, b) => (b.stem.toLowerCase().startsWith(q) ? 1 : 0) - (a.stem.toLowerCase().startsWith(q) ? 1 : 0))
    .slice(0, MAX_ITEMS);
  popup.index = 0;
  popup.show(ta, before.length - m[0].length, items);
}

function onKeyDown(e) {
  if (!popup.visible() || e.target !== popup.ta) return;
  const keys = { ArrowDown: () => popup.move(1), ArrowUp: () => popup.move(-1), Enter: () => popup.accept(),
    Tab: () => popup.accept(), Escape: () => popup.hide() };
  const f = keys[e.key];
  if (!f || (e.key !== "Escape" && !popup.items.length)) return;
  e.preventDefault();
  e.stopPropagation(); // not a canvas shortcut, not a newline
  f();
}

app.registerExtension({
  name: "lean.LoraAutocomplete",
  setup() {
    document.addEventListener("input", onInput, true);
    document.addEventListener("keydown", onKeyDown, true);
    document.addEventListener("focusout", (e) => {
      if (e.target === popup.ta) setTimeout(() => popup.hide(), 150);
    }, true);
  },
});
