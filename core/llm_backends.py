"""Text generation backends: llama.cpp in-process (``llama_cpp``) and any OpenAI-compatible HTTP server.

Both stream: ``generate(messages, ..., on_text=callback)`` calls ``on_text(piece, n_tokens)`` after every
token; the callback may raise to stop generation (ComfyUI's cancel).  Pure logic: no comfy imports.
``llama_cpp`` is imported only when a local model is loaded; the HTTP backend uses the standard library.
"""
import codecs
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from . import llm_gguf, llm_servers
from .llm_text import opens_think, render_chat

INSTALL_HINT = (
    "llama-cpp-python is not installed, so backend 'llama_cpp' cannot run. Install it into the Python that "
    "runs ComfyUI, then restart ComfyUI:\n"
    "    CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" python -m pip install llama-cpp-python\n"
    "(it builds from source, about 12 minutes on Linux; GGML_NATIVE=OFF avoids a build that crashes on the "
    "first token on CPUs that advertise AMX; for an NVIDIA GPU use CMAKE_ARGS=\"-DGGML_NATIVE=OFF "
    "-DGGML_CUDA=on\"). Or choose backend 'openai' and point base_url at a running llama.cpp server, "
    "LM Studio, vLLM or Ollama (http://127.0.0.1:11434/v1).")

# GGUF architectures of diffusion models / encoders (ComfyUI-GGUF, stable-diffusion.cpp, llama.cpp mtmd):
# a common mix-up when all .gguf files share a folder.
NOT_TEXT_ARCHS = {"flux", "sd1", "sd3", "sdxl", "aura", "hidream", "hyvid", "ltxv", "wan", "lumina2", "cosmos",
                  "chroma", "qwen_image", "t5", "t5encoder", "clip"}

# Sampling settings shared by the node and the benchmark's raw llama_cpp path (llama_cpp's own defaults).
TOP_K = 40
MIN_P = 0.05
REPEAT_PENALTY = 1.0


# What the nodes declare as min/max.  ComfyUI applies them to widget values only, not to values that arrive through a
# link, so core checks them again (check_int / check_float) before using them.
LIMITS = {"max_tokens": (1, 32768), "n_ctx": (256, 131072), "n_gpu_layers": (-1, 1000), "threads": (0, 512),
          "seed": (0, 0xFFFFFFFFFFFFFFFF)}
FLOAT_LIMITS = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}


def check_int(name, value, lo=None, hi=None):
    """``value`` as an int within [lo, hi] (default: LIMITS[name]), else ValueError naming the input."""
    if lo is None:
        lo, hi = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {str(value)[:60]!r} "
                         f"({type(value).__name__}): check what is linked into {name}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be from {lo} to {hi}, got {str(v)[:60]}: check what is linked into {name}")
    return v


def check_float(name, value):
    lo, hi = FLOAT_LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= float(value) <= hi:
        raise ValueError(f"{name} must be a number from {lo} to {hi}, got {str(value)[:60]!r}: check what is "
                         f"linked into {name}")
    return float(value)


def seed32(seed):
    """ComfyUI seeds are 64-bit; llama.cpp takes 32 bits and treats 0xFFFFFFFF as 'random'."""
    return check_int("seed", seed) % 0xFFFFFFFF


class Generation:
    """text: raw generated text (reasoning included); reasoning: reasoning the server returned apart;
    opened_think: the prompt itself opened <think>; finish: 'stop' | 'length' (max_tokens) | 'context' (n_ctx full)."""
    __slots__ = ("text", "reasoning", "n_tokens", "finish", "opened_think", "prompt_tokens")

    def __init__(self, text, n_tokens, finish, opened_think=False, reasoning="", prompt_tokens=0):
        self.text, self.n_tokens, self.finish = text, n_tokens, finish
        self.opened_think, self.reasoning, self.prompt_tokens = opened_think, reasoning, prompt_tokens


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise ImportError(INSTALL_HINT + f"\n(import failed: {e})") from None
    return llama_cpp


class LlamaCppModel:
    """A GGUF model loaded in this process.  `close()` frees it (RAM and VRAM)."""
    heavy = True
    backend = "llama_cpp"

    def __init__(self, path, n_ctx=4096, n_gpu_layers=-1, threads=0):
        path = os.fspath(path)
        name = os.path.basename(path)
        meta = llm_gguf.read_metadata(path, keys={"general.architecture", "general.name",
                                                  "tokenizer.chat_template", "tokenizer.ggml.add_bos_token"})
        self.arch = llm_gguf.architecture(meta)
        if not self.arch:
            raise llm_gguf.GGUFError(f"'{name}' has no general.architecture: it is not a language model GGUF")
        if self.arch in NOT_TEXT_ARCHS:
            raise llm_gguf.GGUFError(
                f"'{name}' is a GGUF image/video model or encoder (architecture '{self.arch}'), not a language "
                f"model: load it with a GGUF UNet/CLIP loader node, and put a text model (e.g. "
                f"Qwen2.5-1.5B-Instruct-Q4_K_M.gguf) in models/llm")
        n_ctx, n_gpu_layers = check_int("n_ctx", n_ctx), check_int("n_gpu_layers", n_gpu_layers)
        threads = check_int("threads", threads)
        llama_cpp = import_llama_cpp()
        self.path, self.name = path, name
        kw = dict(model_path=path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, verbose=False)
        if threads > 0:
            kw.update(n_threads=threads, n_threads_batch=threads)
        try:
            self.llm = llama_cpp.Llama(**kw)
        except Exception as e:
            raise ValueError(
                f"llama.cpp could not load '{name}' (architecture '{self.arch}', n_ctx {n_ctx}): {e}. Either this "
                f"llama-cpp-python ({getattr(llama_cpp, '__version__', '?')}) does not support that architecture "
                f"(update it: CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" python -m pip install -U llama-cpp-python), the "
                f"file is incomplete (compare its size with the download page), or n_ctx is more than memory "
                f"allows (lower n_ctx).") from None
        self._llama_cpp = llama_cpp
        md = getattr(self.llm, "metadata", {}) or {}
        self.chat_template = md.get("tokenizer.chat_template") or meta.get("tokenizer.chat_template") or ""
        self.n_ctx = self.llm.n_ctx()
        self.add_bos = str(md.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"

    def _token_text(self, tok):
        try:
            return self.llm.detokenize([tok], special=True).decode("utf-8", errors="replace")
        except Exception:
            return ""

    def render(self, messages):
        llm = self.llm
        bos = self._token_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        eos = self._token_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        return render_chat(self.chat_template, messages, bos_token=bos, eos_token=eos)

    def prompt_tokens(self, prompt_text):
        text = prompt_text
        if self.add_bos:  # the template usually writes BOS itself; never add it twice
            bos = self._token_text(self.llm.token_bos())
            if bos and text.startswith(bos):
                text = text[len(bos):]
        return self.llm.tokenize(text.encode("utf-8"), add_bos=self.add_bos, special=True)

    def generate(self, messages, *, seed=0, max_tokens=256, temperature=0.7, top_p=0.9, on_text=None,
                 check_cancel=None):
        llm, llama_cpp = self.llm, self._llama_cpp
        max_tokens = check_int("max_tokens", max_tokens)
        if llm is None:
            raise RuntimeError(f"model '{self.name}' was freed; load it again")
        prompt = self.render(messages)
        opened = opens_think(prompt)
        tokens = self.prompt_tokens(prompt)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise ValueError(f"the prompt is {len(tokens)} tokens but n_ctx is {self.n_ctx}: raise n_ctx in "
                             f"Local LLM Loader or shorten the idea/system prompt")
        budget = min(max_tokens, room)
        llm.reset()  # full prompt evaluation every run: same seed + inputs -> same text
        llm.set_seed(seed32(seed))
        vocab = llm._model.vocab
        is_eog = llama_cpp.llama_vocab_is_eog
        detok = llm.detokenize
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")  # as llama_cpp does
        parts = []
        n = 0
        finish = "length"
        if budget > 0:
            for tok in llm.generate(tokens, top_k=TOP_K, top_p=float(top_p), min_p=MIN_P, temp=float(temperature),
                                    repeat_penalty=REPEAT_PENALTY):
                if is_eog(vocab, tok):
                    finish = "stop"
                    break
                if check_cancel is not None:
                    check_cancel()
                n += 1
                piece = decoder.decode(detok([tok]))
                parts.append(piece)
                if on_text is not None:
                    on_text(piece, n)
                if n >= budget:
                    if budget < max_tokens:
                        finish = "context"
                    break
        tail = decoder.decode(b"", final=True)
        if tail:
            parts.append(tail)
            if on_text is not None:
                on_text(tail, n)
        return Generation("".join(parts), n, finish, opened_think=opened, prompt_tokens=len(tokens))

    def close(self):
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()

    def __repr__(self):
        return f"<LlamaCppModel {self.name} n_ctx={getattr(self, 'n_ctx', '?')}>"


# --------------------------------------------------------------------------- OpenAI-compatible HTTP

# Bounds on what a server may make this process do (a workflow chooses base_url; a server may be hostile or broken).
STREAM_DEADLINE_S = 600.0       # one generation, start to end
CONNECT_TIMEOUT_S = 10.0
POLL_S = 0.25                   # Cancel is checked at least this often while waiting on the server
MAX_LINE_BYTES = 1 << 20        # one server-sent-event line
MAX_STREAM_BYTES = 32 << 20     # one whole streamed answer
MAX_BODY_BYTES = 4 << 20        # a non-streamed body (/models)
MAX_ERROR_BYTES = 2000          # what an error body may add to a message
EXTRA_DELTAS = 8                # deltas beyond max_tokens a server may send (role, finish, usage chunks)


def normalize_base_url(base_url):
    """``scheme://host:port/path`` as connected to (``/v1`` added to an empty path).  Raises ValueError
    (llm_servers.ServerPolicyError) for a control character, a non-http(s) URL, ``user:pass@``, a query or a
    fragment; which servers may be contacted at all is ``llm_servers.check``."""
    return llm_servers.canonical_url(base_url)


def origin(url):
    """(scheme, host, port) of an http(s) URL, the port made explicit: what "the same server" means."""
    parts = urllib.parse.urlsplit(url)
    scheme = (parts.scheme or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class CrossOriginRedirect(RuntimeError):
    """The server redirected a request to another origin; nothing was sent there."""


class StreamLimit(RuntimeError):
    """The server's answer went past a bound (deadline, bytes, line length); the connection was closed."""


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the origin of base_url (with its headers, the API key included); a
    redirect anywhere else is refused before any connection to it, so the key never leaves base_url's origin."""

    def __init__(self, base_url):
        super().__init__()
        self.base_url = base_url
        self.origin = origin(base_url)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urljoin(req.full_url, newurl)
        if origin(target) != self.origin:
            raise cross_origin_redirect(self.base_url, code, target)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def cross_origin_redirect(base_url, code, target):
    return CrossOriginRedirect(
        f"the server at {base_url} answered {code} redirecting to {target}, another server: refused "
        f"(Lean only sends requests, and LEAN_LLM_API_KEY, to base_url's own scheme, host and port). If "
        f"that address is really the server, put it in base_url")


def read_bounded(fp, limit, what):
    """At most ``limit`` bytes of ``fp``; StreamLimit if there are more."""
    data = fp.read(limit + 1)
    if len(data) > limit:
        raise StreamLimit(f"{what} is larger than {limit} bytes: refused")
    return data


class OpenAIModel:
    """A model served by an OpenAI-compatible server (llama.cpp server, LM Studio, vLLM, Ollama /v1).

    Only ever opens a socket to the origin of `base_url`, and only when that origin is loopback or one of the
    user's servers (``llm_servers``: LEAN_LLM_SERVERS / the Settings entry, passed in as ``servers``); the API key
    goes only to a listed origin.  System proxies are ignored, redirects elsewhere refused, every read bounded."""
    heavy = False
    backend = "openai"

    def __init__(self, base_url, model_id="", timeout=STREAM_DEADLINE_S, connect_check=True, servers=None):
        key = os.environ.get(llm_servers.ENV_KEY, "")
        self.policy = llm_servers.check(base_url, servers, key_set=bool(key))  # raises before any connection
        self.base_url = self.policy.url
        self.notice = self.policy.notice
        self.model_id = (model_id or "").strip()
        self.timeout = float(timeout)
        self.name = self.model_id or self.base_url
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                   _SameOriginRedirects(self.base_url))
        self._headers = {"Content-Type": "application/json"}
        if key and self.policy.send_key:
            self._headers["Authorization"] = f"Bearer {key}"
        if connect_check:
            self.check()

    def _http_error(self, code, path, body):
        detail = body.decode("utf-8", errors="replace").strip()
        msg = f"the server at {self.base_url} answered {code} to {path}: {detail}"
        if code in (401, 403) and self.notice:
            msg += f". {self.notice}"
        return RuntimeError(msg)

    def _unreachable(self, reason):
        return ConnectionError(
            f"cannot reach the OpenAI-compatible server at {self.base_url} ({reason}): start it (llama.cpp: "
            f"`llama-server -m model.gguf --port 8080`; LM Studio: start its server; Ollama: `ollama serve`) "
            f"or fix base_url")

    def _request(self, path, body=None, timeout=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, headers=self._headers,
                                     method="POST" if data is not None else "GET")
        try:
            return self._opener.open(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raise self._http_error(e.code, path, e.read(MAX_ERROR_BYTES)) from None
        except (urllib.error.URLError, OSError) as e:
            raise self._unreachable(getattr(e, "reason", e)) from None

    def list_models(self):
        with self._request("/models", timeout=10) as r:
            raw = read_bounded(r, MAX_BODY_BYTES, f"the /models answer of {self.base_url}")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise RuntimeError(f"the server at {self.base_url} answered /models with something that is not JSON") \
                from None
        items = data.get("data", []) if isinstance(data, dict) else []
        return [m.get("id") for m in items if isinstance(m, dict) and isinstance(m.get("id"), str) and m.get("id")]

    def check(self):
        try:
            ids = self.list_models()
        except (CrossOriginRedirect, StreamLimit):
            raise
        except RuntimeError:  # a server without /models still serves chat
            return
        if not self.model_id:
            if ids:
                self.model_id = ids[0]
                self.name = self.model_id
        elif ids and self.model_id not in ids:
            raise ValueError(f"model_id {self.model_id!r} is not served at {self.base_url}; it serves: "
                             f"{', '.join(ids[:50])}")

    # ---------------------------------------------------------------- the bounded stream
    def _connection(self, timeout):
        import http.client
        scheme, host, port = self.policy.origin
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        return cls(host, port, timeout=timeout)

    def _stream_lines(self, path, body, deadline, check_cancel, max_bytes=None):
        """Yield the lines of a streamed POST.  The request runs in a worker thread; this generator waits on it
        at most POLL_S at a time, calling ``check_cancel()`` between waits, so Cancel works while the server sends
        nothing at all.  Past ``deadline`` (time.monotonic()), ``max_bytes`` or MAX_LINE_BYTES in one line:
        StreamLimit.  Leaving the generator (an exception, Cancel, a break) closes the connection."""
        import queue
        import threading
        import time
        max_bytes = MAX_STREAM_BYTES if max_bytes is None else max_bytes
        q = queue.Queue(maxsize=64)
        stop = threading.Event()
        box = {}
        url_path = urllib.parse.urlsplit(self.base_url).path + path
        data = json.dumps(body).encode()

        def put(item):
            while not stop.is_set():
                try:
                    q.put(item, timeout=POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def worker():
            conn = None
            try:
                conn = self._connection(timeout=min(CONNECT_TIMEOUT_S, max(0.1, deadline - time.monotonic())))
                box["conn"] = conn
                conn.connect()
                box["sock"] = conn.sock  # kept: http.client drops conn.sock once a 'close' response arrives
                if stop.is_set():
                    return
                conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
                conn.request("POST", url_path, body=data, headers=self._headers)
                resp = conn.getresponse()
                box["answered"] = True
                if resp.status != 200:
                    if 300 <= resp.status < 400:
                        target = urllib.parse.urljoin(self.base_url + path, str(resp.getheader("Location", ""))[:500])
                        err = (cross_origin_redirect(self.base_url, resp.status, target)
                               if origin(target) != self.policy.origin else RuntimeError(
                                   f"the server at {self.base_url} answered {resp.status} redirecting {path} to "
                                   f"{target}: not followed for a streamed request; put that address in base_url"))
                    else:
                        err = self._http_error(resp.status, path, resp.read(MAX_ERROR_BYTES))
                    put(("exc", err))
                    return
                total = 0
                while not stop.is_set():
                    line = resp.readline(MAX_LINE_BYTES + 1)
                    if not line:
                        put(("eof", None))
                        return
                    total += len(line)
                    if len(line) > MAX_LINE_BYTES:
                        put(("exc", StreamLimit(f"the server at {self.base_url} sent a line longer than "
                                                f"{MAX_LINE_BYTES} bytes: stopped")))
                        return
                    if total > max_bytes:
                        put(("exc", StreamLimit(f"the server at {self.base_url} sent more than {max_bytes} bytes "
                                                f"for one answer: stopped")))
                        return
                    if not put(("line", line)):
                        return
            except BaseException as e:  # noqa: B902 -- handed to the waiting thread
                if not stop.is_set():
                    if isinstance(e, (OSError, ConnectionError)) and not isinstance(e, StreamLimit):
                        if time.monotonic() >= deadline:
                            e = StreamLimit(f"the server at {self.base_url} did not finish within "
                                            f"{self.timeout:g} s: stopped")
                        elif box.get("answered"):
                            e = RuntimeError(f"the connection to {self.base_url} broke: {e}")
                        else:
                            e = self._unreachable(e)
                    put(("exc", e))
            finally:
                if conn is not None:
                    conn.close()

        t = threading.Thread(target=worker, name="lean-llm-stream", daemon=True)
        t.start()
        try:
            while True:
                if check_cancel is not None:
                    check_cancel()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamLimit(f"the server at {self.base_url} did not finish within {self.timeout:g} s: "
                                      f"stopped")
                try:
                    kind, value = q.get(timeout=min(POLL_S, left))
                except queue.Empty:
                    continue
                if kind == "line":
                    yield value
                elif kind == "eof":
                    return
                else:
                    raise value
        finally:
            stop.set()
            sock = box.get("sock")
            if sock is not None:
                import socket
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the worker's blocking read
                except OSError:
                    pass
            t.join(1.0)

    def generate(self, messages, *, seed=0, max_tokens=256, temperature=0.7, top_p=0.9, on_text=None,
                 check_cancel=None):
        import time
        max_tokens = check_int("max_tokens", max_tokens)
        body = {"messages": messages, "stream": True, "seed": seed32(seed), "max_tokens": max_tokens,
                "temperature": float(temperature), "top_p": float(top_p)}
        if self.model_id:
            body["model"] = self.model_id
        parts, reasoning = [], []
        n = 0
        deltas = 0
        finish = "length"
        deadline = time.monotonic() + self.timeout
        lines = self._stream_lines("/chat/completions", body, deadline, check_cancel)
        try:
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    chunk = None
                if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list) or not chunk["choices"]:
                    deltas += 1  # an event without a delta counts as an empty one
                    if deltas >= max_tokens + EXTRA_DELTAS:
                        break
                    if not isinstance(chunk, dict):
                        continue
                if chunk.get("error"):
                    raise RuntimeError(f"the server at {self.base_url} reported: {str(chunk['error'])[:500]}")
                choices = chunk.get("choices")
                for choice in choices if isinstance(choices, list) else []:
                    if not isinstance(choice, dict):
                        continue
                    deltas += 1  # every delta counts, whatever it carries
                    delta = choice.get("delta")
                    delta = delta if isinstance(delta, dict) else {}
                    think = delta.get("reasoning_content") or delta.get("reasoning") or ""
                    content = delta.get("content") or ""
                    think = think if isinstance(think, str) else ""
                    content = content if isinstance(content, str) else ""
                    if (think or content) and n >= max_tokens:
                        finish = "length"  # more than max_tokens: the server ignored it; stop here
                        deltas = max_tokens + EXTRA_DELTAS
                        break
                    if think or content:
                        n += 1
                        if think:
                            reasoning.append(think)
                        if content:
                            parts.append(content)
                        if on_text is not None:
                            on_text(content or think, n)
                    reason = choice.get("finish_reason")
                    if reason:
                        finish = "stop" if reason == "stop" else "length"
                if deltas >= max_tokens + EXTRA_DELTAS:
                    if n >= max_tokens or finish != "stop":
                        finish = "length"
                    break
        finally:
            lines.close()
        return Generation("".join(parts), n, finish, reasoning="".join(reasoning))

    def close(self):
        pass

    def __repr__(self):
        return f"<OpenAIModel {self.base_url} {self.model_id or '(server default)'}>"
