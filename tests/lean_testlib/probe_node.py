"""A test-only custom node that writes what it receives to <output>/probe/<name>.* so a tier-2 test can
read tensors (conditioning, latents) and string lists from a real host run.

Not part of the pack: a tier-2 test links this file into the test host's custom_nodes/ as its own
module (``lean_testlib.probe.install(base)``).  It takes its inputs as lists (INPUT_IS_LIST), so it
also records how many times the upstream node produced an output (one entry per execution).
"""
import json
import os


class TestProbe_lean:
    DESCRIPTION = "Test probe: saves its inputs under output/probe/."
    CATEGORY = "testing"
    FUNCTION = "probe"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "probe", "tooltip": "file stem"})},
                "optional": {"conditioning": ("CONDITIONING", {"tooltip": "saved as safetensors"}),
                             "latent": ("LATENT", {"tooltip": "saved as safetensors"}),
                             "strings": ("STRING", {"forceInput": True, "tooltip": "saved as json"}),
                             "number": ("INT", {"forceInput": True, "tooltip": "saved as json"})}}

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")

    def probe(self, name, conditioning=None, latent=None, strings=None, number=None):
        import folder_paths
        from safetensors.torch import save_file
        name = name[0]
        out = os.path.join(folder_paths.get_output_directory(), "probe")
        os.makedirs(out, exist_ok=True)
        tensors, meta = {}, {"executions": {}}
        if conditioning is not None:
            meta["executions"]["conditioning"] = len(conditioning)
            for e, cond in enumerate(conditioning):
                for j, (c, d) in enumerate(cond):
                    tensors[f"cond.{e}.{j}"] = c.float().contiguous().cpu()
                    if d.get("pooled_output") is not None:
                        tensors[f"pooled.{e}.{j}"] = d["pooled_output"].float().contiguous().cpu()
                    if d.get("attention_mask") is not None:  # LLM encoders (Qwen-Image) carry their mask
                        tensors[f"mask.{e}.{j}"] = d["attention_mask"].float().contiguous().cpu()
                    meta.setdefault("keys", []).append(sorted(d))
        if latent is not None:
            meta["executions"]["latent"] = len(latent)
            for e, lat in enumerate(latent):
                tensors[f"latent.{e}"] = lat["samples"].float().contiguous().cpu()
        if strings is not None:
            meta["strings"] = list(strings)
        if number is not None:
            meta["number"] = list(number)
        if tensors:
            save_file(tensors, os.path.join(out, name + ".safetensors"))
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(meta, f)
        return {"ui": {"probe": [name]}}


class TestNoneClip_lean:
    """Gives a CLIP that is None (what a checkpoint without text encoder gives)."""
    DESCRIPTION = "Test: a None CLIP."
    CATEGORY = "testing"
    FUNCTION = "none"
    RETURN_TYPES = ("CLIP",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def none(self):
        return (None,)


NODE_CLASS_MAPPINGS = {"TestProbe_lean": TestProbe_lean, "TestNoneClip_lean": TestNoneClip_lean}


def link_into(base, src, module_name):
    """Link the test-only node file ``src`` into <base>/custom_nodes/<module_name>.py (before the host starts)."""
    import pathlib
    dst = pathlib.Path(base) / "custom_nodes" / f"{module_name}.py"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        dst.symlink_to(pathlib.Path(src).resolve())
    return dst


MODULE = "lean_test_probe"  # its name in a host's custom_nodes/


def install(base):
    """Link this file into <base>/custom_nodes/ (before the host starts)."""
    return link_into(base, __file__, MODULE)


def read(base, name):
    """(tensors dict, meta dict) a probe named `name` wrote in the host at `base`."""
    import pathlib
    d = pathlib.Path(base) / "output" / "probe"
    meta = json.loads((d / f"{name}.json").read_text())
    tensors = {}
    if (d / f"{name}.safetensors").exists():
        from safetensors.torch import load_file
        tensors = load_file(str(d / f"{name}.safetensors"))
    return tensors, meta
