"""Lean Nodes: a ComfyUI custom-node pack (V1 API).

Every module of ``nodes/`` is imported on its own.  A module that fails (an optional
package missing, say) costs only its own nodes: the log gets one line naming the module
and the reason, and every other node still loads.  Heavy packages (cv2, llama_cpp,
safetensors work) are imported inside the functions that need them, so importing the
pack stays well under 0.1 s.
"""
import importlib
import logging
import os

WEB_DIRECTORY = "./web"

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
FAILED_MODULES = {}

_log = logging.getLogger("lean")


def _node_modules():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodes")
    for fname in sorted(os.listdir(here)):
        if fname.endswith(".py") and not fname.startswith("_"):
            yield fname[:-3]


def _register_all():
    for name in _node_modules():
        try:
            module = importlib.import_module(f".nodes.{name}", __name__)
        except Exception as e:  # one failing module never hides the others
            FAILED_MODULES[name] = f"{type(e).__name__}: {e}"
            _log.warning("[Lean Nodes] module nodes/%s.py not loaded: %s: %s", name, type(e).__name__, e)
            continue
        NODE_CLASS_MAPPINGS.update(getattr(module, "NODE_CLASS_MAPPINGS", {}))
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))


_register_all()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
