"""Offline guarantee: no Lean code path opens a socket to anything but loopback or the base_url the user typed.

- tier 1: the audit hook itself (tests/lean_testlib/socket_audit/sitecustomize.py) records a connect made by
  "repo" code and the checker flags it -- so the tier-2 check can fail.
- tier 2: a host started with the audit hook (ComfyHost.start(..., audit_sockets=True)) runs every Lean node
  (lean_testlib.workloads) plus the LLM's openai backend against a local fake server (by name, "localhost") and
  against a user-configured non-loopback base_url (TEST-NET 192.0.2.1, never reachable); every connect and
  getaddrinfo with a frame of this repo on the stack must go to loopback or those configured hosts.
- tier 2: the same audited run inside a network namespace that has only loopback (`unshare -n`), when this
  machine allows it (root).  The whole tier-2 suite runs offline with tests/lean_testlib/socket_audit/run_offline.sh.
"""
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

from lean_testlib import REPO, harness, report, socket_audit, workloads

UNREACHABLE = "192.0.2.1"   # TEST-NET-1 (RFC 5737): a "LAN server" the user configured, never answers


# ------------------------------------------------------------------------------------------ tier 1

def _run_audited(tmp_path, code_dir, script):
    log = tmp_path / "audit.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(socket_audit.DIR), str(code_dir)]),
               LEAN_SOCKET_AUDIT_LOG=str(log), LEAN_SOCKET_AUDIT_CODE=str(code_dir) + os.sep,
               LEAN_SOCKET_AUDIT_REFUSE="1")  # recorded, then refused: no packet to 192.0.2.1 ever leaves
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return socket_audit.read(log)


def test_audit_hook_records_and_flags_repo_connects(tmp_path):
    code = tmp_path / "fake_pack"
    code.mkdir()
    (code / "phone_home.py").write_text(textwrap.dedent(f"""
        import socket
        def call(host, port):
            s = socket.socket()
            s.settimeout(0.3)
            try:
                s.connect((host, port))
            except OSError:
                pass
            finally:
                s.close()
        def resolve(host):
            try:
                socket.getaddrinfo(host, 80)
            except OSError:
                pass
    """))
    with socket_server() as port:
        recs = _run_audited(tmp_path, code, textwrap.dedent(f"""
            import socket, phone_home
            phone_home.call("127.0.0.1", {port})        # repo code, loopback: allowed
            phone_home.call("{UNREACHABLE}", 9)          # repo code, elsewhere: a violation
            phone_home.resolve("{UNREACHABLE}")          # resolving elsewhere: a violation
            s = socket.socket(); s.settimeout(0.3)       # not repo code: recorded, never a violation
            try: s.connect(("{UNREACHABLE}", 9))
            except OSError: pass
        """))
    connects = [r for r in recs if r["event"] == "socket.connect"]
    assert [(r["address"][0], r["lean"]) for r in connects] == [
        ("127.0.0.1", True), (UNREACHABLE, True), (UNREACHABLE, False)], recs
    assert any("phone_home.py" in f for f in connects[1]["lean_frames"])
    bad = socket_audit.violations(recs)
    assert [(r["event"], r["address"][0]) for r in bad] == [("socket.connect", UNREACHABLE),
                                                           ("socket.getaddrinfo", UNREACHABLE)], bad
    assert socket_audit.violations(recs, allowed_hosts={UNREACHABLE}) == []


def test_audit_is_off_by_default(tmp_path):
    """ComfyHost.start without audit_sockets adds nothing to the host's environment."""
    import inspect
    sig = inspect.signature(harness.ComfyHost.start)
    assert sig.parameters["audit_sockets"].default is False


# ------------------------------------------------------------------------------------------ fake server

class _OpenAIHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.endswith("/models"):
            self._json({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self.send_error(404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ("a red fox", ", snow"):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())

    def _json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class socket_server:
    """A fake OpenAI-compatible server on 127.0.0.1 in a thread: `with socket_server() as port:`."""

    def __enter__(self):
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIHandler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self.srv.server_address[1]

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


# ------------------------------------------------------------------------------------------ tier 2

def _llm_available():
    try:
        import llama_cpp  # noqa: F401
        return True
    except ImportError:
        return False


def audited_run(tmp_path_factory, label):
    """Start an audited host, run every Lean node and the openai backend; return (records, ran, host log)."""
    path = harness.require_host()
    base = tmp_path_factory.mktemp(label)
    llm = _llm_available()
    workloads.prepare(base, llm=llm)
    # the user lists the "LAN server" (LEAN_LLM_SERVERS), so the pack may try it; the hook refuses the connect itself
    env = dict(os.environ, LEAN_LLM_SERVERS=f"http://{UNREACHABLE}:9")
    host = harness.ComfyHost.start(path, base, audit_sockets=True, refuse_sockets=True, env=env)
    ran = []
    try:
        nodes = set(host.object_info())
        for i, kind in enumerate(workloads.kinds(nodes, llm=llm)):
            host.run(workloads.prompt(kind, i, nodes), timeout=600)
            ran.append(kind)
        if "LeanLLMLoader" in nodes:
            with socket_server() as port:
                entry = host.run(workloads.llm_prompt(1, backend="openai", base_url=f"http://localhost:{port}/v1"))
                assert entry["outputs"]["v"]["text"][0] == "a red fox, snow", entry["outputs"]
                ran.append("openai-localhost")
            entry = host.run(workloads.llm_prompt(2, backend="openai", base_url=f"http://{UNREACHABLE}:9/v1"),
                             expect_error=True)
            assert UNREACHABLE in host.error_text(entry) and "cannot reach" in host.error_text(entry)
            ran.append("openai-configured-lan")
            entry = host.run(workloads.llm_prompt(3, backend="openai", base_url=f"http://{UNREACHABLE}:10/v1"),
                             expect_error=True)  # not listed (another port): refused before any socket
            assert "not one you listed" in host.error_text(entry), host.error_text(entry)
            ran.append("openai-unlisted-refused")
        records = socket_audit.read(host.socket_audit_log)
        return records, ran, nodes, port_of(records)
    finally:
        host.stop()


def port_of(records):
    return {r["address"][1] for r in records if r["event"] == "socket.connect" and r["lean"]
            and isinstance(r["address"], list) and len(r["address"]) > 1}


def check_records(request, records, ran, nodes, label):
    lean = [r for r in records if r.get("lean")]
    bad = socket_audit.violations(records, allowed_hosts={UNREACHABLE})
    others = sorted({f"{socket_audit.target(r)[0]}" for r in records
                     if not r.get("lean") and not socket_audit.is_local(r)})
    report.result(request.config, f"RESULT offline_{label} workloads={len(ran)} lean_socket_events={len(lean)} "
                                  f"violations={len(bad)}")
    if others:
        report.result(request.config, f"offline_{label}: non-Lean code (the host) reached {others}")
    assert not bad, "Lean code opened sockets elsewhere:\n" + "\n".join(json.dumps(r) for r in bad)
    covered = workloads.lean_nodes_covered([k for k in ran if k in workloads.LEAN_NODES_PER_KIND], nodes)
    missing = {n for n in nodes if n.startswith("Lean")} - covered
    assert not missing, f"the audited run did not exercise {missing}: add them to lean_testlib/workloads.py"
    if "openai-localhost" in ran:   # proves the hook was active inside the host
        assert any(r["event"] == "socket.connect" and r["lean"] and socket_audit.is_local(r) for r in lean), lean
        assert any(socket_audit.target(r)[0] == UNREACHABLE for r in lean), lean
    if "openai-unlisted-refused" in ran:  # the unlisted port was never even looked up
        assert not any(socket_audit.target(r) == (UNREACHABLE, 10) for r in records), records


@pytest.mark.tier2
def test_lean_code_connects_only_to_loopback_or_base_url(tmp_path_factory, request):
    records, ran, nodes, _ = audited_run(tmp_path_factory, "offline_audit")
    check_records(request, records, ran, nodes, "audit")


def netns_usable():
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    r = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True)
    return r.returncode == 0


@pytest.mark.tier2
def test_in_network_namespace_with_only_loopback(request):
    """The audited every-node run again, inside `unshare -n` (only `lo` exists and is up)."""
    if os.environ.get("LEAN_IN_NETNS"):
        pytest.skip("already inside the offline namespace")
    if not netns_usable():
        pytest.skip("unshare -n is not permitted here (needs root or user namespaces)")
    script = REPO / "tests" / "lean_testlib" / "socket_audit" / "run_offline.sh"
    r = subprocess.run([str(script), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_tier2_offline.py::test_lean_code_connects_only_to_loopback_or_base_url",
                        "tests/test_tier2_offline.py::test_audit_hook_records_and_flags_repo_connects"],
                       cwd=REPO, capture_output=True, text=True, timeout=1800)
    out = r.stdout + r.stderr
    assert "OFFLINE NAMESPACE: only loopback" in out, out[-4000:]
    assert r.returncode == 0, out[-6000:]
    assert "2 passed" in out, out[-4000:]
    for line in out.splitlines():
        if line.startswith("RESULT offline_"):
            report.result(request.config, line.replace("offline_audit", "offline_netns"))
