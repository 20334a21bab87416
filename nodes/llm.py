"""Local LLM prompt writer: LeanLLMLoader -> LeanLLMPrompt (adapters; the logic is core/llm*.py)."""
import hashlib
import json
import logging
import os
import time

import folder_paths

from ..core import llm as core_llm
from ..core import llm_servers, llm_vision
from ..core.llm_text import STYLES

log = logging.getLogger("lean")

LLM_FOLDER = "llm"
NO_MODEL = "(no .gguf in models/llm)"
NO_PROJECTOR = "(none)"
AUTO_PROJECTOR = "(auto: the mmproj beside the model)"
STREAM_EVENT = "lean.llm.stream"
UI_EVERY_S = 0.05  # stream / progress messages to the browser at most every 50 ms (batched tokens)


def register_llm_folder():
    """models/llm (plus any 'llm:' entry of extra_model_paths.yaml), listing .gguf files."""
    folder_paths.add_model_folder_path(LLM_FOLDER, os.path.join(folder_paths.models_dir, LLM_FOLDER))
    folder_paths.folder_names_and_paths[LLM_FOLDER][1].add(".gguf")


def _sync_host_memory(handle=None):
    """The llama.cpp models this pack holds are entries of ComfyUI's own loaded-model list (nodes/_host.py):
    the host's memory manager frees them when an image model needs room, and "unload models" (POST /free,
    the Manager button) frees them, like any model it loaded itself.  Models freed here leave the list.
    The entry refers to the model by its key only, so it never keeps a handle (a node output) alive."""
    try:
        from . import _host
        _host.forget_freed(lambda key: core_llm.CACHE.peek(key) is not None)
        if handle is None or handle.backend != "llama_cpp" or not handle.is_loaded():
            return False
        size = sum(os.path.getsize(p) for p in (handle.settings.get("path"), handle.settings.get("mmproj"))
                   if p and os.path.exists(p))  # the projector is part of the loaded model
        key, name = handle.key, handle.name

        def free():
            if core_llm.CACHE.free(key):
                log.info("[Lean LLM] freed %s: ComfyUI's memory manager unloaded it", name)

        return _host.register_foreign(key, "LeanLLM", size, free,
                                      on_gpu=handle.settings.get("n_gpu_layers", 0) != 0 and _llm_on_gpu())
    except Exception as e:  # never fail a run over bookkeeping
        log.debug("[Lean LLM] could not register the model with ComfyUI's memory manager: %s", e)
        return False


def _free_with_loader_output(handle):
    """The loaded model lives as long as ComfyUI keeps the loader's output (the handle) in its node cache, like a
    stock loader's model: when 0.33's RAM-pressure cache evicts it (free RAM below its --cache-ram thresholds),
    when the classic cache drops it (the loader left the workflow), or on POST /free, the model is freed."""
    if handle.backend != "llama_cpp":
        return False
    try:
        from . import _host
        key, name = handle.key, handle.name

        def release():
            if core_llm.CACHE.free(key):
                log.info("[Lean LLM] freed %s: ComfyUI's node cache let go of the loader's output", name)
            _host.unregister_foreign(key)

        return _host.free_with_output(handle, key, release)
    except Exception as e:  # never fail a run over bookkeeping
        log.debug("[Lean LLM] could not tie the model to the loader's output: %s", e)
        return False


def _llm_on_gpu():
    import comfy.model_management as mm
    return mm.get_torch_device().type != "cpu"


register_llm_folder()


def user_servers():
    """The user's LLM servers: LEAN_LLM_SERVERS plus the Settings dialog's entry (Lean > LLM servers), read from the
    host's stored user settings on every run; never from a workflow."""
    from . import _host
    value, problem = _host.read_user_setting(llm_servers.SETTING_ID)
    if isinstance(value, list):
        value = ",".join(v for v in value if isinstance(v, str))
    elif value is not None and not isinstance(value, str):
        problem, value = f"{llm_servers.SETTING_WHERE} is not text: ignored", ""
    return llm_servers.ServerList(settings_text=value or "", settings_problem=problem)


_WARNED = set()


def _warn_once(text):
    if text and text not in _WARNED:
        _WARNED.add(text)
        log.warning("[Lean LLM] %s", text)


def _migration_notice():
    """One line for users who set LEAN_LLM_API_KEY before servers had to be listed."""
    try:
        if os.environ.get(llm_servers.ENV_KEY) and not user_servers():
            _warn_once(f"{llm_servers.ENV_KEY} is set but no LLM server is listed: the key is now sent only to "
                       f"servers you name in {llm_servers.ENV_SERVERS} or {llm_servers.SETTING_WHERE} "
                       f"(e.g. http://127.0.0.1:8080), so it is not sent anywhere until you do")
    except Exception as e:  # never fail the import over a notice
        log.debug("[Lean LLM] %s", e)


_migration_notice()


def _model_list():
    files = [f for f in folder_paths.get_filename_list(LLM_FOLDER) if not llm_vision.is_projector_name(f)]
    return files or [NO_MODEL]


def _projector_list():
    return [NO_PROJECTOR, AUTO_PROJECTOR] + [f for f in folder_paths.get_filename_list(LLM_FOLDER)
                                             if llm_vision.is_projector_name(f)]


def resolve_projector(mmproj, model_path):
    """The projector file for the loader's 'mmproj' value: None for (none); for (auto), the one mmproj*.gguf in
    the model's own folder (several: the one whose output width is the model's); else the named file."""
    if not mmproj or mmproj == NO_PROJECTOR:
        return None
    if mmproj != AUTO_PROJECTOR:
        path = folder_paths.get_full_path(LLM_FOLDER, mmproj)
        if not path:
            raise FileNotFoundError(f"Local LLM Loader: projector '{mmproj}' is not in any 'llm' folder "
                                    f"({', '.join(folder_paths.get_folder_paths(LLM_FOLDER))}): refresh the list")
        return path
    folder = os.path.dirname(model_path)
    found = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if llm_vision.is_projector_name(f) and os.path.isfile(os.path.join(folder, f)))
    if len(found) > 1:
        _, width = llm_vision.model_width(model_path)
        fitting = []
        for f in found:
            try:
                if llm_vision.pairs(llm_vision.read_projector(f), width):
                    fitting.append(f)
            except ValueError:
                continue
        found = fitting if len(fitting) == 1 else found
    if len(found) != 1:
        names = ", ".join(os.path.basename(f) for f in found) or "none"
        raise FileNotFoundError(
            f"Local LLM Loader: mmproj is '{AUTO_PROJECTOR}' but the folder of '{os.path.basename(model_path)}' "
            f"({folder}) holds {len(found)} projector files that could pair with it ({names}): put the model's "
            f"mmproj-*.gguf beside it, or pick the projector by name")
    return found[0]


class LeanLLMLoader:
    DESCRIPTION = ("Loads a local quantized language model (.gguf: Qwen2.5-Instruct, DeepSeek-R1-Distill, Llama, "
                   "Q4_K_M/Q8_0...) with llama.cpp in this process, or connects to an OpenAI-compatible server "
                   "(llama.cpp server, LM Studio, vLLM, Ollama /v1). Fully offline: nothing is downloaded. The "
                   "loaded model is cached by its settings, so the next run costs no load. With a projector "
                   "(mmproj-*.gguf, e.g. for Qwen2.5-VL or Gemma 3) the model sees images.")
    CATEGORY = "lean/llm"
    RETURN_TYPES = ("LEAN_LLM",)
    RETURN_NAMES = ("llm",)
    OUTPUT_TOOLTIPS = ("The model handle, for LLM Prompt Writer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "backend": (core_llm.BACKENDS, {"default": "llama_cpp", "tooltip":
                        "llama_cpp: run the .gguf in ComfyUI's process (needs llama-cpp-python). openai: use any "
                        "OpenAI-compatible server at base_url (llama.cpp server, LM Studio, vLLM, Ollama)."}),
            "model": (_model_list(), {"tooltip": "The .gguf file, from ComfyUI/models/llm (or an 'llm:' folder in "
                                                 "extra_model_paths.yaml). Used by backend llama_cpp only."}),
            "base_url": ("STRING", {"default": "http://127.0.0.1:8080/v1", "tooltip":
                         "openai backend only: the server's OpenAI address, e.g. http://127.0.0.1:8080/v1 (llama.cpp "
                         "server), :1234/v1 (LM Studio), :11434/v1 (Ollama). A workflow sets this, so it is used only "
                         "if it is on this computer (127.x, ::1, localhost) or one of the servers you listed in "
                         "LEAN_LLM_SERVERS or Settings > Lean > LLM servers; anything else is refused unopened. "
                         "LEAN_LLM_API_KEY goes only to listed servers."}),
            "model_id": ("STRING", {"default": "", "advanced": True, "tooltip":
                         "openai backend only: the model name the server knows (empty: the first one it lists)."}),
            "n_ctx": ("INT", {"default": 4096, "advanced": True, "min": 256, "max": 131072, "step": 256, "tooltip":
                      "Context length in tokens (prompt + answer). More costs memory; 4096 suits prompt writing, "
                      "reasoning models may need 8192."}),
            "n_gpu_layers": ("INT", {"default": -1, "min": -1, "max": 1000, "tooltip":
                             "Layers to put on the GPU: -1 all, 0 CPU only. Lower it if the GPU runs out of memory. "
                             "Ignored by a CPU-only llama-cpp-python build."}),
            "threads": ("INT", {"default": 0, "advanced": True, "min": 0, "max": 512, "tooltip":
                        "CPU threads for llama.cpp; 0 = automatic (half the logical cores)."}),
        }, "optional": {
            "mmproj": (_projector_list(), {"default": NO_PROJECTOR, "advanced": True, "tooltip":
                       "llama_cpp only: the vision projector (mmproj-*.gguf in models/llm, published beside a vision "
                       "model such as Qwen2.5-VL or Gemma 3), so LLM Prompt Writer's 'image' works. (auto) takes the "
                       "mmproj*.gguf in the model's own folder (if several, the one whose size fits the model). "
                       "(none): text only."}),
        }}

    @classmethod
    def IS_CHANGED(cls, backend, model, base_url, model_id, n_ctx, n_gpu_layers, threads, mmproj=NO_PROJECTOR):
        # Same settings -> same value, so the node re-runs only when an input (or the file itself) changes.
        if backend == "llama_cpp":
            path = folder_paths.get_full_path(LLM_FOLDER, model) if model != NO_MODEL else None
            try:
                ident = repr(core_llm.file_identity(path)) if path else "missing"
                proj = resolve_projector(mmproj, path) if path else None
                return ident + (repr(core_llm.file_identity(proj)) if proj else "")
            except (OSError, ValueError):
                return "missing"
        # where the key may go is the user's setting, not an input: a change of it must load again
        return repr((user_servers().fingerprint(), bool(os.environ.get(llm_servers.ENV_KEY))))

    def load(self, backend, model, base_url, model_id, n_ctx, n_gpu_layers, threads, mmproj=NO_PROJECTOR):
        path = proj = None
        if backend == "llama_cpp":
            if model == NO_MODEL or not model:
                raise FileNotFoundError(
                    "Local LLM Loader: no .gguf model found: put one (e.g. Qwen2.5-1.5B-Instruct-Q4_K_M.gguf) in "
                    "ComfyUI/models/llm, or add an 'llm:' folder to extra_model_paths.yaml, then refresh")
            path = folder_paths.get_full_path(LLM_FOLDER, model)
            if not path:
                raise FileNotFoundError(f"Local LLM Loader: model '{model}' is not in any 'llm' folder "
                                        f"({', '.join(folder_paths.get_folder_paths(LLM_FOLDER))}): refresh the list")
            proj = resolve_projector(mmproj, path)
        loads = core_llm.CACHE.loads
        t0 = time.perf_counter()
        servers = user_servers() if backend == "openai" else None
        handle = core_llm.load(backend, path=path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, threads=threads,
                               base_url=base_url, model_id=model_id, servers=servers, mmproj=proj)
        loaded = core_llm.CACHE.peek(handle.key)
        _warn_once(getattr(loaded, "notice", ""))
        if backend == "llama_cpp":
            sees = bool(getattr(loaded, "sees_images", False))
            vision = (f"sees images (projector {os.path.basename(proj)}, "
                      f"{getattr(loaded.projector, 'type', '?')})" if sees else "text only (no projector)")
        else:
            sees, vision = None, "images: as the server's model allows"
        if core_llm.CACHE.loads != loads:
            log.info("[Lean LLM] loaded %s (%s) in %.2f s: %s", handle.name, backend, time.perf_counter() - t0,
                     vision)
        _sync_host_memory(handle)
        _free_with_loader_output(handle)
        return {"ui": {"lean_llm_loader": [{"model": handle.name, "sees_images": sees, "vision": vision}]},
                "result": (handle,)}


_SERVER = []


def _prompt_server():
    """The host's PromptServer instance (None outside a running host); the import is tried once."""
    if not _SERVER:
        try:
            from server import PromptServer
            _SERVER.append(PromptServer)
        except Exception:
            _SERVER.append(None)
    return getattr(_SERVER[0], "instance", None) if _SERVER[0] is not None else None


class _Streamer:
    """Per-token callback: cancel check every token; browser stream + ProgressBar batched every 50 ms."""

    def __init__(self, node_id, max_tokens):
        import comfy.model_management as mm
        import comfy.utils
        self.check_cancel = mm.throw_exception_if_processing_interrupted
        self.pbar = comfy.utils.ProgressBar(int(max_tokens), node_id=node_id)
        self.node_id = node_id
        self.max_tokens = int(max_tokens)
        self.server = _prompt_server()
        self.pending = []
        self.next_flush = 0.0
        self.n = 0
        self.send({"start": True})

    def send(self, data):
        if self.server is None:
            return
        data = dict(data, node=self.node_id, tokens=self.n, max_tokens=self.max_tokens)
        self.server.send_sync(STREAM_EVENT, data, getattr(self.server, "client_id", None))

    def __call__(self, piece, n):
        self.check_cancel()
        self.pending.append(piece)
        self.n = n
        now = time.monotonic()
        if now >= self.next_flush:
            self.flush(now)

    def flush(self, now=None):
        self.next_flush = (now or time.monotonic()) + UI_EVERY_S
        if self.pending:
            self.send({"delta": "".join(self.pending)})
            self.pending.clear()
        self.pbar.update_absolute(min(self.n, self.max_tokens))

    def done(self, result, status):
        self.flush()
        self.send({"done": True, "prompt": result.prompt if result else "", "thinking": result.thinking if result
                   else "", "status": status})


class LeanLLMPrompt:
    DESCRIPTION = ("Writes an image prompt from a short idea with the model from Local LLM Loader. Reasoning "
                   "models' <think> text goes to 'thinking', never into 'prompt'. Tokens stream onto the node as they "
                   "are generated; Cancel stops between tokens. Same seed and inputs give the same text, and the node "
                   "only re-runs when an input changes. With an image (a vision model: Local LLM Loader's mmproj, or "
                   "a server that sees images) it describes the image as a prompt; a batch of N images gives N "
                   "prompts, one per line of 'prompt' and as the list 'prompts'.")
    CATEGORY = "lean/llm"
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("prompt", "thinking", "prompts")
    OUTPUT_IS_LIST = (False, False, True)
    OUTPUT_TOOLTIPS = ("The image prompt (no reasoning; empty if the model ran out of tokens while thinking). For "
                       "a batch of N images: the N prompts, one per line (line breaks inside a prompt become "
                       "spaces), ready for Prompt Batch's text.",
                       "The model's reasoning (<think> ... </think>), empty for non-reasoning models.",
                       "The prompts as a list, one per image (one item without an image): for nodes that take a "
                       "list, e.g. to save a caption per image.")
    FUNCTION = "write"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "llm": ("LEAN_LLM", {"tooltip": "The model from Local LLM Loader (GGUF)."}),
            "idea": ("STRING", {"multiline": True, "default": "a lighthouse on a cliff at dusk", "tooltip":
                     "What the image should show, in your own words; the model turns it into a prompt. With an "
                     "image: leave empty to describe the image as it is, or say what to change (the idea steers)."}),
            "style": (STYLES, {"default": STYLES[0], "tooltip":
                      "Prompt style: SD1.5 comma tags, SDXL (sentence + tags), Flux / prose (natural language), or "
                      "custom (your system_prompt). With an image: describe for SD1.5 / SDXL / Flux / Z-Image (a "
                      "prompt that reproduces it), caption (one line, for training data) or tags."}),
            "system_prompt": ("STRING", {"multiline": True, "default": "", "advanced": True, "tooltip":
                              "Instructions for the model, used only when style is 'custom'."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                     "tooltip": "Sampling seed: the same seed and inputs give the same text."}),
            "max_tokens": ("INT", {"default": 512, "advanced": True, "min": 1, "max": 32768, "tooltip":
                           "Most tokens to generate. Reasoning models (R1) think first: give them 1024 or more, or "
                           "the prompt comes out empty."}),
            "temperature": ("FLOAT", {"default": 0.7, "advanced": True, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip":
                            "Randomness: 0 always picks the likeliest token; 0.6-0.8 is typical."}),
            "top_p": ("FLOAT", {"default": 0.9, "advanced": True, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                      "Nucleus sampling: only the likeliest tokens adding up to this probability are considered."}),
            "keep_loaded": ("BOOLEAN", {"default": True, "tooltip":
                            "Keep the model in memory for the next run (fast). Off: free its RAM/VRAM right after "
                            "this run, e.g. to leave room for the image model."}),
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "A picture for the model to look at (needs a vision model: Local LLM "
                                "Loader's mmproj, or a server that sees images). A batch of N images gives N "
                                "prompts. Images larger than the projector takes are shrunk (never enlarged)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        # A digest of the widget values only: equal inputs -> equal value -> cached, never a random re-run.  A
        # linked image is part of ComfyUI's own cache key (the upstream node's signature), never hashed here.
        values = {k: v for k, v in kwargs.items() if k not in ("llm", "unique_id", "image")}
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()

    def write(self, llm, idea, style, system_prompt, seed, max_tokens, temperature, top_p, keep_loaded,
              unique_id=None, image=None):
        if not isinstance(llm, core_llm.LLMHandle):
            raise TypeError("LLM Prompt Writer: 'llm' must come from Local LLM Loader (GGUF)")
        try:
            max_tokens = core_llm.check_int("max_tokens", max_tokens)
            n_images = llm_vision.batch_shape(image)[0] if image is not None else 0
        except ValueError as e:
            raise ValueError(f"LLM Prompt Writer: {e}") from None
        if n_images and llm.backend == "llama_cpp" and not llm.settings.get("mmproj"):
            raise core_llm.CannotSee("LLM Prompt Writer: " + str(core_llm.cannot_see_local(llm.name)))
        runs = max(1, n_images)
        streamer = _Streamer(unique_id, max_tokens * runs)
        results = []
        status = "failed"
        if not llm.is_loaded():
            log.info("[Lean LLM] loading %s again (it was freed)", llm.name)
        log.info("[Lean LLM] generating with %s: max_tokens=%d seed=%d%s", llm.name, max_tokens, seed,
                 f", {n_images} image{'s' if n_images != 1 else ''}" if n_images else "")
        try:
            for i in range(runs):
                rgb, note = None, ""
                if n_images:
                    rgb, note = self._picture(llm, image, i, n_images)
                    if i:
                        streamer.pending.append("\n")  # the stream view shows one prompt per line
                base = streamer.n

                def on_text(piece, n, base=base):
                    streamer(piece, base + n)

                result = core_llm.write_prompt(llm, idea, style=style, system_prompt=system_prompt, seed=seed,
                                               max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                               on_text=on_text, keep_loaded=keep_loaded or i < runs - 1,
                                               check_cancel=streamer.check_cancel, image=rgb)
                streamer.n = base + result.n_tokens
                if note:
                    note = f"{note}, {result.image_tokens} image tokens"
                    log.info("[Lean LLM] %s", note)
                results.append((result, note))
            status = _status(results, max_tokens)
        except BaseException as e:
            from . import _host
            if _host.interrupted(e):
                status = f"cancelled after {streamer.n} token{'s' if streamer.n != 1 else ''}"
                log.info("[Lean LLM] %s", status)
            else:
                status = f"failed: {type(e).__name__}: {e}"
            raise
        finally:
            if not keep_loaded and llm.is_loaded():
                llm.free()  # a failed or cancelled batch frees too
            if not keep_loaded and not llm.is_loaded():
                log.info("[Lean LLM] freed %s after the run (keep_loaded=false)", llm.name)
            _sync_host_memory(llm)
            streamer.done(_Joined(results) if results else None, status)
        if any(r.truncated or not r.prompt or r.notice for r, _ in results):
            log.warning("[Lean LLM] %s", status)
        joined = _Joined(results)
        return {"ui": {"lean_llm": [{"prompt": joined.prompt, "thinking": joined.thinking, "status": status,
                                     "tokens": sum(r.n_tokens for r, _ in results),
                                     "image_tokens": [r.image_tokens for r, _ in results if n_images]}]},
                "result": (joined.prompt, joined.thinking, [r.prompt for r, _ in results])}

    @staticmethod
    def _picture(llm, image, i, n_images):
        """Image i of the batch as RGB uint8, shrunk by the resize rule (core/llm_vision.py), and a note."""
        loaded = llm.model() if llm.backend == "llama_cpp" else None
        info = getattr(loaded, "projector", None)
        limit = info.max_pixels() if info is not None else llm_vision.MAX_PIXELS
        h, w = llm_vision.batch_shape(image)[1:3]
        rgb = llm_vision.picture(image, i, limit)
        nh, nw = rgb.shape[:2]
        size = f"{w}x{h}" + (f" -> {nw}x{nh}" if (nw, nh) != (w, h) else "")
        return rgb, f"image {i + 1}/{n_images}: {size}"


class _Joined:
    """The prompts of a batch as the node's 'prompt' / 'thinking' outputs: one prompt as it is; several, one per
    line (line breaks inside a prompt become spaces, so line i is image i's prompt, as Prompt Batch reads it)."""

    def __init__(self, results):
        prompts = [r.prompt for r, _ in results]
        thinking = [r.thinking for r, _ in results if r.thinking]
        if len(prompts) == 1:
            self.prompt = prompts[0]
        else:
            self.prompt = "\n".join(" ".join(p.split()) for p in prompts)
        self.thinking = "\n\n".join(thinking)


def _status(results, max_tokens):
    if len(results) == 1:
        result, note = results[0]
        text = result.message(max_tokens)
        return f"{text}; {note}" if note else text
    parts = [f"{i + 1}: {r.message(max_tokens)}" for i, (r, _) in enumerate(results)]
    return f"{len(results)} prompts. " + " | ".join(parts)


NODE_CLASS_MAPPINGS = {
    "LeanLLMLoader": LeanLLMLoader,
    "LeanLLMPrompt": LeanLLMPrompt,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LeanLLMLoader": "Local LLM Loader (GGUF)",
    "LeanLLMPrompt": "LLM Prompt Writer (local LLM)",
}
