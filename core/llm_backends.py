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

from . import llm_gguf
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


def seed32(seed):
    """ComfyUI seeds are 64-bit; llama.cpp takes 32 bits and treats 0xFFFFFFFF as 'random'."""
    return int(seed) % 0xFFFFFFFF


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
        llama_cpp = import_llama_cpp()
        self.path, self.name = path, name
        kw = dict(model_path=path, n_ctx=int(n_ctx), n_gpu_layers=int(n_gpu_layers), verbose=False)
        if threads and int(threads) > 0:
            kw.update(n_threads=int(threads), n_threads_batch=int(threads))
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

    def generate(self, messages, *, seed=0, max_tokens=256, temperature=0.7, top_p=0.9, on_text=None):
        llm, llama_cpp = self.llm, self._llama_cpp
        if llm is None:
            raise RuntimeError(f"model '{self.name}' was freed; load it again")
        prompt = self.render(messages)
        opened = opens_think(prompt)
        tokens = self.prompt_tokens(prompt)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise ValueError(f"the prompt is {len(tokens)} tokens but n_ctx is {self.n_ctx}: raise n_ctx in "
                             f"Local LLM Loader or shorten the idea/system prompt")
        budget = min(int(max_tokens), room)
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
                n += 1
                piece = decoder.decode(detok([tok]))
                parts.append(piece)
                if on_text is not None:
                    on_text(piece, n)
                if n >= budget:
                    if budget < int(max_tokens):
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

def normalize_base_url(base_url):
    url = (base_url or "").strip().rstrip("/")
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"base_url {base_url!r} contains a control character (NUL, newline, ...): type the "
                         f"server's address again, e.g. http://127.0.0.1:8080/v1")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url {base_url!r} is not an http(s) URL: use the server's OpenAI address, e.g. "
                         f"http://127.0.0.1:8080/v1 (llama.cpp server), http://127.0.0.1:1234/v1 (LM Studio), "
                         f"http://127.0.0.1:11434/v1 (Ollama)")
    if parts.path in ("", "/"):
        url += "/v1"
    return url


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
            raise CrossOriginRedirect(
                f"the server at {self.base_url} answered {code} redirecting to {target}, another server: refused "
                f"(Lean only sends requests, and LEAN_LLM_API_KEY, to base_url's own scheme, host and port). If "
                f"that address is really the server, put it in base_url")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class OpenAIModel:
    """A model served by an OpenAI-compatible server (llama.cpp server, LM Studio, vLLM, Ollama /v1).
    Only ever opens a socket to `base_url`'s origin (system proxies are ignored, redirects elsewhere refused)."""
    heavy = False
    backend = "openai"

    def __init__(self, base_url, model_id="", timeout=600.0, connect_check=True):
        self.base_url = normalize_base_url(base_url)
        self.model_id = (model_id or "").strip()
        self.timeout = float(timeout)
        self.name = self.model_id or self.base_url
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                   _SameOriginRedirects(self.base_url))
        key = os.environ.get("LEAN_LLM_API_KEY", "")
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        if connect_check:
            self.check()

    def _request(self, path, body=None, timeout=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, headers=self._headers,
                                     method="POST" if data is not None else "GET")
        try:
            return self._opener.open(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            detail = e.read(2000).decode("utf-8", errors="replace")
            raise RuntimeError(f"the server at {self.base_url} answered {e.code} to {path}: {detail.strip()}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConnectionError(
                f"cannot reach the OpenAI-compatible server at {self.base_url} ({reason}): start it (llama.cpp: "
                f"`llama-server -m model.gguf --port 8080`; LM Studio: start its server; Ollama: `ollama serve`) "
                f"or fix base_url") from None

    def list_models(self):
        with self._request("/models", timeout=10) as r:
            data = json.loads(r.read() or b"{}")
        return [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]

    def check(self):
        try:
            ids = self.list_models()
        except CrossOriginRedirect:
            raise
        except RuntimeError:  # a server without /models still serves chat
            return
        if not self.model_id:
            if ids:
                self.model_id = ids[0]
                self.name = self.model_id
        elif ids and self.model_id not in ids:
            raise ValueError(f"model_id {self.model_id!r} is not served at {self.base_url}; it serves: "
                             f"{', '.join(ids)}")

    def generate(self, messages, *, seed=0, max_tokens=256, temperature=0.7, top_p=0.9, on_text=None):
        body = {"messages": messages, "stream": True, "seed": seed32(seed), "max_tokens": int(max_tokens),
                "temperature": float(temperature), "top_p": float(top_p)}
        if self.model_id:
            body["model"] = self.model_id
        parts, reasoning = [], []
        n = 0
        finish = "length"
        with self._request("/chat/completions", body) as r:
            for raw in r:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except json.JSONDecodeError:
                    continue
                if chunk.get("error"):
                    raise RuntimeError(f"the server at {self.base_url} reported: {chunk['error']}")
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    think = delta.get("reasoning_content") or delta.get("reasoning") or ""
                    content = delta.get("content") or ""
                    if think or content:
                        n += 1
                        if think:
                            reasoning.append(think)
                        if content:
                            parts.append(content)
                        if on_text is not None:
                            on_text(content or think, n)
                    if choice.get("finish_reason"):
                        finish = "stop" if choice["finish_reason"] == "stop" else "length"
        return Generation("".join(parts), n, finish, reasoning="".join(reasoning))

    def close(self):
        pass

    def __repr__(self):
        return f"<OpenAIModel {self.base_url} {self.model_id or '(server default)'}>"
