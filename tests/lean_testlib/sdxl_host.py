"""A tier-2 host of its own with the SDXL fixture as models/checkpoints/lean_sdxl.safetensors (and any LoRAs),
the test probe installed.  One SDXL model is ~14 GB as fp32 on the CPU: give each host one SDXL model at most and
stop it before another SDXL host starts."""
import pytest

from . import harness, prereq, probe_node, sdxl_ckpt

CKPT = "lean_sdxl.safetensors"


def start(tmp_path_factory, tag, loras=None, extra_args=()):
    """loras: {name without .safetensors: path}."""
    path, why = harness.find_host()
    if not path:
        pytest.skip(prereq(f"tier 2 skipped: no ComfyUI host found ({why})"))
    base = tmp_path_factory.mktemp(f"sdxl_{tag}")
    harness.make_base_dir(base)
    probe_node.install(base)
    harness.link_model(base, "checkpoints", sdxl_ckpt.sdxl_checkpoint(), CKPT)
    for name, src in (loras or {}).items():
        harness.link_model(base, "loras", src, name + ".safetensors")
    return harness.ComfyHost.start(path, base, extra_args=list(extra_args))
