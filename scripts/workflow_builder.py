"""Builds UI-format workflow files (the format the editor saves, version 0.4) from a short Python description
and the host's /object_info, so the example workflows in example_workflows/ are consistent with the nodes' real inputs.

Used by scripts/make_workflows.py; the files it writes are the source of truth that users drag in, and the
API-format copies under tests/workflows_api/ are converted from them (make_workflows.write_api_copies).
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from lean import _load_workflow_module  # noqa: E402

wf = _load_workflow_module()


class Node:
    def __init__(self, graph, nid, ntype, info, pos, title, widgets, size):
        self.graph, self.id, self.type, self.info = graph, nid, ntype, info
        self.pos, self.title = list(pos), title
        self.widgets = dict(widgets)
        self.inputs = []      # [{"name", "type", "link", ("widget")}]
        self.outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(zip(info.get("output_name", info["output"]), info["output"]))]
        self.size = size
        self.mode = 0

    def out(self, name_or_index):
        if isinstance(name_or_index, int):
            return self, name_or_index
        names = [o["name"] for o in self.outputs]
        types = [o["type"] for o in self.outputs]
        if name_or_index in names:
            return self, names.index(name_or_index)
        if name_or_index in types:
            return self, types.index(name_or_index)
        raise KeyError(f"{self.type} has no output {name_or_index!r} (has {names})")

    def widget_values(self):
        values = []
        for name, spec, extra in wf.widget_inputs(self.info):
            values.append(self.widgets[name] if name in self.widgets else wf._default(spec))
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if extra and (opts.get("control_after_generate") or (spec[0] == "INT" and name in wf.SEED_NAMES)):
                values.append("fixed")
            if opts.get("image_upload"):
                values.append("image")
        return values

    def to_json(self, order):
        unknown = set(self.widgets) - {n for n, _, _ in wf.widget_inputs(self.info)}
        if unknown:
            raise KeyError(f"{self.type} has no widget {sorted(unknown)}")
        n_w = len(wf.widget_inputs(self.info))
        h = self.size[1] if self.size else 46 + 26 * (max(len(self.inputs) - sum(1 for i in self.inputs if "widget" in i),
                                                        len(self.outputs)) + n_w)
        d = {"id": self.id, "type": self.type, "pos": self.pos, "size": [self.size[0] if self.size else 320, h],
             "flags": {}, "order": order, "mode": self.mode, "inputs": self.inputs, "outputs": self.outputs,
             "properties": {"Node name for S&R": self.type}, "widgets_values": self.widget_values()}
        if self.title:
            d["title"] = self.title
        return d


class Graph:
    def __init__(self, object_info):
        self.info = object_info
        self.nodes = []
        self.links = []
        self.groups = []
        self.notes = []

    def node(self, ntype, pos, title=None, size=None, **widgets):
        if ntype not in self.info:
            raise KeyError(f"the host does not know {ntype}")
        n = Node(self, len(self.nodes) + len(self.notes) + 1, ntype, self.info[ntype], pos, title, widgets, size)
        self.nodes.append(n)
        return n

    def connect(self, src, dst, input_name):
        src_node, slot = src if isinstance(src, tuple) else src.out(0)
        spec = self.info[dst.type]["input"]
        ispec = (spec.get("required") or {}).get(input_name) or (spec.get("optional") or {}).get(input_name)
        if ispec is None:
            raise KeyError(f"{dst.type} has no input {input_name}")
        link_id = len(self.links) + 1
        ltype = src_node.outputs[slot]["type"]
        self.links.append([link_id, src_node.id, slot, dst.id, None, ltype])
        entry = {"name": input_name, "type": ltype, "link": link_id}
        if wf._is_widget(ispec):
            entry["widget"] = {"name": input_name}
        dst.inputs.append(entry)
        src_node.outputs[slot]["links"].append(link_id)
        return link_id

    def wire(self, dst, **inputs):
        for name, src in inputs.items():
            self.connect(src, dst, name)
        return dst

    def note(self, text, pos, size=(360, 160), title="Note"):
        nid = len(self.nodes) + len(self.notes) + 1
        self.notes.append({"id": nid, "type": "MarkdownNote", "pos": list(pos), "size": list(size), "flags": {},
                           "order": 0, "mode": 0, "inputs": [], "outputs": [], "title": title,
                           "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"})

    def group(self, title, bounding, color="#3f789e"):
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding), "color": color,
                            "font_size": 24, "flags": {}})

    def to_json(self):
        # socket inputs first, in the node's input order, then any linked widget inputs
        for n in self.nodes:
            order = [k for g in ("required", "optional") for k in (n.info["input"].get(g) or {})]
            n.inputs.sort(key=lambda i: ("widget" in i, order.index(i["name"])))
        for link in self.links:  # target slot = index in the node's saved inputs
            dst = next(n for n in self.nodes if n.id == link[3])
            link[4] = next(i for i, inp in enumerate(dst.inputs) if inp["link"] == link[0])
        nodes = [n.to_json(i + len(self.notes)) for i, n in enumerate(self.nodes)]
        return {"id": None, "revision": 0, "last_node_id": len(self.nodes) + len(self.notes),
                "last_link_id": len(self.links), "nodes": self.notes + nodes, "links": self.links,
                "groups": self.groups, "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}},
                "version": 0.4}

    def save(self, path):
        data = self.to_json()
        data.pop("id")
        pathlib.Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        return path
