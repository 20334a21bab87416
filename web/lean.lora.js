// lean.Lora: shows, under LeanLoraLoader / LeanLoraTags (and LeanPromptBatch: which LoRAs each prompt got), which path each LoRA took
// (low-rank branch or ComfyUI's own patching) and whether a side was re-used unchanged.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODES = new Set(["LeanLoraLoader", "LeanLoraTags", "LeanPromptBatch"]);

app.registerExtension({
  name: "lean.Lora",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text || []).join("\n");
      let w = this.widgets?.find((x) => x.name === "lean_lora_info");
      if (!w) {
        w = ComfyWidgets["STRING"](this, "lean_lora_info", ["STRING", { multiline: true }], app).widget;
        w.options = w.options || {};
        w.options.read_only = true; // the Vue node renderer draws its own textarea and reads this
        if (w.inputEl) {
          w.inputEl.readOnly = true;
          w.inputEl.style.opacity = 0.7;
        }
        w.serialize = false; // display only: never stored in widgets_values
      }
      w.value = text;
      this.setDirtyCanvas?.(true, true);
    };
  },
});
