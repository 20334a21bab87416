"""Tier 1: the openai backend's stream is bounded whatever the server does (core/llm_backends.py).

A fake OpenAI-compatible server on 127.0.0.1 (threads) misbehaves in one way per test: empty deltas forever,
silence after the headers, silence before them, a line with no end, more content than max_tokens, an endless
body, huge /models and error bodies.  The client must stop at max_tokens deltas, at its byte and line caps and at
its deadline, and must notice Cancel within 1 s even when nothing arrives.  The timing bounds are hang bounds for
pathological servers (generous), not speed claims."""
import http.server
import json
import threading
import time

import pytest

from lean_nodes.core import llm_backends
from lean_nodes.core.llm_backends import OpenAIModel, StreamLimit

MSG = [{"role": "user", "content": "a fox"}]


def sse(obj):
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


EMPTY = sse({"choices": [{"index": 0, "delta": {}}]})
ROLE = sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]})
WORD = sse({"choices": [{"index": 0, "delta": {"content": "a"}}]})
NO_CHOICES = sse({"object": "chat.completion.chunk", "choices": []})


class Fake:
    """mode: what POST /v1/chat/completions does.  ``disconnected`` is set when the client went away."""

    def __init__(self, mode, models_body=None):
        self.mode, self.models_body = mode, models_body
        self.stop = threading.Event()
        self.disconnected = threading.Event()
        self.sent = 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                body = outer.models_body if outer.models_body is not None else json.dumps(
                    {"data": [{"id": "fake"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    outer.serve(self)
                except OSError:
                    outer.disconnected.set()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_port}/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def _start_stream(self, h):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()

    def _send(self, h, data):
        h.wfile.write(data)
        h.wfile.flush()
        self.sent += len(data)

    def serve(self, h):
        m = self.mode
        if m == "silent_before_headers":
            self.stop.wait(60)
            return
        if m == "error_huge":
            body = b"E" * (10 << 20)
            h.send_response(500)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            self._send(h, body)
            return
        self._start_stream(h)
        if m == "silent_after_headers":
            self._send(h, ROLE)
            while not self.stop.wait(0.05):
                pass
            return
        if m == "no_newline":
            while not self.stop.is_set():
                self._send(h, b"x" * 65536)
            return
        if m == "comments_forever":
            line = b": " + b"k" * 8000 + b"\n"
            while not self.stop.is_set():
                self._send(h, line)
            return
        self._send(h, ROLE)
        chunk = {"empty_forever": EMPTY, "words_forever": WORD, "no_choices_forever": NO_CHOICES}[m]
        while not self.stop.is_set():
            self._send(h, chunk)
            if m != "words_forever":
                time.sleep(0.002)

    def close(self):
        self.stop.set()
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def fake():
    made = []

    def make(mode, **kw):
        made.append(Fake(mode, **kw))
        return made[-1]
    yield make
    for f in made:
        f.close()


class Cancel(Exception):
    pass


class CancelAfter:
    """A cancel check that starts raising `after` seconds from now; records when it first raised."""

    def __init__(self, after):
        self.at = time.monotonic() + after
        self.raised_at = None

    def __call__(self):
        now = time.monotonic()
        if now >= self.at:
            if self.raised_at is None:
                self.raised_at = now
            raise Cancel()


def no_stream_threads(timeout=3.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not [t for t in threading.enumerate() if t.name == "lean-llm-stream"]:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["empty_forever", "no_choices_forever"])
def test_empty_deltas_forever_stop_at_max_tokens(fake, mode):
    f = fake(mode)
    m = OpenAIModel(f.url)
    t0 = time.monotonic()
    g = m.generate(MSG, max_tokens=40)
    assert time.monotonic() - t0 < 10
    assert (g.text, g.n_tokens, g.finish) == ("", 0, "length")
    assert f.disconnected.wait(5), "the connection was not closed after the client stopped"
    assert no_stream_threads()


def test_more_content_than_max_tokens_is_cut_at_max_tokens(fake):
    f = fake("words_forever")
    g = OpenAIModel(f.url).generate(MSG, max_tokens=25)
    assert (g.text, g.n_tokens, g.finish) == ("a" * 25, 25, "length")


@pytest.mark.parametrize("mode", ["silent_after_headers", "silent_before_headers", "empty_forever"])
def test_cancel_is_seen_within_a_second_whatever_the_server_sends(fake, mode):
    f = fake(mode)
    m = OpenAIModel(f.url, connect_check=False)
    cancel = CancelAfter(0.6)
    with pytest.raises(Cancel):
        m.generate(MSG, max_tokens=32768, check_cancel=cancel)
    done = time.monotonic()
    assert cancel.raised_at is not None and done - cancel.at < 1.0, (done - cancel.at)
    assert no_stream_threads(), "the stream's worker thread outlived the cancel"


def test_deadline_stops_a_silent_server(fake):
    f = fake("silent_after_headers")
    m = OpenAIModel(f.url, connect_check=False, timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(StreamLimit, match=r"did not finish within 1.5 s"):
        m.generate(MSG, max_tokens=100)
    assert time.monotonic() - t0 < 4


def test_a_line_without_end_is_capped(fake):
    f = fake("no_newline")
    with pytest.raises(StreamLimit, match="line longer than"):
        OpenAIModel(f.url, connect_check=False).generate(MSG, max_tokens=10)


def test_an_endless_body_is_capped(fake, monkeypatch):
    monkeypatch.setattr(llm_backends, "MAX_STREAM_BYTES", 2 << 20)
    f = fake("comments_forever")
    with pytest.raises(StreamLimit, match="more than 2097152 bytes"):
        OpenAIModel(f.url, connect_check=False).generate(MSG, max_tokens=10)


def test_models_and_error_bodies_are_read_bounded(fake, monkeypatch):
    monkeypatch.setattr(llm_backends, "MAX_BODY_BYTES", 1 << 20)
    f = fake("error_huge", models_body=b'{"data": [' + b" " * (3 << 20) + b"]}")
    with pytest.raises(StreamLimit, match="/models answer .* larger than 1048576 bytes"):
        OpenAIModel(f.url)
    m = OpenAIModel(f.url, connect_check=False)
    with pytest.raises(RuntimeError, match="answered 500") as e:
        m.generate(MSG, max_tokens=5)
    assert len(str(e.value)) < llm_backends.MAX_ERROR_BYTES + 500


@pytest.mark.parametrize("name, value", [("max_tokens", 0), ("max_tokens", 10 ** 9), ("max_tokens", "5"),
                                         ("max_tokens", 2.5), ("max_tokens", True), ("seed", -1),
                                         ("seed", 2 ** 64), ("max_tokens", float("inf")), ("max_tokens", float("nan"))])
def test_linked_numbers_are_checked_again_in_core(name, value):
    """ComfyUI applies min/max to widgets only: a value that comes through a link reaches core unchecked."""
    m = OpenAIModel("http://127.0.0.1:9/v1", connect_check=False)
    kw = {"max_tokens": 4, "seed": 0, name: value}
    with pytest.raises(ValueError, match=name):
        m.generate(MSG, **kw)


@pytest.mark.parametrize("kw", [{"n_ctx": 10 ** 9}, {"n_ctx": 0}, {"threads": -5}, {"threads": 10 ** 6},
                                {"n_gpu_layers": -2}, {"n_gpu_layers": "all"}])
def test_loader_numbers_are_checked_again_in_core(kw, tmp_path):
    from lean_nodes.core import llm
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=next(iter(kw))):
        llm.load("llama_cpp", path=str(f), **kw)


@pytest.mark.parametrize("kw", [{"temperature": float("nan")}, {"temperature": -1.0}, {"top_p": 7.0},
                                {"max_tokens": 40000}, {"seed": -3}])
def test_writer_numbers_are_checked_before_any_request(kw):
    from lean_nodes.core import llm

    class Boom:
        def model(self):
            raise AssertionError("the model was used despite a bad number")

        def free(self):
            pass

    with pytest.raises(ValueError, match=f"LLM Prompt Writer: {next(iter(kw))}"):
        llm.write_prompt(Boom(), "a fox", **kw)
