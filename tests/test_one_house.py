"""Tier 1: one house.  ``core/`` never imports the host, and what the pack knows of the host's internals and of its
peers (what differs between host versions, or what no public node API covers) is said in ``nodes/_host.py`` only.

Read statically (ast) from the pack's own code, the code ComfyUI loads: ``__init__.py``, ``nodes/``, ``core/``.
``scripts/`` runs outside the host and reads its files, never imports it, so it is not covered here.

Rules, outside ``nodes/_host.py``:
1. ``core/`` imports no host module (absolute imports, ``__import__``/``importlib.import_module`` of a constant, or a
   relative import of ``nodes``).
2. No name of ``HOST_INTERNALS`` (identifiers, imported names, string constants other than docstrings; attributes
   read through ``_host`` itself are the way to ask and do not count).
3. ``nodes/`` does not probe the host: no ``hasattr(H, ...)`` / ``getattr(H, name, default)`` on a host module or on
   a name imported from one, and no import of a host module inside ``try`` (feature detection by import).
4. Nothing replaces a host object's method (``x.encode = ...`` / ``del x.encode``) for the names of
   ``HOST_METHODS``.
5. No class recognised by its name (``type(x).__name__ == "..."``, ``... in {c.__name__ ...}``).

ALLOW holds what stays elsewhere on purpose, each with its reason; an entry that no longer matches anything fails
(delete it).
"""
import ast
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
HOST_FILE = "nodes/_host.py"

HOST_MODULES = {"comfy", "comfy_extras", "comfy_execution", "comfy_api", "comfy_api_nodes", "comfy_config",
                "comfy_aimdo", "folder_paths", "server", "execution", "nodes", "comfyui_version", "latent_preview",
                "node_helpers", "app", "protocol", "cuda_malloc", "main", "new_updater", "hook_breaker_ac10a0"}

# name -> why only nodes/_host.py may say it
HOST_INTERNALS = {
    "aimdo_enabled": "DynamicVRAM / comfy-aimdo: only in some host versions",
    "memory_management": "comfy.memory_management: DynamicVRAM and the RAM-pressure cache, by host version",
    "model_detection_error_hint": "comfy.sd.model_detection_error_hint: not in every host",
    "forced_hooks": "the CLIP patcher's hook schedule (internals of encode_from_tokens_scheduled)",
    "use_clip_schedule": "the CLIP's hook schedule switch (internals of encode_from_tokens_scheduled)",
    "SDClipModel": "the host's chunked CLIP encoder class, whose forward output the batched encode reads",
    "FluxClipModel": "the host's Flux text encoder class (not in every host)",
    "LoRAAdapter": "the host's LoRA weight adapter and the layout of its weights",
    "weight_adapter": "comfy.weight_adapter: adapter classes by host version",
    "comfy_cast_weights": "the per-layer cast switch of the host's ops",
    "InterruptProcessingException": "the host's Cancel exception",
    "CoreModelPatcher": "patcher classes by host version",
    "ModelPatcherDynamic": "patcher classes by host version (DynamicVRAM)",
    "extra_ram_release": "0.33's RAM-pressure cache entry point",
    "current_loaded_models": "the memory manager's list of loaded models",
    "LoadedModel": "the memory manager's entry class",
    "GGMLTensor": "ComfyUI-GGUF's tensor class (a peer's internals)",
    "GGMLLayer": "ComfyUI-GGUF's layer class (a peer's internals)",
    "GGMLOps": "ComfyUI-GGUF's ops (a peer's internals)",
    "tensor_type": "ComfyUI-GGUF's GGMLTensor attribute (a peer's internals)",
}

# host methods nobody outside nodes/_host.py may replace on an object (a monkeypatch per instance)
HOST_METHODS = {"encode", "encode_token_weights", "encode_from_tokens", "encode_from_tokens_scheduled", "forward",
                "decode", "load_state_dict", "load_sd"}

NO_SERVER = "whether a server runs at all (the pack imported by tests or scripts has none), not a host feature"

# (file, rule, name) -> why it stays there
ALLOW = {
    ("nodes/llm.py", "try-import", "server"): NO_SERVER,
    ("nodes/lora.py", "try-import", "server"): NO_SERVER,
    ("nodes/prompt_batch.py", "try-import", "server"): NO_SERVER,
    ("nodes/prompt_batch.py", "probe", "PromptServer.instance"): NO_SERVER,
}


def pack_files(root=REPO):
    out = [root / "__init__.py"] + sorted((root / "nodes").glob("*.py")) + sorted((root / "core").glob("*.py"))
    return [p for p in out if p.is_file()]


def _top(module):
    return (module or "").split(".")[0]


def _docstrings(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _root_name(node):
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _via_host(node):
    """An attribute read through the pack's own _host module (``_host.x``, ``_ckpt._host.x``)."""
    while isinstance(node, ast.Attribute):
        if node.attr == "_host":
            return True
        node = node.value
    return isinstance(node, ast.Name) and node.id == "_host"


def _host_bound_names(tree):
    """Names a file binds by importing a host module (``import comfy.sd`` -> comfy, ``import comfy.x as mm`` -> mm,
    ``from server import PromptServer`` -> PromptServer)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _top(a.name) in HOST_MODULES:
                    names.add(a.asname or _top(a.name))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _top(node.module) in HOST_MODULES:
            names.update(a.asname or a.name for a in node.names)
    return names


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def violations(path, root=REPO):
    """[(rule, name, line)] of one pack file."""
    rel = path.relative_to(root).as_posix()
    if rel == HOST_FILE:
        return []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    in_core = rel.startswith("core/")
    docs = _docstrings(tree)
    host_names = _host_bound_names(tree)
    found = []

    def hit(rule, name, node):
        found.append((rule, name, getattr(node, "lineno", 0)))

    try_bodies = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    try_bodies.add(id(sub))

    skip_attr = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _via_host(node):
            for sub in ast.walk(node):
                skip_attr.add(id(sub))

    for node in ast.walk(tree):
        # rule 1 (core) and rule 3 (try-import in nodes)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            level = getattr(node, "level", 0)
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif level == 0:
                mods = [node.module]
            elif level >= 2:  # from the pack's root: ``from ..nodes import x`` / ``from .. import nodes``
                mods = [node.module] if node.module else [a.name for a in node.names]
            else:
                mods = []
            for m in mods:
                if _top(m) in HOST_MODULES:
                    if in_core:
                        hit("core-import", m, node)
                    elif id(node) in try_bodies and level == 0:
                        hit("try-import", _top(m), node)
            for a in node.names:
                if a.name in HOST_INTERNALS:
                    hit("name", a.name, node)
        elif isinstance(node, ast.Call):
            fn = _dotted(node.func)
            if fn in ("__import__", "importlib.import_module") and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                    and _top(node.args[0].value) in HOST_MODULES and in_core:
                hit("core-import", node.args[0].value, node)
            if not in_core and fn in ("hasattr", "getattr") and node.args:
                probing = fn == "hasattr" or len(node.args) >= 3
                root_name = _root_name(node.args[0])
                if probing and root_name in host_names and not _via_host(node.args[0]):
                    attr = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else "?"
                    hit("probe", f"{_dotted(node.args[0]) or root_name}.{attr}", node)
        elif isinstance(node, ast.Compare):
            sides = [node.left] + list(node.comparators)
            by_name = any(isinstance(s, ast.Attribute) and s.attr == "__name__" for s in sides) or any(
                isinstance(s, (ast.SetComp, ast.ListComp, ast.GeneratorExp)) and isinstance(s.elt, ast.Attribute)
                and s.elt.attr == "__name__" for s in sides)
            consts = [s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)]
            if by_name and consts:
                for c in consts:
                    hit("by-class-name", c, node)
        elif isinstance(node, (ast.Assign, ast.Delete, ast.AugAssign)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr in HOST_METHODS:
                    hit("replaces-method", t.attr, node)
        # rule 2: names
        if id(node) in skip_attr:
            continue
        if isinstance(node, ast.Name) and node.id in HOST_INTERNALS:
            hit("name", node.id, node)
        elif isinstance(node, ast.Attribute) and node.attr in HOST_INTERNALS:
            hit("name", node.attr, node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            for w in set(_WORD.findall(node.value)) & set(HOST_INTERNALS):
                hit("name", w, node)
    return found


def house_report(root=REPO):
    """{(file, rule, name): [lines]} of every violation not in ALLOW, and the ALLOW entries that match nothing."""
    seen, bad = set(), {}
    for path in pack_files(root):
        rel = path.relative_to(root).as_posix()
        for rule, name, line in violations(path, root):
            key = (rel, rule, name)
            if key in ALLOW:
                seen.add(key)
            else:
                bad.setdefault(key, []).append(line)
    return bad, sorted(set(ALLOW) - seen)


def test_core_never_imports_the_host_and_host_knowledge_lives_in_host_py():
    bad, _ = house_report()
    lines = [f"{f}:{','.join(map(str, sorted(set(ls))))}: {rule} {name!r}"
             + (f" ({HOST_INTERNALS[name]})" if name in HOST_INTERNALS else "")
             for (f, rule, name), ls in sorted(bad.items())]
    assert not lines, ("host knowledge outside nodes/_host.py (ask _host, or move it there with why):\n"
                       + "\n".join(lines))


def test_every_allowed_exception_is_still_needed():
    _, stale = house_report()
    assert not stale, f"ALLOW entries that match nothing any more (delete them): {stale}"


SAMPLES = {
    "core_import": ("core/x.py", "import comfy.sd\n", ("core-import", "comfy.sd")),
    "core_dunder_import": ("core/x.py", "m = __import__('folder_paths')\n", ("core-import", "folder_paths")),
    "core_nodes_relative": ("core/x.py", "from ..nodes import _host\n", ("core-import", "nodes")),
    "probe": ("nodes/x.py", "import comfy.sd\nok = hasattr(comfy.sd, 'new_thing')\n", ("probe", "comfy.sd.new_thing")),
    "probe_alias": ("nodes/x.py", "import comfy.model_management as mm\nf = getattr(mm, 'x', None)\n",
                    ("probe", "mm.x")),
    "try_import": ("nodes/x.py", "try:\n    import comfy.text_encoders.flux\nexcept Exception:\n    pass\n",
                   ("try-import", "comfy")),
    "internal_attr": ("nodes/x.py", "def f(clip):\n    return clip.patcher.forced_hooks\n", ("name", "forced_hooks")),
    "internal_string": ("nodes/x.py", "M = 'comfy.memory_management'\n", ("name", "memory_management")),
    "class_by_name": ("nodes/x.py", "def f(a):\n    return type(a).__name__ == 'Foo'\n", ("by-class-name", "Foo")),
    "monkeypatch": ("nodes/x.py", "def f(e):\n    e.encode = print\n", ("replaces-method", "encode")),
}


@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_each_rule_catches_its_sample(tmp_path, case):
    rel, src, want = SAMPLES[case]
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(src)
    got = {(rule, name) for rule, name, _ in violations(path, tmp_path)}
    assert want in got, got


def test_host_py_itself_and_asking_it_are_not_violations(tmp_path):
    (tmp_path / "nodes").mkdir()
    host = tmp_path / "nodes" / "_host.py"
    host.write_text("import comfy.memory_management as m\nx = hasattr(m, 'aimdo_enabled')\n")
    user = tmp_path / "nodes" / "y.py"
    user.write_text("from . import _host\nv = _host.dynamic_vram_state()\nw = _host.comfyui_version()\n"
                    'def f():\n    """docstrings may name forced_hooks"""\n')
    assert violations(host, tmp_path) == []
    assert violations(user, tmp_path) == []
