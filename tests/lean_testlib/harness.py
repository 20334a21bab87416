"""Tier-2 harness: a real ComfyUI host in a subprocess, with this repo in its custom_nodes/.

    host = ComfyHost.start(comfy_path, base_dir)      # waits for /system_stats
    host.object_info("LeanCanny")
    entry = host.run(prompt)                          # queue + wait in /history, raises PromptFailed
    host.output_files(entry)                          # paths of the images/files the prompt wrote
    host.stop()                                       # by PID

A test module's host: `with harness.own_host(tmp_path_factory, "tag", setup=fn, extra_args=[...]) as h: yield h`
(a missing host is a prerequisite skip; `setup(base)` puts fixtures and test-only nodes in before the start).
Hosts with the same flags are shared: `HostPool.use(extra_args, setup=fn)` (conftest's `shared_hosts` fixture).
"""
import contextlib
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


def host_release(comfy_path):
    """host_version as a tuple of ints, for comparisons: (0, 33, 0)."""
    return tuple(int(x) for x in host_version(comfy_path).split(".")[:3])


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


def require_host():
    """The ComfyUI tier 2 runs in; with none found, a prerequisite skip (a failure under CI=true)."""
    path, why = find_host()
    if not path:
        import pytest
        from . import prereq
        pytest.skip(prereq(f"tier 2 skipped: no ComfyUI host found ({why})"))
    return path


@contextlib.contextmanager
def own_host(tmp_path_factory, tag, setup=None, **start_kw):
    """A host of a test module's own, stopped on leaving: a fresh --base-directory tmp_path_factory.mktemp(tag),
    `setup(base)` (models, wildcards, test-only custom nodes: what must be there before the host starts), then
    ComfyHost.start(**start_kw).  Prefer HostPool.use when the module needs no flags or files of its own at start."""
    path = require_host()
    base = make_base_dir(tmp_path_factory.mktemp(tag))
    if setup:
        setup(base)
    host = ComfyHost.start(path, base, **start_kw)
    try:
        yield host
    finally:
        host.stop()


def _shared_test_nodes():
    """The test-only custom nodes every pooled host has (each inert until a prompt uses it)."""
    from . import chunk_limit_node, flux_cond_node, probe_node, tiny_te_node, weight_hash_node
    return (probe_node, flux_cond_node, weight_hash_node, tiny_te_node, chunk_limit_node)


_POOLS = []  # every HostPool of this process: a new host process stops their idle flagged hosts first


def _stop_idle_flagged_hosts():
    for pool in _POOLS:
        pool.stop_idle_flagged()


class HostPool:
    """Hosts shared between test modules, one per set of start flags (extra_args): the first module that asks for
    a set starts it, later ones reuse it; all stop at the end of the session.  A module's `setup(base)` may add
    models and files (ComfyUI lists its folders afresh), not custom nodes: every pooled host starts with the
    test-only nodes of _shared_test_nodes().  Leaving `use` frees the models and the node cache (POST /free), so
    an idle pooled host holds no model.  A host started with flags stays up while idle only until any other host
    process starts (ComfyHost.start stops it first: its process keeps RAM that the full-size SDXL tests need), so
    modules with the same flags in a row share one (test_tier2_lora.py, then test_tier2_lora_per_image.py with the
    default host's modules between them)."""

    def __init__(self, tmp_path_factory, on_start=None):
        self.tmp_path_factory = tmp_path_factory
        self.on_start = on_start
        self.hosts = {}
        self.idle = set()  # keys of flagged hosts no module uses now
        _POOLS.append(self)

    def stop_idle_flagged(self):
        for key in list(self.idle):
            self.idle.discard(key)
            host = self.hosts.pop(key, None)
            if host is not None:
                host.stop()

    def get(self, extra_args=()):
        key = tuple(extra_args)
        self.idle.discard(key)
        host = self.hosts.get(key)
        if host is None or not host.alive():
            path = require_host()
            base = make_base_dir(self.tmp_path_factory.mktemp("shared_" + ("_".join(key).strip("-") or "default")))
            for node in _shared_test_nodes():
                node.install(base)
            try:
                host = ComfyHost.start(path, base, extra_args=list(key))
            except Exception as e:
                if self.on_start:
                    self.on_start(None, e)
                raise
            if self.on_start:
                self.on_start(host, None)
            self.hosts[key] = host
        return host

    @contextlib.contextmanager
    def use(self, extra_args=(), setup=None):
        host = self.get(extra_args)
        if setup:
            setup(host.base)
        try:
            yield host
        finally:
            if host.alive():
                host.free()
            if tuple(extra_args):
                # idle until another host process starts (which stops it first: the RAM its process kept after the
                # models were freed must be back before the full-size SDXL hosts start; one was OOM-killed beside it)
                self.idle.add(tuple(extra_args))

    def stop_all(self):
        for host in self.hosts.values():
            host.stop()
        self.hosts.clear()
        self.idle.clear()


# Peer custom-node packs (../shared/peers/README.md): archive name -> sha256 of the .tar.gz, as published there.
PEERS = {
    "comfyui-gguf-795e451.tar.gz": "8eadfbaaacebe7e01aaed8dca131bb598952e3dabfacb0ab7197772c849cf9b3",
    "comfyui-distributed-a91f9fb.tar.gz": "b12a3b39e88ac94ee0aced8fbcea694713bfc7b020ccc4f51a23a7b873a3b8fd",
}


def peers_dir():
    """Where the peer archives are: $LEAN_PEERS_DIR, else the first shared/peers beside this checkout or one of
    its parents (a worktree under /work/wt/NAME finds /work/shared/peers)."""
    env = os.environ.get("LEAN_PEERS_DIR")
    if env:
        return pathlib.Path(env)
    for p in REPO.resolve().parents:
        if (p / "shared" / "peers").is_dir():
            return p / "shared" / "peers"
    return REPO.parent / "shared" / "peers"


def install_peer(base, archive):
    """Unpack the peer pack `archive` (a key of PEERS) into <base>/custom_nodes/ before the host starts, after
    checking its sha256; returns the pack's folder.  Raises FileNotFoundError when the archive is not there
    (callers skip with lean_testlib.prereq) and ValueError when its bytes are not the published ones."""
    import hashlib
    import tarfile
    src = peers_dir() / archive
    if not src.is_file():
        raise FileNotFoundError(f"peer archive {archive} not found in {peers_dir()} (set LEAN_PEERS_DIR)")
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != PEERS[archive]:
        raise ValueError(f"peer archive {src}: sha256 {h.hexdigest()} is not the published {PEERS[archive]}")
    dst = make_base_dir(base, link_pack=False) / "custom_nodes"
    with tarfile.open(src, "r:gz") as tf:
        members = tf.getmembers()
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(tops) != 1 or any(m.name.startswith("/") or ".." in m.name.split("/") or m.issym() or m.islnk()
                                 for m in members):
            raise ValueError(f"peer archive {src}: not one plain folder")
        tf.extractall(dst, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dst / tops.pop()


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
              verbose="DEBUG", link_pack=True, audit_sockets=False, cpu=True, refuse_sockets=False, api_nodes=False):
        """api_nodes (default off): ComfyUI's own paid-API nodes (comfy_api_nodes) are left out with the host's
        --disable-api-nodes: the pack neither uses nor touches them, and importing them is ~1.7 s of every ComfyUI
        0.33.0 start on the 2-core machine (~1.0 s on 0.3.64).  api_nodes=True starts the host with them.
        audit_sockets (default off): put tests/lean_testlib/socket_audit/sitecustomize.py first on the host's
        PYTHONPATH so every socket connect/getaddrinfo is logged to ``host.socket_audit_log`` (True: a file in
        the base dir; a path: that file), each with whether a frame of this repo was on the stack.
        refuse_sockets (needs audit_sockets): the hook also refuses (raises) every connect/getaddrinfo to a
        non-loopback target in the host process (LEAN_SOCKET_AUDIT_REFUSE=1)."""
        _stop_idle_flagged_hosts()
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
            e[windows_semantics.MAPS_ENV] = windows_semantics.maps_dir()  # files mapped there are locked here too
        cmd = [python, "main.py", *(["--cpu"] if cpu else []), "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--disable-auto-launch", "--verbose", verbose,
               *([] if api_nodes else ["--disable-api-nodes"]), *extra_args]
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
                time.sleep(0.1)
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
        """The /history entry of prompt_id once it completed or failed.  Polls from 5 ms up, doubling to 0.2 s:
        most tier-2 prompts take well under a second, and a fixed 0.2 s poll cost each of them ~0.15 s on
        average (over a thousand prompts per CI run); a long prompt is still polled only every 0.2 s."""
        t0 = time.time()
        delay = 0.005
        while time.time() - t0 < timeout:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h:
                entry = h[prompt_id]
                if entry.get("status", {}).get("completed") or entry.get("status", {}).get("status_str") == "error":
                    return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}; log:\n{self.log_tail()}")
            time.sleep(delay)
            delay = min(2 * delay, 0.2)
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

    def free(self, unload_models=True, free_memory=True, settle=False):
        """POST /free.  ComfyUI's prompt worker carries it out between prompts, and an idle worker may carry it out
        only after the next prompt.  settle=True makes it take effect before any later prompt: a no-op prompt (the
        test-only probe node, which every pooled host has) runs after it, and the worker frees before it takes the
        next one."""
        r = self.request("/free", {"unload_models": unload_models, "free_memory": free_memory}, method="POST")
        if settle:
            from . import probe_node
            if not (self.base / "custom_nodes" / f"{probe_node.MODULE}.py").exists():
                raise RuntimeError("free(settle=True) needs the test-only probe node (lean_testlib.probe_node)")
            self.run({"1": {"class_type": "TestProbe_lean", "inputs": {"name": "settle_free"}}})
        return r

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0
