#!/usr/bin/env python3
"""Lean Nodes command line.

    python scripts/lean.py serve [--port 8188] [--listen 127.0.0.1] [-- extra ComfyUI args]
    python scripts/lean.py doctor [--json] [WORKFLOW.json] [--url http://127.0.0.1:8188]
    python scripts/lean.py run WORKFLOW.json [--url http://127.0.0.1:8188] [--map old=new ...]

serve  starts ComfyUI with this pack loaded: COMFYUI_PATH, else the ComfyUI this pack sits in
       (ComfyUI/custom_nodes/<pack>), else ~/ComfyUI; with none of those, the default host of the test matrix
       (scripts/hosts.py, ComfyUI 0.33.0) when it has been provisioned on this machine, with its own environment,
       and it says so.  --cpu is added when torch sees no GPU.  A pack that is not
       already in the host's custom_nodes is added through a generated extra_model_paths file, so the host's own
       models, inputs and outputs are used as they are.
doctor prints what this machine has and what fits (hardware, software, each model file's size and dtype from its
       header, ComfyUI flags that help), offline; --json for JSON.  With WORKFLOW.json it also checks that workflow's
       node types (against the host answering at --url, if any) and model files.  Exit 1 when something is missing.
run    runs a workflow headless: API-format files as they are, UI-format files (what the editor saves) converted
       to API format from the host's /object_info.  It uses the host at --url when one answers there, else starts
       one for the run and stops it afterwards.  Prints where each output went.
"""
import argparse
import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

REPO = pathlib.Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-lean"


def _load_workflow_module():
    # core/workflow.py is pure; load it by path (the repo root must never go on sys.path: the host has `nodes`).
    spec = importlib.util.spec_from_file_location("lean_workflow", REPO / "core" / "workflow.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load_hosts_module():
    spec = importlib.util.spec_from_file_location("lean_hosts_matrix", REPO / "scripts" / "hosts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load_core(name):
    """core/<name>.py as a module of a package of its own (relative imports inside core/ work; no host import)."""
    if "lean_core" not in sys.modules:
        spec = importlib.util.spec_from_file_location("lean_core", REPO / "core" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "core")])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["lean_core"] = pkg
        spec.loader.exec_module(pkg)
    return importlib.import_module(f"lean_core.{name}")


def find_host():
    """(ComfyUI folder, python to run it with).  A user's own ComfyUI always wins; else the provisioned default
    host of the test matrix."""
    hosts = _load_hosts_module()
    path, why = hosts.find_user_host()
    if path:
        return path, hosts.python_for(path)
    if hosts.provisioned(hosts.DEFAULT):
        path, py = hosts.host_dir(hosts.DEFAULT), hosts.venv_python(hosts.DEFAULT)
        standin = hosts.provisioned(hosts.DEFAULT).get("standin") or []
        print(f"Lean Nodes: no ComfyUI of your own found ({why}); using the provisioned test host "
              f"ComfyUI {hosts.DEFAULT} at {path} with its environment {py}"
              + (f" (torch cannot load the real {', '.join(standin)} here: an import stand-in takes their place, "
                 "so nodes that need them will not run)" if standin else ""), file=sys.stderr, flush=True)
        return path.resolve(), str(py)
    sys.exit(f"No ComfyUI found ({why}). Set COMFYUI_PATH to your ComfyUI folder, put this pack in "
             f"ComfyUI/custom_nodes/, or provision the default test host: python scripts/hosts.py provision "
             f"{hosts.DEFAULT}")


def has_gpu(python):
    code = "import torch,sys; sys.exit(0 if (torch.cuda.is_available() or getattr(torch.backends,'mps',None) and torch.backends.mps.is_available()) else 1)"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def _pack_in_host(host):
    cn = host / "custom_nodes"
    if not cn.is_dir():
        return False
    for entry in cn.iterdir():
        try:
            if entry.resolve() == REPO:
                return True
        except OSError:
            pass
    return False


def host_command(host, port, listen, extra, python=sys.executable, base_directory=None):
    cmd = [python, "main.py", "--listen", listen, "--port", str(port)]
    if base_directory:
        cmd += ["--base-directory", str(base_directory)]
    if "--cpu" not in extra and not has_gpu(python):
        cmd.append("--cpu")
    if not _pack_in_host(host) and not base_directory:
        d = pathlib.Path(tempfile.mkdtemp(prefix="lean-serve-"))
        (d / "custom_nodes").mkdir()
        (d / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
        cfg = d / "extra_model_paths.yaml"
        cfg.write_text(f"lean_nodes_pack:\n  custom_nodes: {d / 'custom_nodes'}\n")
        cmd += ["--extra-model-paths-config", str(cfg)]
    return cmd + list(extra)


# Every request of this script goes to the ComfyUI it starts on loopback: never through HTTP_PROXY/HTTPS_PROXY (the
# default urllib opener would send it, and the prompt inside it, to a proxy that the environment names).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url, timeout=5):
    with _OPENER.open(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url, data, timeout=30):
    req = urllib.request.Request(url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except json.JSONDecodeError:
            return e.code, body.decode(errors="replace")


def answering(url):
    try:
        _get(url + "/system_stats", timeout=2)
        return True
    except (OSError, ValueError):
        return False


def start_host(port, listen="127.0.0.1", extra=(), quiet=False, timeout=300):
    host, python = find_host()
    cmd = host_command(host, port, listen, extra, python=python)
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(cmd, cwd=str(host), stdout=out, stderr=subprocess.STDOUT if quiet else None)
    url = f"http://{'127.0.0.1' if listen in ('0.0.0.0', '::') else listen}:{port}"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"ComfyUI exited with code {proc.returncode} (command: {' '.join(cmd)})")
        if answering(url):
            return proc, url
        time.sleep(0.5)
    proc.terminate()
    sys.exit(f"ComfyUI did not answer at {url} within {timeout}s")


def cmd_serve(args):
    proc, url = start_host(args.port, args.listen, args.extra)
    print(f"Lean Nodes: ComfyUI is running at {url}  (Ctrl+C stops it)", flush=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    return proc.returncode or 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_prompt(path, url, replace):
    data = json.loads(pathlib.Path(path).read_text())
    wf = _load_workflow_module()
    if wf.is_ui_workflow(data):
        return wf.ui_to_api(data, _get(url + "/object_info", timeout=120), replace)
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict):
        data = data["prompt"]
    for node in data.values():
        for k, v in node.get("inputs", {}).items():
            if isinstance(v, str) and v in replace:
                node["inputs"][k] = replace[v]
    return data


def output_root(url):
    """The host's output folder, read from its command line (/system_stats argv)."""
    try:
        argv = _get(url + "/system_stats")["system"].get("argv", [])
    except (OSError, ValueError, KeyError):
        return None
    for flag in ("--output-directory", "--base-directory"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            p = pathlib.Path(argv[argv.index(flag) + 1])
            return p if flag == "--output-directory" else p / "output"
    return None


def run_prompt(url, prompt, timeout=3600):
    status, data = _post(url + "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    if status != 200:
        raise RuntimeError(f"the host refused the workflow: {json.dumps(data, indent=1)[:4000]}")
    pid = data["prompt_id"]
    t0 = time.time()
    while time.time() - t0 < timeout:
        h = _get(f"{url}/history/{pid}")
        if pid in h and (h[pid]["status"].get("completed") or h[pid]["status"].get("status_str") == "error"):
            return h[pid]
        time.sleep(0.3)
    raise TimeoutError(f"workflow not done after {timeout}s")


def cmd_run(args):
    replace = dict(m.split("=", 1) for m in args.map)
    url = args.url.rstrip("/")
    proc = None
    if not answering(url):
        port = _free_port()
        print(f"no ComfyUI answers at {url}; starting one on port {port} for this run", file=sys.stderr)
        proc, url = start_host(port, quiet=True)
    try:
        prompt = load_prompt(args.workflow, url, replace)
        entry = run_prompt(url, prompt, args.timeout)
        if entry["status"].get("status_str") != "success":
            for kind, msg in entry["status"].get("messages", []):
                if kind == "execution_error":
                    print(f"error in node #{msg.get('node_id')} ({msg.get('node_type')}): "
                          f"{msg.get('exception_type')}: {msg.get('exception_message')}", file=sys.stderr)
            return 1
        root = output_root(url)
        n = 0
        for node_id, out in entry.get("outputs", {}).items():
            for kind, items in out.items():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and "filename" in item:
                        rel = pathlib.Path(item.get("subfolder", "")) / item["filename"]
                        where = (root / rel) if (root and item.get("type", "output") == "output") else f"{item.get('type', 'output')}/{rel}"
                        print(f"node #{node_id} {kind}: {where}")
                        n += 1
        print(f"done: {n} output file(s)")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


# ---------------------------------------------------------------------------------------------- doctor

FOLDER_ALIASES = {"diffusion_models": ("unet", "diffusion_models"), "text_encoders": ("text_encoders", "clip")}


def host_folders(host):
    """{folder name: [dirs]} read from the host's layout (models/<folder>, the aliases ComfyUI uses, and the
    host's extra_model_paths.yaml when PyYAML is there).  Returns (folders, notes)."""
    models = host / "models"
    folders, notes = {}, []
    names = sorted(p.name for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
    for name in set(names) | {"checkpoints", "diffusion_models", "loras", "llm"}:
        subs = FOLDER_ALIASES.get(name, (name,))
        folders[name] = [str(models / s) for s in subs]
    folders.pop("unet", None)
    folders.pop("clip", None)
    cfg = host / "extra_model_paths.yaml"
    if cfg.is_file():
        try:
            import yaml
            data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
            for conf in data.values():
                if not isinstance(conf, dict):
                    continue
                conf = dict(conf)
                base = conf.pop("base_path", None)
                conf.pop("is_default", None)
                if base:
                    base = os.path.expandvars(os.path.expanduser(base))
                    if not os.path.isabs(base):
                        base = os.path.join(str(host), base)
                for key, val in conf.items():
                    for line in str(val).split("\n"):
                        if line.strip():
                            p = os.path.join(base, line.strip()) if base else line.strip()
                            if not os.path.isabs(p):
                                p = os.path.join(str(host), p)
                            key2 = {"unet": "diffusion_models", "clip": "text_encoders"}.get(key, key)
                            folders.setdefault(key2, []).append(os.path.normpath(p))
        except ImportError:
            notes.append(f"{cfg} not read: PyYAML is not installed in this python")
        except Exception as e:
            notes.append(f"{cfg} not read: {type(e).__name__}: {e}")
    return folders, notes


def host_version(host):
    v = _load_hosts_module().version_of(host)
    return None if v == "unknown" else v


def host_dynamic_vram(host):
    """What DynamicVRAM will be when this host starts here (the host decides at start: NVIDIA, or ROCm 7.14+, with
    torch 2.8+ and comfy-aimdo, unless --disable-dynamic-vram / --cpu / --highvram / --gpu-only / --novram)."""
    mm = host / "comfy" / "memory_management.py"
    if not mm.is_file() or "aimdo_enabled" not in mm.read_text(errors="replace"):
        return "not in this ComfyUI version"
    import importlib.util as iu
    try:
        import torch
        nv = torch.cuda.is_available() and not getattr(torch.version, "hip", None)
        tv = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    except Exception:
        return "unknown (torch not importable)"
    if not nv:
        return "off (needs an NVIDIA GPU, or ROCm 7.14+; --enable-dynamic-vram forces it)"
    if tv < (2, 8):
        return f"off (needs torch 2.8+, this is {torch.__version__})"
    if iu.find_spec("comfy_aimdo") is None:
        return "off (comfy-aimdo not installed)"
    return "on at start (unless --disable-dynamic-vram)"


def model_index(folders):
    """{relative name: (folder, path)} over every model folder (what a workflow's widget values name)."""
    doctor = _load_core("doctor")
    idx = {}
    for name, dirs in sorted(folders.items()):
        for rel, full in doctor.list_model_files(dirs):
            idx.setdefault(rel, (name, full))
    return idx


def cmd_doctor(args):
    doctor = _load_core("doctor")
    env = os.environ.get("COMFYUI_PATH")
    try:
        host, _python = find_host()
    except SystemExit as e:
        host, host_error = None, str(e)
    notes, folders = [], {n: [] for n in doctor.FIT_FOLDERS}
    if host:
        folders, notes = host_folders(host)
    facts = doctor.gather({k: folders[k] for k in doctor.FIT_FOLDERS if k in folders},
                          comfyui_version=host_version(host) if host else None,
                          dynamic_vram=host_dynamic_vram(host) if host else None, pack_root=str(REPO))
    report = doctor.build_report(facts)
    report["host"] = str(host) if host else None
    report["problems"] = [] if host else [host_error]
    report["fit"]["notes"].extend(notes)
    if args.workflow:
        url = args.url.rstrip("/")
        types, source = None, f"no ComfyUI answered at {url}"
        if answering(url):
            try:
                types, source = set(_get(url + "/object_info", timeout=60)), f"{url}/object_info"
            except (OSError, ValueError) as e:
                source = f"{url}/object_info failed: {e}"
        try:
            data = json.loads(pathlib.Path(args.workflow).read_text(encoding="utf-8"))
            wf = doctor.check_workflow(data, model_index(folders), types, report["fit"], source)
        except (OSError, ValueError) as e:
            wf = {"node_types": [], "nodes_checked": False, "node_source": source, "missing_nodes": [],
                  "files": [], "problems": [f"{args.workflow}: {type(e).__name__}: {e}"]}
        wf["path"] = str(args.workflow)
        report["workflow"] = wf
    if args.distributed:
        report["distributed"] = distributed_check(args, host, folders, report.get("workflow"), doctor)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(doctor.render_text(report) if host else doctor.render_text(report) + f"\n(COMFYUI_PATH={env})")
    return 1 if doctor.problems(report) else 0


def distributed_config_path(host, given):
    """ComfyUI-Distributed's config: the path given, else gpu_config.json of the ComfyUI-Distributed folder in the
    host's custom_nodes."""
    if given and given != "auto":
        return pathlib.Path(given)
    for d in sorted((pathlib.Path(host) / "custom_nodes").glob("*")) if host else []:
        if (d / "distributed.py").is_file() and (d / "gpu_config.json").is_file():
            return d / "gpu_config.json"
    return None


def distributed_check(args, host, folders, wf, doctor):
    """Each enabled worker of ComfyUI-Distributed's config (the workers the user named there, and only those):
    answers, runs this Lean Nodes version, has the workflow's model files and wildcards (the same files)."""
    dist = _load_core("distributed")
    path = distributed_config_path(host, args.distributed)
    if path is None or not path.is_file():
        return {"config": str(path), "workers": [], "problems": [
            f"ComfyUI-Distributed's config not found ({path or 'no ComfyUI-Distributed folder in custom_nodes'}); "
            "give it with --distributed PATH/gpu_config.json"]}
    try:
        workers = dist.config_workers(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        return {"config": str(path), "workers": [], "problems": [f"{path}: {type(e).__name__}: {e}"]}
    roots = folders.get("wildcards") or ([str(pathlib.Path(host) / "models" / "wildcards")] if host else [])
    local = {"pack": doctor._pack_version(str(REPO)), "wildcards": doctor.wildcard_hashes(roots)[0]}

    store = _load_core("prompts").WildcardStore(roots)

    def read(name):  # the name comes from a workflow: Prompt Batch's own rule finds the file (inside its folder)
        try:
            with open(store.path(name), encoding="utf-8-sig", errors="replace") as f:
                return f.read(1 << 20)
        except (ValueError, OSError):
            return None

    needs = {"files": [], "wildcards": []}
    if wf and args.workflow:
        needs["files"] = sorted({(f["type"], f["file"]) for f in wf.get("files", [])})
        try:
            data = json.loads(pathlib.Path(args.workflow).read_text(encoding="utf-8"))
            texts = [v for _, t, vals in doctor.workflow_nodes(data) if t == "LeanPromptBatch" for v in vals]
            needs["wildcards"] = doctor.wildcards_used(texts, read)
        except (OSError, ValueError):
            pass
    out = doctor.check_distributed(workers, local, needs, dist.ask)
    out["config"] = str(path)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="lean.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="start ComfyUI with Lean Nodes loaded")
    s.add_argument("--port", type=int, default=8188)
    s.add_argument("--listen", default="127.0.0.1")
    s.add_argument("extra", nargs="*", help="more ComfyUI arguments, after --")
    r = sub.add_parser("run", help="run a workflow (UI or API format) headless")
    r.add_argument("workflow")
    r.add_argument("--url", default="http://127.0.0.1:8188")
    r.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="replace a widget value, e.g. a model file name, before queueing")
    r.add_argument("--timeout", type=float, default=3600)
    d = sub.add_parser("doctor", help="what this machine has, what fits, and what a workflow needs")
    d.add_argument("workflow", nargs="?", help="a workflow (UI or API format) to check")
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.add_argument("--url", default="http://127.0.0.1:8188", help="a running host to ask for its node types")
    d.add_argument("--distributed", nargs="?", const="auto", metavar="GPU_CONFIG",
                   help="also check ComfyUI-Distributed's enabled workers (its gpu_config.json, found in the "
                        "host's custom_nodes unless given): each answers, runs this Lean Nodes version, has the "
                        "workflow's model files and wildcards")
    args = p.parse_args(argv)
    return {"serve": cmd_serve, "run": cmd_run, "doctor": cmd_doctor}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
