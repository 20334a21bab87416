"""System Check (Lean): the `python scripts/lean.py doctor` report, from inside ComfyUI."""
import logging
import os
import time

import folder_paths

from ..core import doctor
from . import _host

log = logging.getLogger("lean")
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _folders():
    out = {}
    for name in doctor.FIT_FOLDERS:
        try:
            out[name] = list(folder_paths.get_folder_paths(name))
        except Exception:  # a folder the host does not know (llm before the LLM module registered it)
            out[name] = [os.path.join(folder_paths.models_dir, name)]
    return out


def _host_device():
    import comfy.model_management as mm
    try:
        dev = mm.get_torch_device()
        out = {"device": str(dev)}
        if getattr(dev, "type", "cpu") != "cpu":
            out["vram_total"] = int(mm.get_total_memory(dev))
            out["vram_free"] = int(mm.get_free_memory(dev))
        return out
    except Exception as e:
        return {"device": f"unknown ({type(e).__name__}: {e})"}


def system_report():
    facts = doctor.gather(_folders(), comfyui_version=_host.comfyui_version(), dynamic_vram=_host.dynamic_vram_state(),
                          host_device=_host_device(), pack_root=PACK_ROOT)
    return doctor.build_report(facts)


class LeanSystemCheck:
    DESCRIPTION = ("What this machine has and what fits, before deploying: each GPU torch sees (name, memory, compute "
                   "capability, driver), GPU topology (nvidia-smi topo -m), CPU, RAM, free disk per model folder, the "
                   "Python/torch/ComfyUI versions, whether DynamicVRAM is on, llama-cpp-python (GPU offload?) and "
                   "OpenCV; for each file in checkpoints, diffusion_models, loras and llm: size and dtype (from the "
                   "header, weights never read), fits in VRAM / needs --lowvram / CPU only, the n_gpu_layers that fit "
                   "beside the image model, and the ComfyUI flags that help. Same report as "
                   "`python scripts/lean.py doctor`.")
    CATEGORY = "lean/utils"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("The report as text (also shown on the node).",)
    FUNCTION = "check"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return time.time()  # the machine changes between runs: never cached

    def check(self):
        text = doctor.render_text(system_report())
        log.info("[Lean System Check] %s", text.replace("\n", " | ")[:2000])
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"LeanSystemCheck": LeanSystemCheck}
NODE_DISPLAY_NAME_MAPPINGS = {"LeanSystemCheck": "System Check (Lean)"}
