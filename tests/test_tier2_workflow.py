"""Tier 2: UI-format workflows converted from the host's /object_info, and `scripts/lean.py run`."""
import json
import pathlib
import subprocess
import sys

import pytest

from lean_nodes.core import workflow
from lean_testlib import REPO, graphs

pytestmark = pytest.mark.tier2
DATA = REPO / "tests" / "data"
MAP = {"v1-5-pruned-emaonly-fp16.safetensors": "lean_sd15.safetensors"}


def canonical(prompt):
    """A prompt with node ids replaced by 'ClassType#k' so two prompts compare by structure."""
    names = {}
    for nid in sorted(prompt, key=lambda n: (prompt[n]["class_type"], json.dumps(
            {k: v for k, v in prompt[n]["inputs"].items() if not isinstance(v, list)}, sort_keys=True))):
        ct = prompt[nid]["class_type"]
        names[nid] = f"{ct}#{sum(1 for v in names.values() if v.startswith(ct + '#'))}"
    return {names[nid]: {k: ([names[v[0]], v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
            for nid, node in prompt.items()}


def test_ui_workflow_converts_to_the_handwritten_api_prompt(comfy):
    ui = json.loads((DATA / "txt2img_ui.json").read_text())
    api = workflow.ui_to_api(ui, comfy.object_info(), MAP)
    expected = graphs.txt2img(ckpt="lean_sd15.safetensors", positive="a red cube on a table", negative="blurry",
                              seed=42, steps=1, cfg=7, prefix="lean_ui_run")
    # the Note and the Reroute are not sent, the muted EmptyLatentImage is dropped, the seed's
    # "control after generate" value is skipped, the VAE link is followed through the Reroute
    assert canonical(api) == canonical(expected)


def test_lean_run_executes_a_ui_workflow_in_the_host(comfy_sd15):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "lean.py"), "run", str(DATA / "txt2img_ui.json"),
                        "--url", comfy_sd15.url, "--map", "v1-5-pruned-emaonly-fp16.safetensors=lean_sd15.safetensors"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    paths = [line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("node #")]
    assert len(paths) == 1 and pathlib.Path(paths[0]).is_file(), r.stdout
    assert pathlib.Path(paths[0]).parent == comfy_sd15.base / "output"


def test_lean_run_reports_a_failing_workflow(comfy):
    bad = graphs.txt2img(ckpt="no_such_model.safetensors")
    path = comfy.base / "bad_api.json"
    path.write_text(json.dumps(bad))
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "lean.py"), "run", str(path), "--url", comfy.url],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "no_such_model.safetensors" in r.stdout + r.stderr


def _templates():
    """The host frontend's workflow templates: one `templates/` folder in comfyui_workflow_templates up to 0.1.x;
    since the multi-bundle distribution (0.11.x, ComfyUI 0.33) the JSON files are in comfyui_workflow_templates_json."""
    import importlib
    for name in ("comfyui_workflow_templates_json", "comfyui_workflow_templates"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        found = sorted((pathlib.Path(mod.__file__).parent / "templates").glob("*.json"))
        if found:
            return found
    return []


# ComfyUI's V3 node API (0.33): inputs that stand for a group of "<name>.<sub>" inputs, and types matched at run time
V3_GROUPS = ("COMFY_AUTOGROW_V3", "COMFY_DYNAMICCOMBO_V3", "COMFY_DYNAMICSLOT_V3")
V3_ANY = ("COMFY_MATCHTYPE_V3", "COMFY_MULTITYPED_V3")
FRONTEND_ONLY = ("IMAGECOMPARE",)  # ImageCompare's compare_view (0.33): saved with no widget value


def _widget_count_matches(node, info):
    values = node.get("widgets_values")
    if not isinstance(values, list):
        return True
    return len(values) == sum(1 + extra for _, _, extra in workflow.widget_inputs(info[node["type"]]))


def test_host_templates_convert_with_every_required_input(comfy):
    """Every template shipped with the host's frontend that uses only nodes this host knows converts to a
    prompt whose nodes have all their required inputs, with links to outputs of the right type."""
    info = comfy.object_info()
    checked = 0
    for path in _templates():
        ui = json.loads(path.read_text())
        if not workflow.is_ui_workflow(ui) or ui.get("definitions"):
            continue  # subgraphs are out of scope
        if any(n["type"] not in info and n["type"] not in workflow.VIRTUAL_NODES for n in ui["nodes"]):
            continue
        if any(not _widget_count_matches(n, info) for n in ui["nodes"] if n["type"] in info):
            continue  # saved with another version of a node than this host has
        if any(s[0] in FRONTEND_ONLY for n in ui["nodes"] if n["type"] in info
               for s in (info[n["type"]]["input"].get("required") or {}).values()):
            continue  # a display-only widget whose API value only the frontend knows (lean.py run cannot send it)
        api = workflow.ui_to_api(ui, info)
        for nid, node in api.items():
            spec = info[node["class_type"]]["input"]
            for name, ispec in (spec.get("required") or {}).items():
                if ispec[0] in V3_GROUPS:  # V3 dynamic inputs arrive as "<name>.<sub>" keys, as the frontend sends
                    assert any(k.startswith(name + ".") for k in node["inputs"]) or name in node["inputs"], \
                        f"{path.name}: #{nid} {node['class_type']} lacks {name}.*"
                    continue
                assert name in node["inputs"], f"{path.name}: #{nid} {node['class_type']} lacks {name}"
                value = node["inputs"][name]
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    src = api[value[0]]
                    out_type = info[src["class_type"]]["output"][value[1]]
                    assert ispec[0] in ("*", *V3_ANY) or out_type in ("*", *V3_ANY) or out_type == ispec[0] or \
                        (isinstance(ispec[0], str) and out_type in ispec[0].split(",")), \
                        f"{path.name}: #{nid}.{name} wants {ispec[0]}, gets {out_type}"
                elif ispec[0] == "INT":
                    assert isinstance(value, int) and not isinstance(value, bool), f"{path.name}: #{nid}.{name}={value!r}"
                elif ispec[0] == "FLOAT":
                    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path.name}: #{nid}.{name}={value!r}"
        checked += 1
    if not _templates():
        pytest.skip("the host's comfyui_workflow_templates package is not installed")
    assert checked >= 20, f"only {checked} templates were convertible"


def _serve(tmp_path, env):
    """Start `scripts/lean.py serve` on a free port with a fresh base directory; (proc, output lines, url)."""
    import time
    from lean_testlib import harness

    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)  # the host lists it before anything else
    port = harness.free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "lean.py"), "serve", "--port", str(port), "--",
                             "--base-directory", str(base)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    lines = []
    t0 = time.time()
    while time.time() - t0 < 240:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Lean Nodes: ComfyUI is running at" in line:
            break
    return proc, lines, f"http://127.0.0.1:{port}"


def _stop(proc):
    import os
    import signal
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


def test_lean_serve_starts_the_host_with_the_pack(tmp_path):
    """`scripts/lean.py serve` finds the host (COMFYUI_PATH), loads the pack from outside the host's
    custom_nodes and prints the URL it serves on."""
    import os
    import urllib.request
    from lean_testlib import harness

    host, _ = harness.find_host()
    proc, lines, url = _serve(tmp_path, harness.host_env(harness.host_python(host),
                                                         dict(os.environ, COMFYUI_PATH=str(host))))
    try:
        assert any(url in l for l in lines), "".join(lines[-50:])
        with urllib.request.urlopen(url + "/system_stats", timeout=10) as r:
            argv = json.loads(r.read())["system"]["argv"]
        assert "--cpu" in argv  # this machine has no GPU
        assert any("comfyui-lean" in l and "seconds" in l and "IMPORT FAILED" not in l for l in lines), "".join(lines)
    finally:
        _stop(proc)


@pytest.mark.one_host  # it starts the provisioned default host whichever host the run tests (CI runs it on 0.33.0 only)
def test_lean_serve_without_a_comfyui_of_your_own_uses_the_provisioned_default_host(tmp_path):
    """A fresh machine after .ci/run: no COMFYUI_PATH, no ~/ComfyUI, this python without the host's packages:
    `serve` runs the provisioned default host with its own environment, and says so."""
    import os
    import urllib.request
    from lean_testlib import harness, prereq

    hosts = harness._hosts_module()
    if not hosts.provisioned(hosts.DEFAULT):
        pytest.skip(prereq(f"the default host ComfyUI {hosts.DEFAULT} is not provisioned here "
                           f"(python scripts/hosts.py provision {hosts.DEFAULT})"))
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "LEAN_HOST_PYTHON", "PYTHONPATH")}
    env.update(HOME=str(tmp_path / "home"), LEAN_CACHE=str(hosts.cache_root().parent))
    proc, lines, url = _serve(tmp_path, env)
    try:
        out = "".join(lines)
        assert f"using the provisioned test host ComfyUI {hosts.DEFAULT}" in out, out[-3000:]
        assert any(url in l for l in lines), out[-3000:]
        with urllib.request.urlopen(url + "/system_stats", timeout=10) as r:
            system = json.loads(r.read())["system"]
        assert system["comfyui_version"] == hosts.DEFAULT
        assert any("comfyui-lean" in l and "seconds" in l and "IMPORT FAILED" not in l for l in lines), out
    finally:
        _stop(proc)
