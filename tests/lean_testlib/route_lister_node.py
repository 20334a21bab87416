"""A test-only custom node module with two routes.  Not part of the pack: ``install(base)`` links it into a
test host's custom_nodes/ before the host starts.

* GET /lean_test/routes: every (method, path) the host's aiohttp router knows, read at request time (after
  every custom node registered its routes);
* GET /lean_test/malloc: glibc's ``mallinfo2()`` of the host process (heap bytes in use and free), so the
  soak can tell memory in use from freed memory glibc keeps ({} where glibc >= 2.33 is not the allocator).
"""
import ctypes
import ctypes.util
import os
import pathlib

NODE_CLASS_MAPPINGS = {}

MALLINFO_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                   "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in MALLINFO_FIELDS]


def mallinfo():
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    m = fn()
    return {f: int(getattr(m, f)) for f in MALLINFO_FIELDS}


def _register():
    try:
        from aiohttp import web
        from server import PromptServer
    except Exception:
        return
    inst = getattr(PromptServer, "instance", None)
    if inst is None:
        return

    @inst.routes.get("/lean_test/routes")
    async def lean_test_routes(request):
        out = []
        for r in request.app.router.routes():
            info = r.resource.get_info() if r.resource is not None else {}
            out.append([r.method, info.get("path") or info.get("formatter") or info.get("prefix") or ""])
        return web.json_response(out)

    @inst.routes.get("/lean_test/malloc")
    async def lean_test_malloc(request):
        return web.json_response(mallinfo())


_register()


def install(base):
    dst = pathlib.Path(base) / "custom_nodes" / "lean_test_route_lister.py"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(pathlib.Path(__file__).resolve(), dst)
    return dst
