"""HTTP routes for the browser extension (web/lean.*.js), under /lean/.

GET /lean/loras -> {"loras": [{"name": "add_detail.safetensors", "stem": "add_detail",
                              "triggers": ["detailed", ...]}, ...]}
    Lists the host's `loras` folder(s) (the names LoraLoader offers) with trigger words taken from each
    .safetensors file's own metadata: `modelspec.trigger_phrase` when present, then `ss_tag_frequency` (kohya
    training tags, most frequent first).  Registered only when no other Lean module (nodes/lora.py) serves
    the path already; web/lean.loraAutocomplete.js needs only `name` and `triggers`.  Only the JSON header is read (never the tensors), only for files
    inside a registered loras folder, and the result is cached per file by (mtime, size).
"""
import json
import logging
import os
import struct
import threading

log = logging.getLogger("lean")

MAX_HEADER = 100 * 1024 * 1024   # the safetensors format's own limit
MAX_TRIGGERS = 12
_cache = {}                      # abspath -> ((mtime_ns, size), triggers)
_lock = threading.Lock()


def read_safetensors_metadata(path):
    """The `__metadata__` dict of a .safetensors file, reading only its header.  {} when there is none;
    ValueError for a file that is not safetensors."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{os.path.basename(path)}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > MAX_HEADER:
            raise ValueError(f"{os.path.basename(path)}: header size {n} is not a safetensors header")
        raw = f.read(n)
    if len(raw) != n:
        raise ValueError(f"{os.path.basename(path)}: truncated safetensors header")
    header = json.loads(raw.decode("utf-8"))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def trigger_words(meta, limit=MAX_TRIGGERS):
    """Trigger words from safetensors metadata: modelspec.trigger_phrase first, then the most frequent
    kohya training tags (ss_tag_frequency: {"dataset": {"tag": count}}, a JSON string)."""
    words = []
    phrase = meta.get("modelspec.trigger_phrase")
    if isinstance(phrase, str):
        words += [w.strip() for w in phrase.split(",") if w.strip()]
    freq = meta.get("ss_tag_frequency")
    if isinstance(freq, str):
        try:
            freq = json.loads(freq)
        except ValueError:
            freq = None
    if isinstance(freq, dict):
        totals = {}
        for tags in freq.values():
            if isinstance(tags, dict):
                for tag, count in tags.items():
                    tag = str(tag).strip()
                    if tag and isinstance(count, (int, float)):
                        totals[tag] = totals.get(tag, 0) + count
        words += [t for t, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    seen, out = set(), []
    for w in words:
        if w.lower() not in seen:
            seen.add(w.lower())
            out.append(w)
    return out[:limit]


def _inside(path, roots):
    p = os.path.abspath(path)
    for r in roots:
        r = os.path.abspath(r)
        try:
            if os.path.commonpath([p, r]) == r and p != r:
                return True
        except ValueError:  # different drives
            pass
    return False


def _triggers_for(path):
    try:
        st = os.stat(path)
    except OSError:
        return []
    key = (st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(path)
    if hit and hit[0] == key:
        return hit[1]
    triggers = []
    if path.lower().endswith((".safetensors", ".sft")):
        try:
            triggers = trigger_words(read_safetensors_metadata(path))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            log.debug("[Lean Nodes] /lean/loras: no metadata from %s: %s", path, e)
    with _lock:
        _cache[path] = (key, triggers)
    return triggers


def list_loras():
    import folder_paths
    roots = folder_paths.get_folder_paths("loras")
    out = []
    for name in folder_paths.get_filename_list("loras"):
        path = folder_paths.get_full_path("loras", name)
        if not path or not _inside(path, roots):
            continue  # never read outside a registered loras folder
        stem = os.path.splitext(name.replace("\\", "/"))[0]
        out.append({"name": name, "stem": stem, "triggers": _triggers_for(path)})
    return {"loras": out}


def _register_routes():
    try:
        from aiohttp import web
        from server import PromptServer
    except Exception:  # no server (tier-1 tests, scripts): no route
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return False
    if any(getattr(r, "path", None) == "/lean/loras" and getattr(r, "method", None) == "GET" for r in instance.routes):
        # nodes/lora.py (the LoRA feature) serves the same listing; one handler per path
        log.debug("[Lean Nodes] /lean/loras is already served by another Lean module")
        return False

    @instance.routes.get("/lean/loras")
    async def lean_loras(request):
        import asyncio
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, list_loras)
        except Exception as e:  # the route never takes the server down
            log.warning("[Lean Nodes] /lean/loras failed: %s: %s", type(e).__name__, e)
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=500)
        return web.json_response(data)

    return True


_register_routes()
