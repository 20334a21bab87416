"""Tier-2 harness: a real ComfyUI host in a subprocess, with this repo in its custom_nodes/.

    host = ComfyHost.start(comfy_path, base_dir)      # waits for /system_stats
    host.object_info("LeanCanny")
    entry = host.run(prompt)                          # queue + wait in /history, raises PromptFailed
    host.output_files(entry)                          # paths of the images/files the prompt wrote
    host.stop()                                       # by PID
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from . import REPO

PACK_DIR_NAME = "comfyui-lean"
SHIMS = REPO / "tests" / "host_shims"
SOCKET_AUDIT = pathlib.Path(__file__).resolve().parent / "socket_audit"
WINDOWS_SITE = pathlib.Path(__file__).resolve().parent / "windows_site"


def _hosts_module():
    """scripts/hosts.py (the host matrix and provisioning), loaded by path: scripts/ is no package."""
    import importlib.util
    name = "lean_hosts_matrix"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "hosts.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def find_host():
    """(path, None) for a usable ComfyUI checkout, else (None, why): COMFYUI_PATH, else the ComfyUI this pack
    sits in (ComfyUI/custom_nodes/<pack>), else ~/ComfyUI -- the same order as `scripts/lean.py serve`."""
    return _hosts_module().find_user_host()


def host_version(comfy_path):
    return _hosts_module().version_of(comfy_path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_python(comfy_path):
    """The python a host runs with: $LEAN_HOST_PYTHON, a provisioned host's own environment, else this one."""
    return _hosts_module().python_for(comfy_path)


def needs_torchvision_shim(python=sys.executable):
    """True when torchvision or torchaudio cannot be imported by `python` (a provisioned host's environment has the
    import stand-in on its own path already; another python gets tests/host_shims on the host's PYTHONPATH)."""
    code = "import torchvision, torchaudio"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([python, "-c", code], capture_output=True, env=env).returncode != 0


def host_env(python=sys.executable, env=None):
    """The environment for a host process: the import stand-in on its path when `python` needs it."""
    e = dict(os.environ if env is None else env)
    if needs_torchvision_shim(python):
        e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIMS), e.get("PYTHONPATH")]))
    return e


def make_base_dir(base, link_pack=True):
    """A --base-directory: custom_nodes/ links this repo, models/ input/ output/ user/ exist."""
    base = pathlib.Path(base)
    for sub in ("custom_nodes", "models/checkpoints", "models/loras", "models/controlnet", "models/llm",
                "models/wildcards", "input", "output", "temp", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if link_pack and not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    if not settings.exists():
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    return base


def link_model(base, folder, src, name=None):
    """Make a fixture visible in the host's models/<folder>/ under `name`."""
    dst = pathlib.Path(base) / "models" / folder / (name or pathlib.Path(src).name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(pathlib.Path(src).resolve())
    return dst


class PromptFailed(RuntimeError):
    def __init__(self, message, entry=None, node_errors=None):
        super().__init__(message)
        self.entry = entry
        self.node_errors = node_errors


class ComfyHost:
    def __init__(self, comfy_path, base_dir, port, proc, log_path):
        self.comfy_path = pathlib.Path(comfy_path)
        self.base = pathlib.Path(base_dir)
        self.port = port
        self.proc = proc
        self.log_path = pathlib.Path(log_path)
        self.url = f"http://127.0.0.1:{port}"
        self.client_id = uuid.uuid4().hex
        self.socket_audit_log = None

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, comfy_path, base_dir, port=None, extra_args=(), env=None, timeout=240, python=None,
              verbose="DEBUG", link_pack=True, audit_sockets=False, cpu=True, refuse_sockets=False):
        """audit_sockets (default off): put tests/lean_testlib/socket_audit/sitecustomize.py first on the host's
        PYTHONPATH so every socket connect/getaddrinfo is logged to ``host.socket_audit_log`` (True: a file in
        the base dir; a path: that file), each with whether a frame of this repo was on the stack.
        refuse_sockets (needs audit_sockets): the hook also refuses (raises) every connect/getaddrinfo to a
        non-loopback target in the host process (LEAN_SOCKET_AUDIT_REFUSE=1)."""
        base = make_base_dir(base_dir, link_pack=link_pack)
        python = python or host_python(comfy_path)
        port = port or free_port()
        log_path = base / "comfyui.log"
        e = host_env(python, env)
        e.setdefault("PYTHONUNBUFFERED", "1")
        audit_log = None
        if audit_sockets:
            audit_log = pathlib.Path(base / "socket_audit.jsonl" if audit_sockets is True else audit_sockets)
            e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOCKET_AUDIT), e.get("PYTHONPATH")]))
            e["LEAN_SOCKET_AUDIT_LOG"] = str(audit_log)
            if refuse_sockets:
                e["LEAN_SOCKET_AUDIT_REFUSE"] = "1"
            e["LEAN_SOCKET_AUDIT_CODE"] = os.pathsep.join([str(REPO.resolve()) + os.sep,
                                                           os.sep + os.path.join("custom_nodes", PACK_DIR_NAME) + os.sep])
        from . import windows_semantics
        if windows_semantics.enabled():  # first on the HOST's path; it chains to the next sitecustomize
            e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WINDOWS_SITE), e.get("PYTHONPATH")]))
            e[windows_semantics.CODE_ENV] = os.pathsep.join(windows_semantics.default_prefixes(REPO))
            e[windows_semantics.ENV] = "1"
        cmd = [python, "main.py", *(["--cpu"] if cpu else []), "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--disable-auto-launch", "--verbose", verbose, *extra_args]
        log = open(log_path, "ab")
        proc = subprocess.Popen(cmd, cwd=str(comfy_path), stdout=log, stderr=subprocess.STDOUT, env=e,
                                start_new_session=True)
        host = cls(comfy_path, base, port, proc, log_path)
        host.socket_audit_log = audit_log
        host.wait_ready(timeout)
        if windows_semantics.enabled() and "[lean test] Windows semantics installed" not in host.log():
            host.stop()
            raise RuntimeError(f"{windows_semantics.ENV}=1 but the host did not install Windows semantics "
                               f"(sitecustomize not run?); log:\n{host.log_tail()}")
        return host

    def wait_ready(self, timeout):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} before answering; log:\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, OSError, TimeoutError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer /system_stats within {timeout}s; log:\n{self.log_tail()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=200):
        return "\n".join(self.log().splitlines()[-lines:])

    # ------------------------------------------------------------ HTTP
    def request(self, path, data=None, method=None, timeout=30, raw=False):
        body = None
        headers = {}
        if data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                payload = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            payload = e.read()
            status = e.code
        if raw:
            return status, payload
        try:
            return status, json.loads(payload or b"null")
        except json.JSONDecodeError:
            return status, payload.decode(errors="replace")

    def get(self, path, timeout=30):
        status, data = self.request(path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {data}")
        return data

    def object_info(self, node=None):
        if node:
            return self.get(f"/object_info/{node}")[node]
        return self.get("/object_info", timeout=120)

    def queue(self, prompt):
        """POST /prompt. Returns (status, response json)."""
        return self.request("/prompt", {"prompt": prompt, "client_id": self.client_id})

    def submit(self, prompt):
        status, data = self.queue(prompt)
        if status != 200:
            raise PromptFailed(f"/prompt refused the prompt ({status}): {json.dumps(data)[:4000]}",
                               node_errors=(data or {}).get("node_errors") if isinstance(data, dict) else None)
        return data["prompt_id"]

    def wait(self, prompt_id, timeout=600):
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h:
                entry = h[prompt_id]
                if entry.get("status", {}).get("completed") or entry.get("status", {}).get("status_str") == "error":
                    return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}; log:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} not done after {timeout}s")

    def run(self, prompt, timeout=600, expect_error=False):
        """Queue, wait, return the /history entry.  Raises PromptFailed unless it succeeded
        (or, with expect_error, returns the error entry and raises if it succeeded)."""
        entry = self.wait(self.submit(prompt), timeout)
        ok = entry["status"].get("status_str") == "success"
        if ok == expect_error:
            raise PromptFailed(f"prompt {'succeeded' if ok else 'failed'}: {self.error_text(entry)}", entry=entry)
        return entry

    @staticmethod
    def error_text(entry):
        for kind, msg in entry.get("status", {}).get("messages", []):
            if kind == "execution_error":
                return f"{msg.get('node_type')} #{msg.get('node_id')}: {msg.get('exception_type')}: {msg.get('exception_message')}"
        return json.dumps(entry.get("status"))[:2000]

    def output_files(self, entry, kind="images"):
        files = []
        for node_out in entry.get("outputs", {}).values():
            for item in node_out.get(kind, []) or []:
                folder = {"output": "output", "temp": "temp", "input": "input"}[item.get("type", "output")]
                files.append(self.base / folder / item.get("subfolder", "") / item["filename"])
        return files

    def interrupt(self):
        return self.request("/interrupt", {}, method="POST")

    def free(self, unload_models=True, free_memory=True):
        return self.request("/free", {"unload_models": unload_models, "free_memory": free_memory}, method="POST")

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0
