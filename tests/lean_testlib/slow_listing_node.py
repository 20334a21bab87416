"""A test-only custom node module: makes the next LoRA folder listing slow.  Not part of the pack:
``install(base)`` links it into a test host's custom_nodes/ before the host starts.

POST /lean_test/slow_loras {"seconds": s}: the next ``folder_paths.get_filename_list("loras")`` call (the one
GET /lean/loras makes) sleeps ``s`` seconds first, as a slow or network disk would, wherever it runs: in the
event loop (the old handler) or in a worker thread (the new one).
"""
import os
import pathlib
import threading
import time

NODE_CLASS_MAPPINGS = {}

_STATE = {"seconds": 0.0, "calls": 0}
_LOCK = threading.Lock()


def _register():
    try:
        import folder_paths
        from aiohttp import web
        from server import PromptServer
    except Exception:
        return
    inst = getattr(PromptServer, "instance", None)
    if inst is None:
        return
    real = folder_paths.get_filename_list

    def get_filename_list(folder_name, *a, **kw):
        if folder_name == "loras":
            with _LOCK:
                s, _STATE["seconds"] = _STATE["seconds"], 0.0
            if s:
                _STATE["calls"] += 1
                time.sleep(s)
        return real(folder_name, *a, **kw)

    folder_paths.get_filename_list = get_filename_list

    @inst.routes.post("/lean_test/slow_loras")
    async def lean_test_slow_loras(request):
        body = await request.json()
        with _LOCK:
            _STATE["seconds"] = float(body.get("seconds", 0))
        return web.json_response({"ok": True, "slow_calls": _STATE["calls"]})


_register()


def install(base):
    dst = pathlib.Path(base) / "custom_nodes" / "lean_test_slow_listing.py"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(pathlib.Path(__file__).resolve(), dst)
    return dst
