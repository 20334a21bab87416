"""A test-only custom node module that adds GET /lean_test/routes: every (method, path) the host's aiohttp
router knows, read at request time (after every custom node registered its routes).  Not part of the pack:
``install(base)`` links it into a test host's custom_nodes/ before the host starts."""
import os
import pathlib

NODE_CLASS_MAPPINGS = {}


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


_register()


def install(base):
    dst = pathlib.Path(base) / "custom_nodes" / "lean_test_route_lister.py"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(pathlib.Path(__file__).resolve(), dst)
    return dst
