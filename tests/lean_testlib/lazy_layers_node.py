"""A test-only custom node module that makes a CPU host build its layers the way DynamicVRAM does.

On ComfyUI 0.29+ with ``comfy.memory_management.aimdo_enabled``, ``comfy.ops.disable_weight_init.Linear`` and
``Embedding`` are created with ``weight=None`` and get a parameter only in ``_lazy_load_from_state_dict``.
comfy-aimdo needs an NVIDIA GPU, so this module switches ``aimdo_enabled`` on only inside those two classes'
``__init__`` and ``_load_from_state_dict`` (casts and sampling stay on the legacy path).  Each lazily built
layer is counted; ``host_caps_node.TestHostCaps_lean`` writes the count (``lazy``) with what it saves.

Not part of the pack: ``install(base)`` links this file into a test host's custom_nodes/ (before it starts).
"""
import functools
import logging

COUNT = {"lazy_init": 0, "lazy_load": 0}


def _wrap(cls, name, counter):
    import comfy.memory_management
    orig = getattr(cls, name)

    @functools.wraps(orig)
    def wrapper(self, *a, **kw):
        before = comfy.memory_management.aimdo_enabled
        comfy.memory_management.aimdo_enabled = True
        try:
            return orig(self, *a, **kw)
        finally:
            comfy.memory_management.aimdo_enabled = before
            if counter == "lazy_init" and getattr(self, "weight", 0) is None:
                COUNT["lazy_init"] += 1
            elif counter == "lazy_load":
                COUNT["lazy_load"] += 1

    setattr(cls, name, wrapper)


def _patch():
    import comfy.ops
    for cls in (comfy.ops.disable_weight_init.Linear, comfy.ops.disable_weight_init.Embedding):
        _wrap(cls, "__init__", "lazy_init")
        _wrap(cls, "_load_from_state_dict", "lazy_load")
    logging.info("[lean test] lazy layers: aimdo_enabled is switched on inside disable_weight_init.Linear/Embedding")


if not __name__.startswith("lean_testlib"):  # imported by the host as a custom node (not by the test itself)
    _patch()


NODE_CLASS_MAPPINGS = {}  # the count is read by host_caps_node.TestHostCaps_lean


def install(base):
    from .probe_node import link_into
    return link_into(base, __file__, "lean_test_lazy_layers")
