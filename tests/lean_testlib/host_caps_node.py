"""A test-only custom node that writes what the pack's nodes/_host.py detects inside the running host to
<output>/probe/<name>.json, so a tier-2 test can check it against what it knows of each host release.

Not part of the pack: ``install(base)`` links this file into a test host's custom_nodes/ as its own module.
"""
import json
import os
import sys


def _pack_host_module():
    for name, mod in list(sys.modules.items()):
        if name.endswith(".nodes._host") and hasattr(mod, "quant_style"):
            return mod
    raise RuntimeError("the Lean pack's nodes/_host.py is not imported in this host")


class TestHostCaps_lean:
    DESCRIPTION = "Test: saves what nodes/_host.py detects (the functions the loaders call) under output/probe/."
    CATEGORY = "testing"
    FUNCTION = "probe"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "hostcaps", "tooltip": "file stem"})},
                "optional": {"model": ("MODEL", {"tooltip": "run after this model is loaded"})}}

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")

    def probe(self, name, model=None):
        import folder_paths
        h = _pack_host_module()
        # the detections the loaders use (nodes/checkpoint.py, nodes/diffusion_model.py), called as they call them
        caps = {"dynamic_vram": h.dynamic_vram(), "patcher_class": h.patcher_class().__name__,
                "quant_style": h.quant_style(), "convert_old_quants": h.convert_old_quants() is not None,
                # Prompt Batch's padding (nodes/prompt_batch.py): Flux.2's own left padding, Qwen-Image's mask
                "flux2_text_floor": h._flux2_text_floor(),
                "qwen_image_reads_mask": h._qwen_image_attention_reads_mask()}
        lazy = next((m for n, m in list(sys.modules.items()) if n.endswith("lean_test_lazy_layers")), None)
        caps["lazy"] = dict(lazy.COUNT) if lazy is not None else None
        out = os.path.join(folder_paths.get_output_directory(), "probe")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(caps, f)
        return {"ui": {"probe": [name]}}


class TestFreeMemory_lean:
    """Asks the host's own memory manager for room the way loading an image model does
    (``comfy.model_management.free_memory``), needing ``bytes_over_free`` more than is free on the torch device,
    and saves the class names of the models it unloaded."""
    DESCRIPTION = "Test: comfy.model_management.free_memory(free + n, device); saves what it unloaded."
    CATEGORY = "testing"
    FUNCTION = "free"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "freed", "tooltip": "file stem"}),
                             "bytes_over_free": ("INT", {"default": 1 << 20, "min": 1, "max": 1 << 50,
                                                         "tooltip": "bytes needed beyond what is free"})},
                "optional": {"after": ("STRING", {"forceInput": True, "tooltip": "run after this output"})}}

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")

    def free(self, name, bytes_over_free, after=None):
        import comfy.model_management as mm
        import folder_paths
        dev = mm.get_torch_device()
        before = [type(m.model.model).__name__ for m in mm.current_loaded_models]
        out = mm.free_memory(mm.get_free_memory(dev) + bytes_over_free, dev)
        unloaded = [type(m.model.model).__name__ for m in (out or [])]
        d = os.path.join(folder_paths.get_output_directory(), "probe")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name + ".json"), "w") as f:
            json.dump({"before": before, "unloaded": unloaded,
                       "after": [type(m.model.model).__name__ for m in mm.current_loaded_models]}, f)
        return {"ui": {"probe": [name]}}


class TestRamRelease_lean:
    """Runs the RAM-pressure release the host itself runs before pinning or loading weights
    (``comfy.memory_management.extra_ram_release(target)``, 0.33 and later) with ``target`` = the RAM available now
    plus ``over_available`` bytes (negative: below what is available, so no pressure), and saves what it returned
    and the class names in the host's loaded-model list before and after."""
    DESCRIPTION = "Test: comfy.memory_management.extra_ram_release(available + n); saves what it freed."
    CATEGORY = "testing"
    FUNCTION = "release"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "ram", "tooltip": "file stem"}),
                             "over_available": ("INT", {"default": 1 << 40, "min": -(1 << 50), "max": 1 << 50,
                                                        "tooltip": "target RAM beyond what is available"})}}

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")

    def release(self, name, over_available):
        import comfy.memory_management as mmgmt
        import comfy.model_management as mm
        import folder_paths
        import psutil
        names = lambda: [type(m.model.model).__name__ for m in mm.current_loaded_models]  # noqa: E731
        before = names()
        available = psutil.virtual_memory().available
        hooked = getattr(mmgmt, "extra_ram_release_callback", None) is not None
        freed = mmgmt.extra_ram_release(max(0, available + over_available))
        d = os.path.join(folder_paths.get_output_directory(), "probe")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name + ".json"), "w") as f:
            json.dump({"before": before, "after": names(), "freed": freed, "hooked": hooked,
                       "available": available}, f)
        return {"ui": {"probe": [name]}}


NODE_CLASS_MAPPINGS = {"TestHostCaps_lean": TestHostCaps_lean, "TestFreeMemory_lean": TestFreeMemory_lean,
                       "TestRamRelease_lean": TestRamRelease_lean}


def install(base):
    from .probe_node import link_into
    return link_into(base, __file__, "lean_test_host_caps")


def read(base, name="hostcaps"):
    import pathlib
    return json.loads((pathlib.Path(base) / "output" / "probe" / f"{name}.json").read_text())
