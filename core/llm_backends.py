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
    __slots__ = ("text", "reasoning", "n_tokens", "finish", "opened_think", "prompt_tokens", "image_tokens",
                 "image_grid", "first_token_s")

    def __init__(self, text, n_tokens, finish, opened_think=False, reasoning="", prompt_tokens=0, image_tokens=0,
                 image_grid=None, first_token_s=None):
        self.text, self.n_tokens, self.finish = text, n_tokens, finish
        self.opened_think, self.reasoning, self.prompt_tokens = opened_think, reasoning, prompt_tokens
        self.image_tokens, self.image_grid, self.first_token_s = image_tokens, image_grid, first_token_s


class CannotSee(ValueError):
    """An image was given to a model that cannot take one (no projector, a server that refuses images)."""


def cannot_see_local(name):
    return CannotSee(
        f"model '{name}' cannot see images: no projector is loaded with it. Put the model's projector "
        f"(mmproj-*.gguf, published beside the vision model, e.g. mmproj-Qwen2.5-VL-3B-Instruct-f16.gguf for "
        f"Qwen2.5-VL-3B-Instruct) in ComfyUI/models/llm and pick it in Local LLM Loader's 'mmproj' input, or use a "
        f"vision model; or disconnect 'image'")


# mtmd (llama.cpp's multimodal library) logs to stderr by itself; its lines are kept here (the last few, bounded)
# so a projector that fails to load gives llama.cpp's reason in the error, and the console stays quiet.
_MTMD_LOG = []
_MTMD_LOG_CB = []


def _mtmd_quiet(llama_cpp, mtmd):
    if _MTMD_LOG_CB:
        return
    import ctypes

    @llama_cpp.llama_log_callback
    def cb(level, text, user_data):
        try:
            line = ctypes.string_at(text).decode("utf-8", errors="replace").rstrip()
        except Exception:
            return
        if line and int(level) == 4:  # GGML_LOG_LEVEL_ERROR: the reasons, not the advice
            _MTMD_LOG.append(line[:500])
            del _MTMD_LOG[:-20]

    _MTMD_LOG_CB.append(cb)  # keep the C callback alive as long as the process
    mtmd.mtmd_helper_log_set(cb, ctypes.c_void_p(0))


def import_mtmd(llama_cpp):
    try:
        import llama_cpp.mtmd_cpp as mtmd
        mtmd.mtmd_default_marker()
    except Exception as e:
        raise ImportError(
            f"this llama-cpp-python ({getattr(llama_cpp, '__version__', '?')}) has no vision support (libmtmd): "
            f"update it (CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" python -m pip install -U llama-cpp-python, 0.3.36 or "
            f"later), or use backend 'openai' with a server started with --mmproj ({e})") from None
    _mtmd_quiet(llama_cpp, mtmd)
    return mtmd


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

    def __init__(self, path, n_ctx=4096, n_gpu_layers=-1, threads=0, mmproj=None):
        path = os.fspath(path)
        name = os.path.basename(path)
        self.mtmd_ctx = None
        self.projector = None
        if mmproj:  # before anything loads: a wrong projector file is a clear error, not a crash
            from . import llm_vision
            self.projector = info = llm_vision.read_projector(mmproj)
            arch, width = llm_vision.model_width(path)
            if llm_vision.pairs(info, width) is False:
                raise ValueError(
                    f"projector '{info.name}' does not fit model '{name}': it makes {info.output_dim}-wide image "
                    f"embeddings, the model ({arch}) is {width} wide. Pick the mmproj file published with this "
                    f"model (same family and size)")
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
        if self.projector is not None:
            try:
                self._load_projector(n_gpu_layers)
            except BaseException:
                self.close()
                raise
        md = getattr(self.llm, "metadata", {}) or {}
        self.chat_template = md.get("tokenizer.chat_template") or meta.get("tokenizer.chat_template") or ""
        self.n_ctx = self.llm.n_ctx()
        self.add_bos = str(md.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"

    @property
    def sees_images(self):
        return self.mtmd_ctx is not None

    def _load_projector(self, n_gpu_layers):
        """Open the projector with llama.cpp's mtmd, with the settings llama_cpp's MTMDChatHandler uses; it is
        freed with the model (close())."""
        llama_cpp, info = self._llama_cpp, self.projector
        mtmd = import_mtmd(llama_cpp)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = n_gpu_layers != 0
        params.print_timings = False
        params.n_threads = self.llm.n_threads
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if self.llm.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        del _MTMD_LOG[:]
        ctx = mtmd.mtmd_init_from_file(info.path.encode("utf-8"), self.llm.model, params)
        if not ctx:
            said = "; ".join(_MTMD_LOG[-4:]) or "no reason given"
            raise ValueError(
                f"llama.cpp could not load projector '{info.name}' (type '{info.type}') for model '{self.name}': "
                f"{said}. Either it is not this model's projector (pick the mmproj file published with the model), "
                f"the file is incomplete (compare its size with the download page), or this llama-cpp-python "
                f"({getattr(llama_cpp, '__version__', '?')}) does not know the projector type (update it)")
        if not mtmd.mtmd_support_vision(ctx):
            mtmd.mtmd_free(ctx)
            raise ValueError(f"projector '{info.name}' cannot read images (an audio projector?): pick the vision "
                             f"mmproj of the model")
        self.mtmd_ctx, self._mtmd = ctx, mtmd
        self.marker = mtmd.mtmd_default_marker().decode("utf-8")

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

    def _eval_with_image(self, messages, image, check_cancel):
        """Evaluate the chat prompt with one image (H x W x 3 uint8) in the last user turn, as llama_cpp's
        MTMDChatHandler does (media marker in the text, mtmd_tokenize, chunks evaluated in order), but with the
        pack's budgeted template renderer.  Returns (prompt text, evaluated tokens, image tokens, grid)."""
        import ctypes
        import numpy as np
        llm, llama_cpp, mtmd = self.llm, self._llama_cpp, self._mtmd
        for m in messages:
            if self.marker in str(m.get("content", "")):
                raise ValueError(f"the text contains {self.marker}, llama.cpp's image marker: remove it from the "
                                 f"idea / system prompt")
        msgs = [dict(m) for m in messages]
        last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
        msgs[last_user]["content"] = self.marker + msgs[last_user]["content"]
        text = self.render(msgs)
        if text.count(self.marker) != 1:
            raise ValueError(f"the chat template of '{self.name}' dropped the image from the prompt: use the "
                             f"model's own GGUF (its template places the image)")
        rgb = np.ascontiguousarray(image, dtype=np.uint8)
        h, w = rgb.shape[:2]
        data = rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        bitmap = mtmd.mtmd_bitmap_init(w, h, data)
        if not bitmap:
            raise ValueError(f"llama.cpp could not take a {w} x {h} image")
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            inp = mtmd.mtmd_input_text()
            raw = text.encode("utf-8")
            inp.text, inp.text_len, inp.add_special, inp.parse_special = raw, len(raw), True, True
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            rc = mtmd.mtmd_tokenize(self.mtmd_ctx, chunks, ctypes.byref(inp), bitmaps, 1)
            if rc != 0:
                raise ValueError(f"llama.cpp could not tokenize the prompt with its image (error {rc}): "
                                 f"{'; '.join(_MTMD_LOG[-2:])}")
            llm.reset()
            llm._ctx.kv_cache_clear()
            n_img, grid, cells = 0, None, 0  # cells: KV entries used (M-RoPE images use fewer positions)
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                if check_cancel is not None:
                    check_cancel()
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                kind = mtmd.mtmd_input_chunk_get_type(chunk)
                if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    toks = [ptr[j] for j in range(n.value)]
                    cells += len(toks)
                    if cells >= self.n_ctx:
                        raise self._too_long(cells)
                    if toks:
                        llm.eval(toks)
                else:
                    n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                    cells += n
                    if cells >= self.n_ctx:
                        raise self._too_long(cells)
                    img = mtmd.mtmd_input_chunk_get_tokens_image(chunk)
                    if img:
                        grid = (mtmd.mtmd_image_tokens_get_nx(img), mtmd.mtmd_image_tokens_get_ny(img))
                    n_img += n
                    new_n_past = llama_cpp.llama_pos(0)
                    rc = mtmd.mtmd_helper_eval_chunk_single(
                        self.mtmd_ctx, llm._ctx.ctx, chunk, llama_cpp.llama_pos(llm.n_tokens), llama_cpp.llama_seq_id(0),
                        llm.n_batch, False, ctypes.byref(new_n_past))
                    if rc != 0:
                        raise ValueError(f"llama.cpp could not encode the image (error {rc}): "
                                         f"{'; '.join(_MTMD_LOG[-2:])}")
                    llm.n_tokens = new_n_past.value
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)
        return text, llm.input_ids[: llm.n_tokens].tolist(), n_img, grid, cells

    def _too_long(self, n):
        return ValueError(f"the prompt with its image is {n} tokens but n_ctx is {self.n_ctx}: raise n_ctx in "
                          f"Local LLM Loader")

    def generate(self, messages, *, seed=0, max_tokens=256, temperature=0.7, top_p=0.9, on_text=None,
                 check_cancel=None, image=None):
        import time
        llm, llama_cpp = self.llm, self._llama_cpp
        max_tokens = check_int("max_tokens", max_tokens)
        if llm is None:
            raise RuntimeError(f"model '{self.name}' was freed; load it again")
        t0 = time.perf_counter()
        n_img, grid = 0, None
        if image is not None:
            if self.mtmd_ctx is None:
                raise cannot_see_local(self.name)
            prompt, tokens, n_img, grid, cells = self._eval_with_image(messages, image, check_cancel)
            room = self.n_ctx - cells
        else:
            prompt = self.render(messages)
            tokens = self.prompt_tokens(prompt)
            room = self.n_ctx - len(tokens)
            if room < 1:
                raise ValueError(f"the prompt is {len(tokens)} tokens but n_ctx is {self.n_ctx}: raise n_ctx in "
                                 f"Local LLM Loader or shorten the idea/system prompt")
            llm.reset()  # full prompt evaluation every run: same seed + inputs -> same text
        n_prompt = cells if image is not None else len(tokens)
        opened = opens_think(prompt)
        budget = min(max_tokens, room)
        first = None
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
                if first is None:
                    first = time.perf_counter() - t0
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
        return Generation("".join(parts), n, finish, opened_think=opened, prompt_tokens=n_prompt,
                          image_tokens=n_img, image_grid=grid, first_token_s=first)

    def close(self):
        ctx, self.mtmd_ctx = getattr(self, "mtmd_ctx", None), None
        if ctx is not None:  # the projector first: it refers to the model
            self._mtmd.mtmd_free(ctx)
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


class ServerError(RuntimeError):
    """The server answered with an HTTP error status (``code``)."""

    def __init__(self, msg, code):
        super().__init__(msg)
        self.code = code


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
        return ServerError(msg, code)

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

    def _refused_image(self, e):
        return CannotSee(
            f"the server at {self.base_url} refused the request with the image ({str(e)[:300]}): the model it serves "
            f"({self.model_id or 'its default'}) probably cannot see images. Serve a vision model there (llama.cpp: "
            f"llama-server -m model.gguf --mmproj mmproj-model.gguf; LM Studio: a model marked as vision; Ollama: "
            f"e.g. qwen2.5vl), or disconnect 'image'")

    def generate(self, messages, *, seed=0, max_tokens=256, temperature=0.7, top_p=0.9, on_text=None,
                 check_cancel=None, image=None):
        import time
        max_tokens = check_int("max_tokens", max_tokens)
        if image is not None:  # OpenAI's form: the image as an image_url part with a base64 PNG data URL
            from .llm_vision import data_url
            messages = [dict(m) for m in messages]
            last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[last_user]["content"] = [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                              {"type": "text", "text": messages[last_user]["content"]}]
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
                    err = RuntimeError(f"the server at {self.base_url} reported: {str(chunk['error'])[:500]}")
                    raise self._refused_image(err) if image is not None else err
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
        except ServerError as e:
            if image is not None and e.code not in (401, 403, 404, 407, 429):
                raise self._refused_image(e) from None
            raise
        finally:
            lines.close()
        return Generation("".join(parts), n, finish, reasoning="".join(reasoning))

    def close(self):
        pass

    def __repr__(self):
        return f"<OpenAIModel {self.base_url} {self.model_id or '(server default)'}>"
