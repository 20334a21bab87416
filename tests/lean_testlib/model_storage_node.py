"""A test-only custom node that records how a MODEL's parameters are stored in the host process (after an
optional LATENT input, so it runs after a sampler): per class name the count and the stored bytes, how many
carry ComfyUI-GGUF patches, and the logical fp32 size.  Lets a tier-2 test check that a GGUF model still holds
only its packed quantized tensors after a LoRA run (no dequantised copy in the model).

Not part of the pack: a tier-2 test links it into the test host's custom_nodes/ (``install(base)``).
"""
import json
import os


class TestModelStorage_lean:
    DESCRIPTION = "Test: how the model's parameters are stored (classes, bytes)."
    CATEGORY = "testing"
    FUNCTION = "record"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "model"}),
                             "name": ("STRING", {"default": "storage", "tooltip": "file stem"})},
                "optional": {"after": ("LATENT", {"tooltip": "run after this"})}}

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")

    def record(self, model, name, after=None):
        import folder_paths
        by_class, patched, logical = {}, 0, 0
        for _, p in model.model.diffusion_model.named_parameters():
            cls = type(p).__name__
            n, b = by_class.get(cls, (0, 0))
            # Tensor.numel/element_size are the stored data's (a GGMLTensor's packed bytes); .shape may be logical
            by_class[cls] = (n + 1, b + p.numel() * p.element_size())
            patched += bool(getattr(p, "patches", None))
            count = 1
            for d in p.shape:
                count *= int(d)
            logical += 4 * count
        out = os.path.join(folder_paths.get_output_directory(), "probe")
        os.makedirs(out, exist_ok=True)
        meta = {"classes": {k: {"count": v[0], "bytes": v[1]} for k, v in by_class.items()},
                "patched": patched, "logical_fp32_bytes": logical}
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(meta, f)
        return {"ui": {"probe": [name]}}


NODE_CLASS_MAPPINGS = {"TestModelStorage_lean": TestModelStorage_lean}


def install(base):
    from .probe_node import link_into
    return link_into(base, __file__, "lean_test_model_storage")


def read(base, name):
    import pathlib
    return json.loads((pathlib.Path(base) / "output" / "probe" / f"{name}.json").read_text())
