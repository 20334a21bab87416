"""A tier-2 host of its own with the SDXL fixture as models/checkpoints/lean_sdxl.safetensors (and any LoRAs),
the test probe installed.  One SDXL model is ~14 GB as fp32 on the CPU: give each host one SDXL model at most and
stop it before another SDXL host starts."""
from . import harness, probe_node, sdxl_ckpt

CKPT = "lean_sdxl.safetensors"


def _setup(base, loras):
    probe_node.install(base)
    harness.link_model(base, "checkpoints", sdxl_ckpt.sdxl_checkpoint(), CKPT)
    for name, src in (loras or {}).items():
        harness.link_model(base, "loras", src, name + ".safetensors")


def own(tmp_path_factory, tag, loras=None, extra_args=()):
    """A context manager (harness.own_host) for an SDXL host of its own.  loras: {name without .safetensors: path}."""
    return harness.own_host(tmp_path_factory, f"sdxl_{tag}", setup=lambda base: _setup(base, loras),
                            extra_args=list(extra_args))


def start(tmp_path_factory, tag, loras=None, extra_args=()):
    """The same host, started and returned (the caller stops it)."""
    path = harness.require_host()
    base = harness.make_base_dir(tmp_path_factory.mktemp(f"sdxl_{tag}"))
    _setup(base, loras)
    return harness.ComfyHost.start(path, base, extra_args=list(extra_args))
