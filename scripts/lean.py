#!/usr/bin/env python3
"""Lean Nodes command line.

    python scripts/lean.py serve [--port 8188] [--listen 127.0.0.1] [-- extra ComfyUI args]
    python scripts/lean.py run WORKFLOW.json [--url http://127.0.0.1:8188] [--map old=new ...]

serve  starts ComfyUI with this pack loaded: COMFYUI_PATH, else the ComfyUI this pack sits in
       (ComfyUI/custom_nodes/<pack>), else ~/ComfyUI; with none of those, the default host of the test matrix
       (scripts/hosts.py, ComfyUI 0.33.0) when it has been provisioned on this machine, with its own environment,
       and it says so.  --cpu is added when torch sees no GPU.  A pack that is not
       already in the host's custom_nodes is added through a generated extra_model_paths file, so the host's own
       models, inputs and outputs are used as they are.
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


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url, data, timeout=30):
    req = urllib.request.Request(url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
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
    args = p.parse_args(argv)
    return cmd_serve(args) if args.cmd == "serve" else cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
