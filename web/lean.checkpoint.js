// lean.CheckpointLoader: show a Lean node's text report on the node after each run: the load report of
// LeanCheckpointLoader and LeanDiffusionModelLoader (seconds, bytes read, peak RSS, device, dtype) and
// LeanSystemCheck's system report.  The server sends it
// as {"ui": {"text": [report]}}.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const REPORT_WIDGET = {  // node -> the read-only box that shows its report
    LeanCheckpointLoader: "load_report",
    LeanDiffusionModelLoader: "load_report",
    LeanSystemCheck: "system_report",
};

function showReport(node, WIDGET, text) {
    let w = node.widgets?.find((x) => x.name === WIDGET);
    if (!w) {
        w = ComfyWidgets.STRING(node, WIDGET, ["STRING", { multiline: true }], app).widget;
        w.options = w.options || {};
        w.options.serialize = false; // display only: not in widgets_values (positions are a contract), never an input
        w.options.read_only = true; // the Vue node renderer draws its own textarea and reads this
        w.serialize = false;
        if (w.inputEl) {
            w.inputEl.readOnly = true;
            w.inputEl.style.opacity = 0.8;
            w.inputEl.style.fontFamily = "monospace";
        }
    }
    w.value = text;
    if (w.inputEl) w.inputEl.value = text;
    node.setSize?.([Math.max(node.size[0], 380), Math.max(node.size[1], node.computeSize()[1])]);
    node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
    name: "lean.CheckpointLoader",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        const widget = REPORT_WIDGET[nodeData?.name];
        if (!widget) return;
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message) {
            const r = onExecuted?.apply(this, arguments);
            const text = message?.text;
            if (text && text.length) showReport(this, widget, Array.isArray(text) ? text.join("\n") : String(text));
            return r;
        };
    },
});
