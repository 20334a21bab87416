"""Tier 1: the socket audit's refuse mode (tests/lean_testlib/socket_audit/sitecustomize.py with
LEAN_SOCKET_AUDIT_REFUSE=1, and socket_audit.refuse_non_loopback() in this process): a connect or name lookup to
anything but loopback raises before the socket call runs, so a test naming 192.0.2.1 cannot send a packet even if
the code under test were wrong.  Loopback keeps working."""
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest

from lean_testlib import socket_audit

DOC_IP = "192.0.2.1"
SCRIPT = textwrap.dedent(f"""
    import socket, json
    out = {{}}
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    for name, fn in [
        ("loopback", lambda: socket.create_connection(srv.getsockname(), timeout=2).close()),
        ("localhost", lambda: socket.getaddrinfo("localhost", 80)),
        ("doc_connect", lambda: socket.socket().connect(("{DOC_IP}", 9))),
        ("doc_resolve", lambda: socket.getaddrinfo("{DOC_IP}", 9)),
        ("name_resolve", lambda: socket.getaddrinfo("example.invalid", 80)),
        ("v6_connect", lambda: socket.socket(socket.AF_INET6).connect(("2001:db8::1", 9))),
        ("create_connection", lambda: socket.create_connection(("{DOC_IP}", 9), timeout=2)),
    ]:
        try:
            fn(); out[name] = "ok"
        except OSError as e:
            out[name] = type(e).__name__ + ": " + str(e)
    print(json.dumps(out))
""")


def run(tmp_path):
    log = tmp_path / "audit.jsonl"
    env = dict(os.environ, PYTHONPATH=str(socket_audit.DIR), LEAN_SOCKET_AUDIT_LOG=str(log),
               LEAN_SOCKET_AUDIT_CODE=str(tmp_path) + os.sep, LEAN_SOCKET_AUDIT_REFUSE="1")
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    import json
    return json.loads(r.stdout.strip().splitlines()[-1]), socket_audit.read(log)


def test_refuse_mode_raises_before_any_non_loopback_socket_call(tmp_path):
    out, recs = run(tmp_path)
    assert out["loopback"] == "ok" and out["localhost"] == "ok", out
    for k in ("doc_connect", "doc_resolve", "name_resolve", "v6_connect", "create_connection"):
        assert out[k].startswith("ConnectionRefusedError") and "refused by the Lean socket audit" in out[k], (k, out)
    refused = [r for r in recs if r.get("refused")]
    assert {str(socket_audit.target(r)[0]) for r in refused} >= {DOC_IP, "example.invalid", "2001:db8::1"}, refused
    assert not any(r.get("refused") for r in recs if socket_audit.is_local(r))


def test_in_process_guard_refuses_and_then_lets_go():
    with socket_audit.refuse_non_loopback() as g:
        with pytest.raises(ConnectionRefusedError, match="refused by the Lean socket audit"):
            socket.socket().connect((DOC_IP, 9))
        with pytest.raises(ConnectionRefusedError):
            socket.getaddrinfo("example.invalid", 80)
        socket.getaddrinfo("127.0.0.1", 80)  # loopback: fine
        assert [a[0] if isinstance(a, (list, tuple)) else a for _, a in g.refused] == [DOC_IP, "example.invalid"]
    # outside the block the hook stays installed but inactive: a loopback lookup is not recorded
    n = len(socket_audit._IN_PROCESS["events"])
    socket.getaddrinfo("127.0.0.1", 80)
    assert len(socket_audit._IN_PROCESS["events"]) == n


def test_run_offline_probes_only_the_documentation_address():
    text = (pathlib.Path(socket_audit.DIR) / "run_offline.sh").read_text()
    import re
    addrs = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text))
    assert addrs == {DOC_IP}, addrs
