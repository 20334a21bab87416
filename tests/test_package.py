"""Tier 1: packaging, layout rules and per-module registration (no host needed)."""
import ast
import importlib.util
import logging
import pathlib
import re
import shutil
import sys
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
HOST_MODULES = {"comfy", "folder_paths", "server", "nodes", "execution", "comfy_extras", "comfy_execution",
                "node_helpers", "latent_preview", "comfy_api"}
HEAVY_MODULES = {"cv2", "llama_cpp", "safetensors", "gguf", "transformers", "scipy", "kornia", "PIL"}


def _req_lines():
    return [l.strip() for l in (REPO / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.strip().startswith("#")]


def test_requirements_equal_pyproject_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _req_lines() == project["dependencies"]


def test_requirements_never_name_torch():
    for line in _req_lines():
        name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower()
        assert name not in {"torch", "torchvision", "torchaudio"}, line


def test_pyproject_registry_metadata():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    p, comfy = data["project"], data["tool"]["comfy"]
    assert p["name"] == "comfyui-lean"
    assert re.fullmatch(r"\d+\.\d+\.\d+", p["version"])
    assert p["description"] and p["license"]
    assert p["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"] == "Lean Nodes" and comfy["Icon"]
    assert comfy["requires-comfyui"]
    assert "web" not in comfy, "WEB_DIRECTORY already serves web/; a second registration loads every script twice"


def _imports(path):
    tree = ast.parse(path.read_text())
    top_level, anywhere = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        anywhere.update(names)
    for node in tree.body:  # module level only (not inside functions)
        if isinstance(node, ast.Import):
            top_level.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top_level.add(node.module.split(".")[0])
    return top_level, anywhere


@pytest.mark.parametrize("path", sorted((REPO / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_never_imports_the_host(path):
    _, anywhere = _imports(path)
    assert not anywhere & HOST_MODULES, f"core/{path.name} imports {anywhere & HOST_MODULES}"


@pytest.mark.parametrize("path", sorted((REPO / "core").glob("*.py")) + sorted((REPO / "nodes").glob("*.py"))
                         + [REPO / "__init__.py"], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_heavy_import_at_module_level(path):
    top, _ = _imports(path)
    assert not top & HEAVY_MODULES, f"{path.name} imports {top & HEAVY_MODULES} at import time; import inside the function"


def _load_copy(tmp_path, extra_modules):
    """A copy of the pack's __init__.py with a nodes/ of our making, loaded the way ComfyUI loads a pack."""
    pack = tmp_path / "pack-copy"
    (pack / "nodes").mkdir(parents=True)
    shutil.copy(REPO / "__init__.py", pack / "__init__.py")
    (pack / "nodes" / "__init__.py").write_text("")
    for name, src in extra_modules.items():
        (pack / "nodes" / f"{name}.py").write_text(src)
    mod_name = str(pack).replace(".", "_x_")  # what ComfyUI's load_custom_node uses
    spec = importlib.util.spec_from_file_location(mod_name, pack / "__init__.py", submodule_search_locations=[str(pack)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        for k in [k for k in sys.modules if k == mod_name or k.startswith(mod_name + ".")]:
            del sys.modules[k]
    return module


GOOD = '''
class LeanGood:
    DESCRIPTION = "ok"
NODE_CLASS_MAPPINGS = {"LeanGood": LeanGood}
NODE_DISPLAY_NAME_MAPPINGS = {"LeanGood": "Good (test)"}
'''


def test_one_failing_module_never_hides_the_others(tmp_path, caplog):
    broken = "import lean_package_that_does_not_exist\nNODE_CLASS_MAPPINGS = {'LeanBroken': object}\n"
    with caplog.at_level(logging.WARNING):
        module = _load_copy(tmp_path, {"a_broken": broken, "b_good": GOOD, "c_raises": "raise RuntimeError('boom')"})
    assert list(module.NODE_CLASS_MAPPINGS) == ["LeanGood"]
    assert module.NODE_DISPLAY_NAME_MAPPINGS == {"LeanGood": "Good (test)"}
    assert set(module.FAILED_MODULES) == {"a_broken", "c_raises"}
    lines = [r.getMessage() for r in caplog.records if "not loaded" in r.getMessage()]
    assert len(lines) == 2
    assert any("nodes/a_broken.py" in l and "lean_package_that_does_not_exist" in l for l in lines), lines
    assert any("nodes/c_raises.py" in l and "boom" in l for l in lines), lines
    assert module.WEB_DIRECTORY == "./web"


def test_private_modules_are_not_registered(tmp_path):
    module = _load_copy(tmp_path, {"_helpers": "raise RuntimeError('must not be imported as a node module')",
                                   "good": GOOD})
    assert list(module.NODE_CLASS_MAPPINGS) == ["LeanGood"] and not module.FAILED_MODULES
