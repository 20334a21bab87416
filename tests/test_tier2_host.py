"""Tier 2: what nodes/_host.py detects inside each real host, and the Lean loader on a host that builds its
layers lazily (DynamicVRAM's layer construction, switched on on the CPU by a test-only module)."""
import json

import numpy as np
import pytest
from PIL import Image

from lean_testlib import graphs, harness, host_caps_node, lazy_layers_node, prereq, probe_node

pytestmark = pytest.mark.tier2

CKPT = "lean_sd15.safetensors"


def _version():
    path = harness.require_host()
    return path, harness.host_release(path)


def image(host, entry):
    files = host.output_files(entry)
    assert len(files) == 1, files
    return np.asarray(Image.open(files[0]))


def lean(prefix, **kw):
    p = graphs.txt2img(ckpt=CKPT, prefix=prefix)
    inputs = {"ckpt_name": CKPT, "load_mode": "mmap", "weight_dtype": "auto", "load_clip": True, "load_vae": True}
    inputs.update(kw)
    p["1"] = {"class_type": "LeanCheckpointLoader", "inputs": inputs}
    return p


@pytest.fixture(scope="module")
def probe_host(tmp_path_factory, sd15_ckpt):
    """A host with the capabilities probe and, on releases that have lazily built layers, the module that
    switches them on (test-only custom nodes, linked before the host starts), with fp16 UNet and text-encoder weights
    (the models whose Linear/Embedding layers are built lazily).  The VAE stays in the host's CPU default (fp32): its
    layers are convolutions, never built lazily, and fp16 convolutions on the CPU are slow (with --fp16-vae each
    64x64 decode took ~55 s on 0.33.0, 2 cores: 2 of this module's 2.4 minutes)."""
    path, version = _version()

    def setup(base):
        host_caps_node.install(base)
        probe_node.install(base)  # the no-op prompt of h.free(settle=True)
        if version >= (0, 29, 0):
            lazy_layers_node.install(base)
        harness.link_model(base, "checkpoints", sd15_ckpt, CKPT)

    with harness.own_host(tmp_path_factory, "host_base", setup=setup,
                          extra_args=["--fp16-unet", "--fp16-text-enc"]) as h:
        h.version = version
        yield h


def test_host_capabilities_match_the_release(probe_host):
    """References come from what each release is known to ship, not from the detection code."""
    comfy, version = probe_host, probe_host.version
    comfy.run({"1": {"class_type": "TestHostCaps_lean", "inputs": {"name": "hostcaps"}}})
    caps = host_caps_node.read(comfy.base)
    assert caps["dynamic_vram"] is False  # --cpu: comfy-aimdo is never initialised
    assert caps["patcher_class"] == "ModelPatcher"  # CoreModelPatcher is ModelPatcher until aimdo is on
    if version >= (0, 3, 76):
        assert caps["quant_style"] == "quant_config" and caps["convert_old_quants"] is True
    else:
        assert caps["quant_style"] == "scaled_fp8" and caps["convert_old_quants"] is False
    if version >= (0, 33, 0):  # model_base.Flux2.extra_conds pads cross_attn on the left to 512 tokens;
        assert caps["flux2_text_floor"] == 512  # QwenImage's Attention builds its joint mask from the text mask
        assert caps["qwen_image_reads_mask"] is True
    elif version <= (0, 3, 64):  # no Flux2 model yet; Qwen-Image's attention takes the mask and never uses it
        assert caps["flux2_text_floor"] is None and caps["qwen_image_reads_mask"] is False


def test_lazy_layers_lean_loader_gives_stock_pixels(probe_host):
    h = probe_host
    if h.version < (0, 29, 0):
        pytest.skip(f"ComfyUI {h.version}: no lazily built layers on this release")
    stock = graphs.txt2img(ckpt=CKPT, prefix="lazy_stock")
    stock["9"] = {"class_type": "TestHostCaps_lean", "inputs": {"name": "lazy_stock", "model": ["1", 0]}}
    ref = image(h, h.run(stock))
    counts = host_caps_node.read(h.base, "lazy_stock")["lazy"]
    assert counts["lazy_init"] > 100, counts  # the layers really were built without weights
    assert ref.std() > 0
    h.free(settle=True)
    entry = h.run(lean("lazy_lean"))
    got = image(h, entry)
    assert np.array_equal(got, ref), "Lean loader on lazily built layers differs from CheckpointLoaderSimple"
    assert "no place for" not in h.log()
    # settled: an idle host carries out a plain /free only after its next prompt, which would reset the node cache
    # in the middle of the next test's runs (the kept-loaded LLM test failed once that way)
    h.free(settle=True)


def test_llm_kept_loaded_is_freed_when_the_host_needs_room(probe_host):
    """A llama.cpp model kept loaded is one of the host's loaded models: comfy.model_management.free_memory,
    which the host calls before loading an image model, unloads it when room is short; the next run loads it
    again."""
    pytest.importorskip("llama_cpp", reason=prereq("llama-cpp-python not installed"))
    from lean_testlib import tiny_gguf
    h = probe_host
    harness.link_model(h.base, "llm", tiny_gguf.tiny_model("chatml"), "tiny.gguf")
    g = graphs.llm_preview(loader=graphs.llm_loader(model="tiny.gguf", n_ctx=512, n_gpu_layers=0),
                           idea="a boat", seed=3, max_tokens=4, keep_loaded=True)
    g["f"] = {"class_type": "TestFreeMemory_lean", "inputs": {"name": "freed", "bytes_over_free": 1 << 20,
                                                              "after": ["p", 0]}}
    h.run(g)
    freed = json.loads((h.base / "output" / "probe" / "freed.json").read_text())
    assert "LeanLLM" in freed["before"], freed  # registered with the host while kept loaded
    assert "LeanLLM" in freed["unloaded"] and "LeanLLM" not in freed["after"], freed
    assert "freed tiny.gguf: ComfyUI's memory manager unloaded it" in h.log()
    reloads = h.log().count("[Lean LLM] loading tiny.gguf again (it was freed)")
    g2 = graphs.llm_preview(loader=graphs.llm_loader(model="tiny.gguf", n_ctx=512, n_gpu_layers=0),
                            idea="a boat at night", seed=3, max_tokens=4, keep_loaded=True)
    entry = h.run(g2)
    assert entry["outputs"]["p"]["lean_llm"][0]["tokens"] >= 1
    assert h.log().count("[Lean LLM] loading tiny.gguf again (it was freed)") == reloads + 1
