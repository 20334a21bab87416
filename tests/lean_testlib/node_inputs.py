"""Each Lean node's inputs, read statically from nodes/*.py with ``ast`` (no host needed).

    static_inputs(source) -> {node id: [(group, name, is_widget, opts keys/values)]}

INPUT_TYPES must return a dict literal (a project convention); option dicts are dict literals or
``dict(BASE, key=value)`` calls.  Tier 2 checks this reading against the host's /object_info.
"""
import ast

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _mappings(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODE_CLASS_MAPPINGS" for t in node.targets):
            return {k.value: v.id for k, v in zip(node.value.keys, node.value.values)}
    return {}


def _opts(expr):
    """{key: literal value or '<expr>'} of an option dict expression."""
    out = {}
    if isinstance(expr, ast.Dict):
        pairs = zip(expr.keys, expr.values)
    elif isinstance(expr, ast.Call) and getattr(expr.func, "id", None) == "dict":
        pairs = [(ast.Constant(kw.arg), kw.value) for kw in expr.keywords if kw.arg]
    else:
        return out
    for k, v in pairs:
        if isinstance(k, ast.Constant):
            try:
                out[k.value] = ast.literal_eval(v)
            except ValueError:
                out[k.value] = "<expr>"
    return out


def _returned_dict(fn):
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            return node.value
    raise AssertionError(f"{fn.name}: INPUT_TYPES does not return a dict literal")


def static_inputs(source):
    tree = ast.parse(source)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    out = {}
    for node_id, cls_name in _mappings(tree).items():
        fn = next(f for f in classes[cls_name].body if isinstance(f, ast.FunctionDef) and f.name == "INPUT_TYPES")
        rows = []
        top = _returned_dict(fn)
        for gk, gv in zip(top.keys, top.values):
            group = gk.value
            if group not in ("required", "optional") or not isinstance(gv, ast.Dict):
                continue
            for k, v in zip(gv.keys, gv.values):
                kind, opts = v.elts[0], (_opts(v.elts[1]) if len(v.elts) > 1 else {})
                if isinstance(kind, ast.Constant) and isinstance(kind.value, str):
                    widget = kind.value in WIDGET_TYPES
                else:
                    widget = True  # a list of choices (combo)
                if opts.get("forceInput"):
                    widget = False
                rows.append((group, k.value, widget, opts))
        out[node_id] = rows
    return out
