"""A tier-2 host of its own with the SDXL fixture as models/checkpoints/lean_sdxl.safetensors (narrow=True: the
narrow variant, sdxl_ckpt.NARROW, as lean_sdxln.safetensors) and any LoRAs, the test probe installed.  One
full-size SDXL model is ~14 GB as fp32 on the CPU: give each host one SDXL model at most and stop it before another
SDXL host starts."""
from . import harness, probe_node, sdxl_ckpt

CKPT = "lean_sdxl.safetensors"
CKPT_NARROW = "lean_sdxln.safetensors"


def _setup(base, loras, narrow=False):
    probe_node.install(base)
    harness.link_model(base, "checkpoints", sdxl_ckpt.sdxl_checkpoint(narrow=narrow),
                       CKPT_NARROW if narrow else CKPT)
    for name, src in (loras or {}).items():
        harness.link_model(base, "loras", src, name + ".safetensors")


def own(tmp_path_factory, tag, loras=None, extra_args=(), narrow=False):
    """A context manager (harness.own_host) for an SDXL host of its own.  loras: {name without .safetensors: path}."""
    return harness.own_host(tmp_path_factory, f"sdxl_{tag}", setup=lambda base: _setup(base, loras, narrow),
                            extra_args=list(extra_args))


def start(tmp_path_factory, tag, loras=None, extra_args=()):
    """The same host (full-size), started and returned (the caller stops it)."""
    path = harness.require_host()
    base = harness.make_base_dir(tmp_path_factory.mktemp(f"sdxl_{tag}"))
    _setup(base, loras)
    return harness.ComfyHost.start(path, base, extra_args=list(extra_args))
