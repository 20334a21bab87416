"""UI-format workflow (what the editor saves, ``nodes`` + ``links``) -> API-format prompt (what ``/prompt``
takes), using the host's ``/object_info`` for each node's input order.  Pure: no host imports.

Rules follow the editor's own serialisation:
- widget values are stored by position in ``widgets_values``, in the order of the node's inputs in
  object_info (required, then optional), counting only inputs that are widgets;
- an INT/COMBO widget with ``control_after_generate`` (and any INT named ``seed``/``noise_seed``) is followed by
  one extra value ("fixed", "randomize", ...) that is not an input; an ``image_upload`` widget by one more;
- a linked input takes its link, even when the input is also a widget;
- muted nodes (mode 2) are dropped; bypassed nodes (mode 4) pass their input of the same type through;
- frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) are not sent; links through a Reroute are
  followed back to their source.
"""

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
SEED_NAMES = {"seed", "noise_seed"}
MODE_MUTED, MODE_BYPASS = 2, 4


class WorkflowError(ValueError):
    pass


def is_ui_workflow(data):
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def _is_widget(spec):
    kind = spec[0] if spec else None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def widget_inputs(info):
    """[(name, spec, extra_values)] for each widget input of a node, in the editor's order."""
    out = []
    for group in ("required", "optional"):
        for name, spec in (info.get("input", {}).get(group) or {}).items():
            if not _is_widget(spec):
                continue
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            extra = 0
            if opts.get("control_after_generate") or (spec[0] == "INT" and name in SEED_NAMES):
                extra += 1
            if opts.get("image_upload") or opts.get("video_upload") or opts.get("audio_upload"):
                extra += 1
            out.append((name, spec, extra))
    return out


def _default(spec):
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    if isinstance(spec[0], list):
        return spec[0][0] if spec[0] else None
    return None


def ui_to_api(workflow, object_info, replace=None):
    """Convert; `replace` maps string widget values (e.g. model file names) to substitutes."""
    replace = replace or {}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"], link.get("type"))
        else:
            links[link[0]] = (link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)

    def source(link_id, seen=()):
        """(node_id, slot) feeding link_id, through reroutes and bypassed nodes; None if it leads nowhere."""
        if link_id is None or link_id not in links:
            return None
        origin, slot, _, _, ltype = links[link_id]
        node = nodes.get(origin)
        if node is None or origin in seen:
            return None
        if node["type"] == "Reroute":
            ins = node.get("inputs") or []
            return source(ins[0].get("link") if ins else None, seen + (origin,))
        if node.get("mode") == MODE_BYPASS:
            out_type = (node.get("outputs") or [{}])[slot].get("type") if node.get("outputs") else ltype
            for inp in node.get("inputs") or []:
                if inp.get("link") is not None and inp.get("type") == out_type:
                    return source(inp["link"], seen + (origin,))
            return None
        if node.get("mode") == MODE_MUTED or node["type"] in VIRTUAL_NODES:
            return None
        return str(origin), slot

    prompt = {}
    for nid, node in nodes.items():
        ntype = node["type"]
        if ntype in VIRTUAL_NODES or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        info = object_info.get(ntype)
        if info is None:
            raise WorkflowError(f"node #{nid} is of type '{ntype}', which this ComfyUI does not know "
                                f"(a custom node pack is missing)")
        inputs = {}
        values = node.get("widgets_values")
        widgets = widget_inputs(info)
        if isinstance(values, dict):
            for name, spec, _ in widgets:
                inputs[name] = values.get(name, _default(spec))
        else:
            values = list(values or [])
            pos = 0
            for name, spec, extra in widgets:
                inputs[name] = values[pos] if pos < len(values) else _default(spec)
                pos += 1 + extra
        for inp in node.get("inputs") or []:
            src = source(inp.get("link"))
            if src is not None:
                inputs[inp["name"]] = [src[0], src[1]]
        for k, v in list(inputs.items()):
            if isinstance(v, str) and v in replace:
                inputs[k] = replace[v]
        prompt[str(nid)] = {"class_type": ntype, "inputs": inputs,
                            "_meta": {"title": node.get("title") or info.get("display_name") or ntype}}
    return prompt
