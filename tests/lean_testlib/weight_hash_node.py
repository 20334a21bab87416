"""A test-only custom node that hashes the bytes of one weight of a MODEL as it is stored in the host process
(after an optional LATENT input, so it runs after a sampler), and writes <output>/probe/<name>.json with the
sha256, the dtype and the shape.  Lets a tier-2 test check that the LoRA branch never touches a base weight.

Not part of the pack: a tier-2 test links it into the test host's custom_nodes/ (``install(base)``).
"""
import json
import os


class TestWeightHash_lean:
    DESCRIPTION = "Test: sha256 of one stored weight of the model."
    CATEGORY = "testing"
    FUNCTION = "hash"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "model"}),
                             "key": ("STRING", {"default": "", "tooltip": "diffusion_model state-dict key"}),
                             "name": ("STRING", {"default": "hash", "tooltip": "file stem"})},
                "optional": {"after": ("LATENT", {"tooltip": "run after this"})}}

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")

    def hash(self, model, key, name, after=None):
        import hashlib

        import folder_paths
        import torch
        p = model.model.diffusion_model.get_parameter(key)
        t = p.data.detach().to("cpu").contiguous()
        raw = t.view(torch.uint8) if t.element_size() == 1 else t.view(torch.int16 if t.element_size() == 2
                                                                        else torch.int32)
        out = os.path.join(folder_paths.get_output_directory(), "probe")
        os.makedirs(out, exist_ok=True)
        meta = {"sha256": hashlib.sha256(raw.numpy().tobytes()).hexdigest(), "dtype": str(t.dtype),
                "shape": list(t.shape), "class": type(p).__name__}
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(meta, f)
        return {"ui": {"probe": [name]}}


NODE_CLASS_MAPPINGS = {"TestWeightHash_lean": TestWeightHash_lean}


def install(base):
    from .probe_node import link_into
    return link_into(base, __file__, "lean_test_weight_hash")


def read(base, name):
    import pathlib
    return json.loads((pathlib.Path(base) / "output" / "probe" / f"{name}.json").read_text())
