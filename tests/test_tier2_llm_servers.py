"""Tier 2 (issue 21): through a real ComfyUI, a workflow's base_url cannot send LEAN_LLM_API_KEY, or any request,
anywhere the user did not name; and a server streaming empty deltas forever cannot pin the queue.

One host per module, started with LEAN_LLM_API_KEY set and LEAN_LLM_SERVERS naming fake server A (loopback), with
the socket audit recording every connect/getaddrinfo and refusing any that is not loopback (LEAN_SOCKET_AUDIT_REFUSE).
What the fake servers (threads of this test process) received decides, whatever the pack reports:
- base_url A (listed): A gets the key;
- base_url B (another loopback origin, not listed): B gets requests without the key, and the node's status says why;
- a server listed through the host's Settings (POST /settings/Lean.LLM.Servers, as the Settings dialog does) gets it;
- base_url http://192.0.2.1:9 (not listed): refused with no socket opened, proven by the audit log; this one runs
  only inside the loopback-only namespace (LEAN_IN_NETNS=1 from run_offline.sh); outside it the test re-runs
  itself through run_offline.sh, and fails (never skips silently) where no namespace can be made under CI=true;
- a server sending empty deltas forever: POST /interrupt ends the prompt within 2 s and the next prompt runs.
The openai backend needs no llama_cpp, no model file: the loader's model list is the empty-folder entry.
"""
import os
import subprocess
import sys
import time

import pytest

from lean_testlib import REPO, graphs, harness, prereq, socket_audit, strict
from lean_testlib.fake_openai import FakeOpenAI

pytestmark = pytest.mark.tier2

KEY = "sk-lean-tier2-servers-0123456789"
DOC_IP = "192.0.2.1"
NO_MODEL = "(no .gguf in models/llm)"
SETTING = "Lean.LLM.Servers"


@pytest.fixture(scope="module")
def server_a():
    with FakeOpenAI() as a:
        yield a


@pytest.fixture(scope="module")
def host(tmp_path_factory, server_a):
    path, why = harness.find_host()
    if not path:
        pytest.skip(prereq(f"tier 2 skipped: no ComfyUI host found ({why})"))
    base = tmp_path_factory.mktemp("llm_servers")
    env = dict(os.environ, LEAN_LLM_API_KEY=KEY, LEAN_LLM_SERVERS=server_a.url)
    h = harness.ComfyHost.start(path, base, env=env, audit_sockets=True, refuse_sockets=True)
    yield h
    h.stop()


def graph(base_url, seed, max_tokens=8):
    return graphs.llm_preview(loader=graphs.llm_loader(model=NO_MODEL, backend="openai", base_url=base_url),
                              idea="a red fox", seed=seed, max_tokens=max_tokens)


def status_of(entry):
    return entry["outputs"]["p"]["lean_llm"][0]["status"]


def test_listed_server_gets_the_key(host, server_a):
    n = len(server_a.seen)
    entry = host.run(graph(server_a.base_url, seed=1))
    got = server_a.seen[n:]
    assert [p for _, p, _ in got] == ["/v1/models", "/v1/chat/completions"], got
    assert all(auth == f"Bearer {KEY}" for _, _, auth in got), got
    assert entry["outputs"]["v"]["text"][0] == "red fox"
    assert "Note:" not in status_of(entry)


def test_unlisted_loopback_server_gets_no_key_and_the_node_says_why(host):
    with FakeOpenAI() as b:
        entry = host.run(graph(b.base_url, seed=2))
        assert b.seen and all(auth is None for _, _, auth in b.seen), b.seen
    assert entry["outputs"]["v"]["text"][0] == "red fox"
    status = status_of(entry)
    assert f"LEAN_LLM_API_KEY was not sent to http://127.0.0.1:{b.port}" in status, status
    assert "LEAN_LLM_SERVERS" in status and "Settings > Lean > LLM servers" in status, status
    assert f"LEAN_LLM_API_KEY was not sent to http://127.0.0.1:{b.port}" in host.log()  # and the log says so


def test_server_listed_in_the_settings_dialog_gets_the_key(host):
    with FakeOpenAI() as c:
        status, _ = host.request(f"/settings/{SETTING}", c.url, method="POST")
        assert status == 200
        try:
            host.run(graph(c.base_url, seed=3))
            assert c.seen and all(auth == f"Bearer {KEY}" for _, _, auth in c.seen), c.seen
        finally:
            host.request(f"/settings/{SETTING}", "", method="POST")
        # the setting cleared: the same workflow loads again (the loader's IS_CHANGED follows the list) without key
        n = len(c.seen)
        entry = host.run(graph(c.base_url, seed=4))
        assert c.seen[n:] and all(auth is None for _, _, auth in c.seen[n:]), c.seen[n:]
        assert "was not sent" in status_of(entry)


def test_cancel_stops_a_stream_of_empty_deltas_within_2s_and_the_next_prompt_runs(host, server_a):
    with FakeOpenAI(empty_forever=True, interval=0.01) as e:
        pid = host.submit(graph(e.base_url, seed=5, max_tokens=32768))
        t0 = time.monotonic()
        while not any(p.endswith("/chat/completions") for _, p, _ in e.seen):
            assert time.monotonic() - t0 < 60, "the stream never started:\n" + host.log_tail(40)
            time.sleep(0.05)
        time.sleep(0.5)  # deltas are flowing
        sent = time.monotonic()
        host.interrupt()
        while True:
            h = host.get(f"/history/{pid}")
            if pid in h and (h[pid]["status"].get("completed") is not None):
                break
            assert time.monotonic() - sent < 10, "Cancel did not stop the prompt:\n" + host.log_tail(40)
            time.sleep(0.05)
        took = time.monotonic() - sent
        kinds = [k for k, _ in h[pid]["status"]["messages"]]
        assert "execution_interrupted" in kinds, kinds
        assert took < 2.0, f"Cancel took {took:.2f} s"
        t1 = time.monotonic()
        while e.streams_ended < 1:  # the pack closed the connection: the fake server's write failed
            assert time.monotonic() - t1 < 5, "the connection stayed open after Cancel"
            time.sleep(0.05)
    entry = host.run(graph(server_a.base_url, seed=6))
    assert entry["outputs"]["v"]["text"][0] == "red fox"


def _run_self_offline(test_id):
    script = REPO / "tests" / "lean_testlib" / "socket_audit" / "run_offline.sh"
    r = subprocess.run([str(script), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_id],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    return r.returncode, r.stdout + r.stderr


def test_unlisted_remote_origin_is_refused_with_no_socket_opened(request):
    if os.environ.get("LEAN_IN_NETNS") != "1":
        # outside the loopback-only namespace: run this very test again inside one
        rc, out = _run_self_offline(f"tests/test_tier2_llm_servers.py::{request.node.name}")
        if rc == 3 and out.startswith("OFFLINE NAMESPACE UNAVAILABLE"):
            msg = "no loopback-only network namespace can be made here (unshare -n), so the 192.0.2.1 test cannot run"
            if strict():
                pytest.fail("CI=true: " + msg)
            pytest.skip(prereq(msg))
        assert "OFFLINE NAMESPACE: only loopback" in out, out[-4000:]
        assert rc == 0 and "1 passed" in out, out[-6000:]
        return
    host, server_a = request.getfixturevalue("host"), request.getfixturevalue("server_a")
    host.run(graph(server_a.base_url, seed=8))  # a loopback request first: proves the audit hook records
    entry = host.run(graph(f"http://{DOC_IP}:9/v1", seed=7), expect_error=True)
    msg = host.error_text(entry)
    assert "LeanLLMLoader" in msg and f"http://{DOC_IP}:9" in msg and "not one you listed" in msg, msg
    assert "LEAN_LLM_SERVERS" in msg and "Settings > Lean > LLM servers" in msg, msg
    recs = socket_audit.read(host.socket_audit_log)
    assert any(r.get("lean") and r["event"] == "socket.connect" and socket_audit.target(r) == ("127.0.0.1",
               server_a.port) for r in recs), "the audit did not record the loopback request: is the hook active?"
    touched = [r for r in recs if DOC_IP in str(r.get("address"))]
    assert touched == [], touched  # no connect and no name lookup
    assert host.alive()
