"""A fake OpenAI-compatible server on 127.0.0.1 (a thread of the test process) that records what it received.

    with FakeOpenAI() as a:                       # a.url == "http://127.0.0.1:<port>", a.base_url == a.url + "/v1"
        ...
    a.seen                                        # [(method, path, Authorization header or None), ...]
    a.bodies                                      # the JSON bodies of the POSTs, in order

Options: ``chunks`` (the streamed deltas of POST /v1/chat/completions), ``status`` (answer POSTs with this code
instead), ``redirect_to`` (a callable path -> URL: answer every request with a 302 there), ``empty_forever`` (after
the role chunk, an empty delta every ``interval`` seconds until the client goes away or the server closes),
``refuse_images`` (answer 400 to a request with an image_url part, as a text-only model's server does).
What the server itself recorded decides a test, whatever the client claims.
"""
import http.server
import json
import threading
import time

CHUNKS_OK = [{"choices": [{"delta": {"content": "red fox"}}]}, {"choices": [{"delta": {}, "finish_reason": "stop"}]}]


class FakeOpenAI:
    def __init__(self, chunks=CHUNKS_OK, status=200, redirect_to=None, empty_forever=False, interval=0.01,
                 refuse_images=False):
        self.seen = []
        self.bodies = []
        self.refuse_images = refuse_images
        self.chunks, self.status, self.redirect_to = chunks, status, redirect_to
        self.empty_forever, self.interval = empty_forever, interval
        self.stop = threading.Event()
        self.streams_ended = 0  # endless streams that ended because the client went away
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def _record(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
                if self.command == "POST":
                    try:
                        outer.bodies.append(json.loads(data))
                    except ValueError:
                        outer.bodies.append(None)
                outer.seen.append((self.command, self.path, self.headers.get("Authorization")))

            def _redirect(self):
                self.send_response(302)
                self.send_header("Location", outer.redirect_to(self.path))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                self._record()
                if outer.redirect_to:
                    return self._redirect()
                body = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self._record()
                if outer.redirect_to:
                    return self._redirect()
                has_image = outer.refuse_images and '"image_url"' in json.dumps(outer.bodies[-1])
                if outer.status != 200 or has_image:
                    body = (b'{"error": {"code": 400, "message": "image input is not supported by this model"}}'
                            if has_image else b'{"error": "unauthorized: no API key"}')
                    self.send_response(400 if has_image else outer.status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if outer.empty_forever:
                    try:
                        self.wfile.write(b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n')
                        while not outer.stop.is_set():
                            self.wfile.write(b'data: {"choices": [{"index": 0, "delta": {}}]}\n\n')
                            self.wfile.flush()
                            time.sleep(outer.interval)
                    except OSError:
                        outer.streams_ended += 1
                    return
                for c in outer.chunks:
                    self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.srv.shutdown()
        self.srv.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
