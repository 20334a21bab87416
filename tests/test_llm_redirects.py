"""Tier 1: the openai backend sends LEAN_LLM_API_KEY only to base_url's origin.  Two real local HTTP servers:
the first answers with a 302 to the second; what each server received is recorded by the servers themselves.
Also: reasoning returned apart (reasoning_content) and cut by max_tokens gets the raise-max_tokens status."""
import http.server
import json
import threading

import pytest

from lean_nodes.core import llm, llm_backends
from lean_testlib.fake_openai import CHUNKS_OK, FakeOpenAI

KEY = "sk-lean-test-0123456789"


def Server(redirect_to=None, chunks=CHUNKS_OK):
    """A local HTTP server that records (method, path, Authorization) of every request; ``redirect_to`` (a
    callable giving a URL) makes it answer every request with a 302 there."""
    return FakeOpenAI(chunks=chunks, redirect_to=redirect_to)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("LEAN_LLM_API_KEY", KEY)
    return KEY


def test_redirect_to_another_server_is_refused_and_the_key_never_arrives(key, monkeypatch):
    second = Server()
    first = Server(redirect_to=lambda path: f"http://127.0.0.1:{second.port}{path}")
    # both servers listed: the key may go to either, and still no request follows a redirect to the other
    monkeypatch.setenv("LEAN_LLM_SERVERS", f"http://127.0.0.1:{first.port},http://127.0.0.1:{second.port}")
    errors = []
    try:
        for connect_check in (False, True):  # the chat request, and the /models check at load time
            try:
                model = llm_backends.OpenAIModel(f"http://127.0.0.1:{first.port}/v1", connect_check=connect_check)
                model.generate([{"role": "user", "content": "a fox"}], max_tokens=4)
                errors.append(None)
            except Exception as e:
                errors.append(e)
        # what the second server itself received decides, whatever the client did
        assert second.seen == [], f"the second server was contacted: {second.seen}"
        assert first.seen and all(auth == f"Bearer {key}" for _, _, auth in first.seen), first.seen
        for e in errors:
            assert type(e).__name__ == "CrossOriginRedirect", repr(e)
            assert f"redirecting to http://127.0.0.1:{second.port}/" in str(e) and "refused" in str(e), str(e)
            assert key not in str(e)
    finally:
        first.close()
        second.close()


def test_same_origin_redirect_is_followed_with_the_key(key, monkeypatch):
    """One server: /old/* answers 302 to /v1/* on itself; that redirect is followed, with the key."""
    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        def _go(self):
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            if self.path.startswith("/old/"):
                self.send_response(302)
                self.send_header("Location", "/v1/" + self.path[len("/old/"):])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps({"data": [{"id": "m"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _go

        def log_message(self, *a):
            pass

    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    monkeypatch.setenv("LEAN_LLM_SERVERS", f"http://127.0.0.1:{s.server_port}")
    try:
        m = llm_backends.OpenAIModel(f"http://127.0.0.1:{s.server_port}/old")
        assert m.model_id == "m"
        assert [p for _, p, _ in seen] == ["/old/models", "/v1/models"]
        assert all(a == f"Bearer {key}" for _, _, a in seen), seen
    finally:
        s.shutdown()
        s.server_close()


def test_origin_compares_scheme_host_and_port():
    o = llm_backends.origin
    assert o("http://127.0.0.1/v1") == o("HTTP://127.0.0.1:80/x")
    assert o("https://h/v1") == ("https", "h", 443)
    assert o("http://h/v1") != o("https://h/v1")
    assert o("http://h:8080/v1") != o("http://h:8081/v1")
    assert o("http://a.example/v1") != o("http://b.example/v1")


def test_reasoning_apart_cut_by_max_tokens_says_raise_max_tokens(cache):
    chunks = [{"choices": [{"delta": {"reasoning_content": "Let me think about foxes "}}]},
              {"choices": [{"delta": {"reasoning_content": "and snow"}, "finish_reason": "length"}]}]
    srv = Server(chunks=chunks)
    try:
        h = llm.load("openai", base_url=f"http://127.0.0.1:{srv.port}/v1", cache=cache)
        r = llm.write_prompt(h, "a fox", seed=1, max_tokens=2)
        assert (r.prompt, r.finish) == ("", "length")
        assert r.thinking == "Let me think about foxes and snow"
        msg = r.message(2)
        assert "Raise max_tokens" in msg and "max_tokens (2) ran out" in msg, msg
        assert "Try another seed" not in msg
    finally:
        srv.close()


@pytest.fixture
def cache():
    c = llm.ModelCache()
    yield c
    c.free()
