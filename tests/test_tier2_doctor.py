"""Tier 2: `python scripts/lean.py doctor` and the System Check node on a real host.

The command's real output on this machine is checked field by field against psutil, torch, os.statvfs, cv2 and the
safetensors / gguf packages, each read here independently.  The node runs in the host (its report is read from
/history), and `doctor WORKFLOW.json` checks a shipped workflow with and without a host answering."""
import importlib.util
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from lean_testlib import REPO, harness

pytestmark = pytest.mark.tier2

GiB = 1 << 30


def _host():
    path = harness.require_host()
    return pathlib.Path(path)


def _doctor(comfy_path, *args, url="http://127.0.0.1:9"):
    env = dict(os.environ, COMFYUI_PATH=str(comfy_path))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "lean.py"), "doctor", *args, "--url", url],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def fake_host(tmp_path_factory, sd15_ckpt):
    """A ComfyUI layout (the real host's code linked) with models of our own and an extra_model_paths.yaml."""
    from lean_testlib import lora, tiny_gguf
    real = _host()
    h = tmp_path_factory.mktemp("doctor_host")
    for name in ("main.py", "comfy", "comfyui_version.py"):
        (h / name).symlink_to(real / name)
    for folder, src, name in (("checkpoints", sd15_ckpt, "lean_sd15.safetensors"),
                              ("loras", lora.sd15_lora(rank=32), "lean_lora.safetensors")):
        (h / "models" / folder).mkdir(parents=True, exist_ok=True)
        (h / "models" / folder / name).symlink_to(src)
    extra = tmp_path_factory.mktemp("doctor_extra")
    (extra / "llm").mkdir()
    (extra / "llm" / "tiny.gguf").symlink_to(tiny_gguf.tiny_model(qtype="Q8_0"))
    (h / "extra_model_paths.yaml").write_text(f"mine:\n  base_path: {extra}\n  llm: llm\n")
    return h


def test_command_report_matches_the_machine(fake_host):
    import psutil
    import torch
    r = _doctor(fake_host, "--json")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(r.stdout)
    hw, sw = rep["hardware"], rep["software"]
    # CPU and RAM (psutil directly)
    assert hw["cpu"]["cores_logical"] == psutil.cpu_count(logical=True) == os.cpu_count()
    assert hw["cpu"]["cores_physical"] == psutil.cpu_count(logical=False)
    assert hw["cpu"]["ram_total"] == psutil.virtual_memory().total
    assert abs(hw["cpu"]["ram_free"] - psutil.virtual_memory().available) < 2 * GiB  # other processes move it
    # accelerators: torch here sees none (this is the CPU machine these tests run on)
    expect_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert len([d for d in hw["devices"] if d["kind"] in ("cuda", "rocm")]) == expect_cuda
    for d in hw["devices"]:
        if d["kind"] == "cuda":
            assert d["total"] == torch.cuda.get_device_properties(d["index"]).total_memory
    assert (hw["topology"] == "nvidia-smi not found") == (shutil.which("nvidia-smi") is None)
    # disk: os.statvfs, not shutil.disk_usage (what the doctor uses)
    assert hw["disk"], "no model folder listed"
    for d, e in hw["disk"].items():
        assert e["exists"] == os.path.isdir(d), d
        if e["exists"]:
            st = os.statvfs(d)
            assert e["total"] == st.f_blocks * st.f_frsize
            assert abs(e["free"] - st.f_bavail * st.f_frsize) < GiB  # other writers share the disk
    assert str(fake_host / "models" / "checkpoints") in hw["disk"]
    # software
    assert sw["python"] == platform.python_version()
    assert sw["torch"] == torch.__version__
    assert sw["torch_build"] == (f"CUDA {torch.version.cuda}" if torch.version.cuda else sw["torch_build"])
    if not (torch.version.cuda or torch.version.hip or torch.backends.mps.is_built()):
        assert sw["torch_build"] == "CPU"
    version = re.search(r'"([^"]+)"', (fake_host / "comfyui_version.py").read_text()).group(1)
    assert sw["comfyui"] == version
    assert sw["pack"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    import cv2
    assert sw["optional"]["opencv"] == cv2.__version__
    assert (sw["optional"]["llama_cpp"] is None) == (importlib.util.find_spec("llama_cpp") is None)
    has_dyn = "aimdo_enabled" in (fake_host / "comfy" / "memory_management.py").read_text() \
        if (fake_host / "comfy" / "memory_management.py").exists() else False
    assert (sw["dynamic_vram"] == "not in this ComfyUI version") == (not has_dyn)
    # models: size from the file system, dtype from the safetensors / gguf packages
    from safetensors import safe_open
    import gguf
    models = {(m["folder"], m["name"]): m for m in rep["models"]}
    assert set(models) == {("checkpoints", "lean_sd15.safetensors"), ("loras", "lean_lora.safetensors"),
                           ("llm", "tiny.gguf")}, set(models)  # llm came from extra_model_paths.yaml
    for (folder, name), m in models.items():
        assert m["size"] == os.path.getsize(m["path"])
        if name.endswith(".safetensors"):
            counts = {}
            with safe_open(m["path"], framework="pt") as f:
                for k in f.keys():
                    sl = f.get_slice(k)
                    n = 1
                    for s in sl.get_shape():
                        n *= s
                    dt = sl.get_dtype()
                    counts[dt] = counts.get(dt, 0) + n * {"F16": 2, "F32": 4, "BF16": 2, "I64": 8}[dt]
            assert m["dtype"] == max(counts, key=counts.get), (name, counts)
            assert m["bytes"] == sum(counts.values())
        else:
            r2 = gguf.GGUFReader(m["path"])
            assert m["n_layers"] == int(r2.fields["qwen2.block_count"].parts[-1][0])
    fit = {(f["folder"], f["name"]): f for f in rep["fit"]["files"]}
    assert all(f["status"] == "CPU only" for f in fit.values()), fit
    assert [f["flag"] for f in rep["fit"]["flags"]] == ["--cpu"]
    assert fit[("llm", "tiny.gguf")]["n_gpu_layers"] == 0


def test_command_text_and_exit_code(fake_host):
    r = _doctor(fake_host)
    assert r.returncode == 0, r.stdout + r.stderr
    for s in ("-- Hardware", "-- Software", "-- What fits", "checkpoints/lean_sd15.safetensors", "llm/tiny.gguf",
              "flag: --cpu", "-- Result: OK"):
        assert s in r.stdout, s


def test_command_with_a_workflow_and_no_host_answering(fake_host):
    wf = REPO / "example_workflows" / "lean_llm_prompt.json"
    r = _doctor(fake_host, str(wf))
    # the shipped workflow names model files this layout does not have: exit 1 with the reasons
    assert r.returncode == 1, r.stdout
    assert "node availability NOT checked" in r.stdout
    assert "MISSING" in r.stdout and "problem: node #" in r.stdout


def test_command_with_a_workflow_against_the_running_host(comfy, fake_host, tmp_path):
    api = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "lean_sd15.safetensors"}},
           "2": {"class_type": "LeanSystemCheck", "inputs": {}},
           "3": {"class_type": "NoSuchNodeAnywhere", "inputs": {"lora_name": "lean_lora.safetensors"}}}
    p = tmp_path / "wf.json"
    p.write_text(json.dumps(api))
    r = _doctor(fake_host, "--json", str(p), url=comfy.url)
    assert r.returncode == 1, r.stdout
    wf = json.loads(r.stdout)["workflow"]
    assert wf["nodes_checked"] is True and wf["missing_nodes"] == ["NoSuchNodeAnywhere"]
    assert [f["found"] for f in wf["files"]] == [True, True]
    assert wf["files"][0]["status"] == "CPU only"
    assert len(wf["problems"]) == 1


def test_system_check_node_runs_in_the_host(comfy_sd15):
    entry = comfy_sd15.run({"1": {"class_type": "LeanSystemCheck", "inputs": {}}})
    text = entry["outputs"]["1"]["text"][0]
    version = harness.host_version(_host())
    assert f"ComfyUI {version}" in text
    assert "checkpoints/lean_sd15.safetensors" in text and "CPU only" in text
    assert "ComfyUI device: cpu" in text
    dyn = "not in this ComfyUI version" if not (_host() / "comfy" / "memory_management.py").exists() or \
        "aimdo_enabled" not in (_host() / "comfy" / "memory_management.py").read_text() else "off"
    assert f"DynamicVRAM: {dyn}" in text
    # the session's host also holds the bad-input catalogue's files: each .safetensors whose header cannot be read
    # (the format: an 8-byte little-endian length, then that many bytes of JSON) must be flagged, and only then is
    # the result not OK
    import struct
    unreadable = []
    for f in sorted((comfy_sd15.base / "models" / "checkpoints").glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                if n > f.stat().st_size - 8:
                    raise ValueError("header longer than the file")
                json.loads(fh.read(n))
        except Exception:
            unreadable.append(f.name)
    unreadable = [f"checkpoints/{name}" for name in unreadable]
    # and other modules' tests may have put LLM files in the shared host (a .gguf starts with the magic b"GGUF")
    llm = comfy_sd15.base / "models" / "llm"
    for f in sorted(llm.rglob("*.gguf")) if llm.is_dir() else ():
        with open(f, "rb") as fh:
            if fh.read(4) != b"GGUF":
                unreadable.append("llm/" + f.relative_to(llm).as_posix())
    for name in unreadable:
        assert f"{name}: " in text and "unreadable" in text.split(f"{name}: ", 1)[1].split(" | ")[0].splitlines()[0], name
    assert ("-- Result: OK" in text) == (not unreadable), (unreadable, text[-500:])
    # not cached: a second run runs again
    again = comfy_sd15.run({"1": {"class_type": "LeanSystemCheck", "inputs": {}}})
    assert again["outputs"]["1"]["text"][0].startswith("== Lean Nodes system check ==")


def test_advanced_flags_reach_object_info(comfy):
    """/object_info carries the advanced flags the static reader sees, in the same input order."""
    from lean_testlib.node_inputs import static_inputs
    info = comfy.object_info()
    for f in sorted((REPO / "nodes").glob("[!_]*.py")):
        for node, rows in static_inputs(f.read_text()).items():
            got = []
            for group in ("required", "optional"):
                for name, spec in (info[node]["input"].get(group) or {}).items():
                    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                    got.append((group, name, opts.get("advanced") is True))
            assert got == [(g, n, o.get("advanced") is True) for g, n, _, o in rows], node
