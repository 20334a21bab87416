"""Local LLM prompt writer: model cache, handles and the prompt-writing entry point.  Pure logic.

    handle = load("llama_cpp", path="model.gguf", n_ctx=4096)       # cached by its settings
    result = write_prompt(handle, idea="a cat", style="SD1.5 tags", seed=1, max_tokens=256)
    result.prompt, result.thinking, result.truncated
    free_all()                                                     # what ComfyUI's "unload models" calls

At most MAX_LOCAL_MODELS in-process models are held at once (default 1: a second one replaces the first),
because the users this pack is for have one GPU or 16-32 GB of RAM; the environment variable
LEAN_LLM_MAX_MODELS raises it.
"""
import collections
import os
import threading

from . import llm_servers
from .llm_backends import (LlamaCppModel, OpenAIModel, Generation, CannotSee, cannot_see_local,  # noqa: F401
                           check_float, check_int, seed32)
from .llm_text import STYLES, build_messages, split_thinking  # noqa: F401

BACKENDS = ["llama_cpp", "openai"]


def _env_int(name, default):
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


MAX_LOCAL_MODELS = _env_int("LEAN_LLM_MAX_MODELS", 1)


def file_identity(path):
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def model_key(backend, path=None, n_ctx=4096, n_gpu_layers=-1, threads=0, base_url="", model_id="", servers=None,
              mmproj=None):
    """The cache key of a model's settings.  Numbers are checked here (a value that arrives through a link skips
    ComfyUI's min/max); for openai, ``llm_servers.check`` decides first, so a refused base_url never loads and a
    change of the user's server list (which decides where the key goes) gives another key."""
    if backend == "llama_cpp":
        if not path:
            raise ValueError("Local LLM Loader: no model selected: put a .gguf file in ComfyUI/models/llm "
                             "(or a folder listed under 'llm' in extra_model_paths.yaml) and pick it")
        n_ctx, n_gpu_layers, threads = (check_int("n_ctx", n_ctx), check_int("n_gpu_layers", n_gpu_layers),
                                        check_int("threads", threads))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Local LLM Loader: model file not found: {path}")
        if mmproj:
            if not os.path.isfile(mmproj):
                raise FileNotFoundError(f"Local LLM Loader: projector file not found: {mmproj}")
            return ("llama_cpp", file_identity(path), n_ctx, n_gpu_layers, threads, file_identity(mmproj))
        return ("llama_cpp", file_identity(path), n_ctx, n_gpu_layers, threads)
    if backend == "openai":
        decision = llm_servers.check(base_url if isinstance(base_url, str) else "", servers)
        return ("openai",) + decision.key() + ((model_id or "").strip(),)
    raise ValueError(f"Local LLM Loader: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


class ModelCache:
    """Loaded models keyed by their settings.  Thread-safe; `free()` closes what it drops."""

    def __init__(self, max_local=MAX_LOCAL_MODELS):
        self.max_local = max_local
        self._items = collections.OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # how many real loads happened (tests and the benchmark read it)

    def get(self, key, factory):
        with self._lock:
            model = self._items.get(key)
            if model is not None:
                self._items.move_to_end(key)
                return model
            model = factory()
            self.loads += 1
            if getattr(model, "heavy", False):
                heavy = [k for k, m in self._items.items() if getattr(m, "heavy", False)]
                for k in heavy[: max(0, len(heavy) - self.max_local + 1)]:
                    self._items.pop(k).close()
            self._items[key] = model
            return model

    def peek(self, key):
        with self._lock:
            return self._items.get(key)

    def free(self, key=None):
        """Close and drop one model (`key`) or all.  Returns how many were freed."""
        with self._lock:
            keys = [key] if key is not None else list(self._items)
            n = 0
            for k in keys:
                m = self._items.pop(k, None)
                if m is not None:
                    m.close()
                    n += 1
            return n

    def __len__(self):
        with self._lock:
            return len(self._items)


CACHE = ModelCache()


class LLMHandle:
    """What flows on a LEAN_LLM link: the settings, not the model.  `model()` returns the loaded model,
    loading it again if it was freed (keep_loaded=false, ComfyUI's 'unload models')."""

    def __init__(self, backend, key, settings, cache=None):
        self.backend, self.key, self.settings = backend, key, dict(settings)
        self.cache = cache if cache is not None else CACHE

    def _factory(self):
        s = self.settings
        if self.backend == "llama_cpp":
            return LlamaCppModel(s["path"], n_ctx=s["n_ctx"], n_gpu_layers=s["n_gpu_layers"], threads=s["threads"],
                                 mmproj=s.get("mmproj"))
        return OpenAIModel(s["base_url"], s["model_id"], servers=s.get("servers"))

    def model(self):
        return self.cache.get(self.key, self._factory)

    def is_loaded(self):
        return self.cache.peek(self.key) is not None

    def free(self):
        return self.cache.free(self.key)

    @property
    def name(self):
        s = self.settings
        return os.path.basename(s["path"]) if self.backend == "llama_cpp" else (s.get("model_id") or s["base_url"])

    def __repr__(self):
        return f"<LEAN_LLM {self.backend} {self.name}>"


def load(backend, path=None, n_ctx=4096, n_gpu_layers=-1, threads=0, base_url="", model_id="", cache=None,
         servers=None, mmproj=None):
    """Return a handle with its model loaded (a cache hit costs a dict lookup and a stat).  ``servers``: the
    user's llm_servers.ServerList (default: LEAN_LLM_SERVERS alone).  ``mmproj``: a projector file (llama_cpp
    only): the model then sees images; the projector is part of the loaded model and freed with it."""
    mmproj = mmproj if backend == "llama_cpp" else None
    key = model_key(backend, path, n_ctx, n_gpu_layers, threads, base_url, model_id, servers, mmproj)
    settings = dict(path=path, mmproj=mmproj, n_ctx=check_int("n_ctx", n_ctx), n_gpu_layers=check_int("n_gpu_layers", n_gpu_layers),
                    threads=check_int("threads", threads), base_url=base_url, model_id=model_id, servers=servers)
    handle = LLMHandle(backend, key, settings, cache=cache)
    handle.model()
    return handle


def free_all(cache=None):
    return (cache if cache is not None else CACHE).free()


class PromptResult:
    __slots__ = ("prompt", "thinking", "truncated", "n_tokens", "finish", "raw", "notice", "image_tokens",
                 "image_grid")

    def __init__(self, prompt, thinking, truncated, n_tokens, finish, raw, notice=""):
        self.prompt, self.thinking, self.truncated = prompt, thinking, truncated
        self.n_tokens, self.finish, self.raw, self.notice = n_tokens, finish, raw, notice
        self.image_tokens, self.image_grid = 0, None

    def message(self, max_tokens):
        """A one-line status for the UI and log (the server policy's notice appended, e.g. the key withheld)."""
        text = self._message(max_tokens)
        return f"{text}. Note: {self.notice}" if self.notice else text

    def _message(self, max_tokens):
        # A server that returns the reasoning apart (reasoning_content) and stops at max_tokens/n_ctx: the
        # same situation as an unclosed <think>, the same advice.
        if self.truncated or (not self.prompt and self.thinking and self.finish in ("length", "context")):
            why = {"length": f"max_tokens ({max_tokens}) ran out",
                   "context": "the context (n_ctx) filled up"}.get(self.finish, "it ended its text")
            return (f"No prompt: the model was still thinking (<think> never closed) when {why}, so 'prompt' is "
                    f"empty and the reasoning is only on 'thinking'. Raise max_tokens (reasoning models need "
                    f"1024 or more) or n_ctx.")
        if not self.prompt and self.thinking:
            return "No prompt: the model answered with nothing but reasoning. Try another seed or style."
        if not self.prompt:
            return (f"No prompt: the model returned no text ({self.n_tokens} tokens, {self.finish}). Try another "
                    f"seed, style or model.")
        return f"{self.n_tokens} tokens ({self.finish})"


def write_prompt(handle, idea, style="SD1.5 tags", system_prompt="", seed=0, max_tokens=256, temperature=0.7,
                 top_p=0.9, on_text=None, keep_loaded=True, check_cancel=None, image=None):
    """Generate an image prompt from `idea`.  Reasoning never reaches `.prompt`.  ``check_cancel``: a callable
    that raises to stop (the host's interrupt check); called while waiting on a server and between tokens.
    ``image``: one H x W x 3 uint8 RGB picture (llm_vision.rgb_u8 / shrink) the model looks at."""
    messages = build_messages(idea, style, system_prompt, image=image is not None)
    try:
        max_tokens = check_int("max_tokens", max_tokens)
        seed = check_int("seed", seed)
        temperature, top_p = check_float("temperature", temperature), check_float("top_p", top_p)
    except ValueError as e:
        raise ValueError(f"LLM Prompt Writer: {e}") from None
    try:
        model = handle.model()
        kw = {"image": image} if image is not None else {}
        gen = model.generate(messages, seed=seed, max_tokens=max_tokens, temperature=temperature,
                             top_p=top_p, on_text=on_text, check_cancel=check_cancel, **kw)
    finally:
        if not keep_loaded:
            handle.free()
    split = split_thinking(gen.text, opened=gen.opened_think, reasoning=gen.reasoning)
    result = PromptResult(split.prompt, split.thinking, split.truncated, gen.n_tokens, gen.finish, gen.text,
                          notice=getattr(model, "notice", ""))
    result.image_tokens, result.image_grid = getattr(gen, "image_tokens", 0), getattr(gen, "image_grid", None)
    return result
