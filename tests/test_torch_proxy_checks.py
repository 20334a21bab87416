"""Tier 1: the doctor's torch-version warning (core/doctor.py) and scripts/lean.py's proxy-less loopback requests."""
import http.server
import importlib.util
import json
import threading
import urllib.request

import pytest

from lean_nodes.core import doctor
from lean_testlib import REPO


@pytest.mark.parametrize("version, words", [
    ("2.5.1+cu121", ("older than 2.10", "can be bypassed on torch <= 2.5.1", "CVE-2025-32434", "not memory-safe")),
    ("1.13.0", ("can be bypassed",)),
    ("2.6.0", ("older than 2.10", "not memory-safe")),
    ("2.9.1+cpu", ("older than 2.10", "not memory-safe")),
])
def test_old_torch_is_warned_with_the_reason(version, words):
    w = doctor.torch_warning(version)
    for word in words:
        assert word in w, w
    if not version.startswith(("2.5", "1.")):
        assert "bypassed" not in w
    rec = doctor.recommend({"software": {"torch": version}})
    assert w in rec["notes"]


@pytest.mark.parametrize("version", ["2.10.0", "2.10.0.dev20251201", "2.13.0+cu128", "3.0", None, "", "weird"])
def test_current_or_unknown_torch_is_not_warned(version):
    assert doctor.torch_warning(version) == ""
    assert not any("torch" in n for n in doctor.recommend({"software": {"torch": version}})["notes"])


def _lean_script():
    spec = importlib.util.spec_from_file_location("lean_script_under_test", REPO / "scripts" / "lean.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Recorder(http.server.BaseHTTPRequestHandler):
    def _go(self):
        self.server.seen.append((self.command, self.path))
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _go

    def log_message(self, *a):
        pass


def _server():
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    s.seen = []
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s


def test_lean_script_ignores_http_proxy_for_its_loopback_requests(monkeypatch):
    host, proxy = _server(), _server()
    try:
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.server_port}")
        for var in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(urllib.request, "_opener", None)  # the default opener is built from the environment
        lean = _lean_script()
        url = f"http://127.0.0.1:{host.server_port}"
        assert lean._get(url + "/system_stats") == {"ok": True}
        assert lean._post(url + "/prompt", {"prompt": {}}) == (200, {"ok": True})
        assert proxy.seen == [], f"requests went through HTTP_PROXY: {proxy.seen}"
        assert host.seen == [("GET", "/system_stats"), ("POST", "/prompt")]
    finally:
        host.shutdown()
        proxy.shutdown()
