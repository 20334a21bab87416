"""Tier 2: LeanCheckpointLoader against the stock CheckpointLoaderSimple for the SD1.5 fixture stored as fp16,
fp32, bf16, old-style scaled fp8 and, on hosts with mixed-precision layers, the ``.comfy_quant`` layout
(lean_testlib.sd15_variants): the same pixels on every host.  The files are made from the fixture's narrow variant
(SD1.5's every key and block, the UNet at 320 channels, the text encoder and VAE at full size): what is checked is
how each storage format is read, which the UNet's width does not change (the full-size file's load is checked in
tests/test_tier2_checkpoint.py); 0.6-1.2 GB per variant instead of 1.8-4 GB, and each load and sampling that much
less."""
import json

import numpy as np
import pytest
from PIL import Image

from lean_testlib import graphs, harness, sd15_variants

pytestmark = pytest.mark.tier2


def image(host, entry):
    files = host.output_files(entry)
    assert len(files) == 1, files
    return np.asarray(Image.open(files[0]))


def host_reads_comfy_quant(host):
    """Read from the host's own source, not from the pack: ``comfy/ops.py`` builds MixedPrecisionOps (0.3.76 and
    later) and ``comfy/utils.py`` detects layers by their ``.comfy_quant`` key."""
    root = host.comfy_path / "comfy"
    return ("def mixed_precision_ops" in (root / "ops.py").read_text()
            and "comfy_quant" in (root / "utils.py").read_text())


# fp32 and bf16 are variants of fp16 (marker one_host: CI runs them on 0.33.0 only)
@pytest.mark.parametrize("variant", ["fp16", *[pytest.param(v, marks=pytest.mark.one_host) for v in ("fp32", "bf16")],
                                     "scaled_fp8", "comfy_quant"])
def test_lean_loader_gives_stock_pixels(comfy, sd15n_ckpt, variant):
    if variant == "comfy_quant" and not host_reads_comfy_quant(comfy):
        pytest.skip("this ComfyUI has no mixed-precision layers (MixedPrecisionOps, .comfy_quant keys came in "
                    "0.3.76): its own CheckpointLoaderSimple cannot read the file either")
    src = sd15n_ckpt if variant == "fp16" else sd15_variants.sd15_variant(variant, sd15n_ckpt)
    name = f"lean_sd15n_{variant}.safetensors"
    harness.link_model(comfy.base, "checkpoints", src, name)
    comfy.free()
    log0 = len(comfy.log())
    ref = image(comfy, comfy.run(graphs.txt2img(ckpt=name, prefix=f"fmt_stock_{variant}")))
    comfy.free()
    p = graphs.txt2img(ckpt=name, prefix=f"fmt_lean_{variant}")
    p["1"] = {"class_type": "LeanCheckpointLoader", "inputs": {"ckpt_name": name, "load_mode": "mmap",
                                                               "weight_dtype": "auto", "load_clip": True,
                                                               "load_vae": True}}
    entry = comfy.run(p)
    got = image(comfy, entry)
    comfy.free()
    assert ref.std() > 0
    assert np.array_equal(got, ref), f"{variant}: Lean loader's image differs from CheckpointLoaderSimple's"
    log = comfy.log()[log0:].splitlines()
    # whatever key the host's own loader warns about (unet missing/unexpected) Lean may report too; nothing else
    host_warned = " ".join(line for line in log if "unet missing" in line or "unet unexpected" in line)
    for line in log:
        if "[Lean Checkpoint]" in line and ("no place for" in line or "missing from the file" in line):
            keys = line.split(": ")[-1].strip("[]").replace("'", "").split(", ")
            assert all(k in host_warned for k in keys), f"{variant}: Lean's load warned beyond the host's: {line[:600]}"
    report = entry["outputs"]["1"]["text"][0]
    if variant in ("scaled_fp8", "comfy_quant"):
        assert "from the file" in report, report  # the report names the host's quantization
    if variant == "comfy_quant":  # the host itself took it as mixed precision, for both loads
        assert any("Detected mixed precision quantization" in line for line in log), "\n".join(log[-40:])


def test_scaled_fp8_fixture_layout(sd15n_ckpt):
    """The fixture's layout, checked from the file (independent of the loader): fp8 Linear weights, a float32
    scalar scale_weight beside each, the marker, and weights * scale close to the fp16 source."""
    import torch
    from safetensors import safe_open
    path = sd15_variants.sd15_variant("scaled_fp8", sd15n_ckpt)
    with safe_open(str(path), "pt") as f, safe_open(str(sd15n_ckpt), "pt") as g:
        keys = set(f.keys())
        assert "model.diffusion_model.scaled_fp8" in keys
        assert f.get_tensor("model.diffusion_model.scaled_fp8").dtype == torch.float8_e4m3fn
        scales = [k for k in keys if k.endswith(".scale_weight")]
        assert len(scales) > 100
        k = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
        w, s = f.get_tensor(k), f.get_tensor(k[:-len("weight")] + "scale_weight")
        assert w.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and s.ndim == 0
        ref = g.get_tensor(k).float()
        err = (w.float() * s - ref).abs().max() / ref.abs().max()
        assert err < 0.07, err
        assert f.get_tensor("model.diffusion_model.input_blocks.0.0.weight").dtype == torch.float16


def test_comfy_quant_fixture_layout(sd15n_ckpt):
    """The mixed-precision fixture, checked from the file: per layer an fp8 weight, a float32 scalar weight_scale
    and a uint8 comfy_quant tensor holding the JSON {"format": "float8_e4m3fn"}; no scaled_fp8 marker; weights *
    scale close to the fp16 source; the layers with a comfy_quant key are exactly the fp8 weights."""
    import torch
    from safetensors import safe_open
    path = sd15_variants.sd15_variant("comfy_quant", sd15n_ckpt)
    with safe_open(str(path), "pt") as f, safe_open(str(sd15n_ckpt), "pt") as g:
        keys = set(f.keys())
        assert not any(k.endswith("scaled_fp8") or k.endswith(".scale_weight") for k in keys)
        layers = {k[:-len(".comfy_quant")] for k in keys if k.endswith(".comfy_quant")}
        fp8 = {k[:-len(".weight")] for k in keys if k.endswith(".weight")
               and f.get_slice(k).get_dtype() == "F8_E4M3"}
        assert len(layers) > 100 and layers == fp8
        assert all(x.startswith("model.diffusion_model.") for x in layers)
        layer = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q"
        conf = f.get_tensor(layer + ".comfy_quant")
        assert conf.dtype == torch.uint8 and conf.ndim == 1
        assert json.loads(bytes(conf.tolist()).decode("utf-8")) == {"format": "float8_e4m3fn"}
        w, s = f.get_tensor(layer + ".weight"), f.get_tensor(layer + ".weight_scale")
        assert w.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and s.ndim == 0
        ref = g.get_tensor(layer + ".weight").float()
        err = (w.float() * s - ref).abs().max() / ref.abs().max()
        assert err < 0.07, err
        assert f.get_tensor("model.diffusion_model.input_blocks.0.0.weight").dtype == torch.float16
