"""Tier 2: the pack inside a real ComfyUI."""
import re

import numpy as np
import pytest
from PIL import Image

from lean_testlib import graphs, sd15
from lean_testlib import declared_nodes
from lean_testlib.harness import PACK_DIR_NAME

pytestmark = pytest.mark.tier2

EXPECTED_NODES = declared_nodes()


def lean_nodes(info):
    return {k: v for k, v in info.items() if k.startswith("Lean")}


def test_pack_imports_cleanly(comfy):
    log = comfy.log()
    # __init__.py's line for a module that failed to import (the session host is shared: its log also holds other
    # tests' reports, whose "not loaded: ..." names LoRA keys, so only that exact line counts)
    failed = [l for l in log.splitlines() if re.search(r"\[Lean Nodes\] module nodes/\S+\.py not loaded", l)]
    assert not failed, failed
    lines = [l for l in log.splitlines() if l.rstrip().endswith("/" + PACK_DIR_NAME)]
    assert lines, "the host never listed the pack in its import times:\n" + log[-3000:]
    assert "IMPORT FAILED" not in lines[0], lines[0]


def test_object_info_describes_every_lean_node(comfy):
    nodes = lean_nodes(comfy.object_info())
    assert set(nodes) >= EXPECTED_NODES, f"missing from /object_info: {EXPECTED_NODES - set(nodes)}"
    assert nodes, "no Lean node registered"
    for name, info in nodes.items():
        assert info.get("description"), f"{name} has no DESCRIPTION"
        assert info["category"].startswith("lean/"), (name, info["category"])
        for group in ("required", "optional"):
            for inp, spec in info["input"].get(group, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"


def test_stock_checkpoint_fixture_loads_and_samples(comfy_sd15):
    """The SD1.5 fixture goes through stock CheckpointLoaderSimple -> KSampler 1 step 64x64 -> SaveImage."""
    start = len(comfy_sd15.log())  # the host is shared by the session: read only what this prompt logged
    comfy_sd15.free()
    entry = comfy_sd15.run(graphs.txt2img(prefix="smoke"))
    files = comfy_sd15.output_files(entry)
    assert len(files) == 1 and files[0].is_file(), files
    img = np.asarray(Image.open(files[0]))
    assert img.shape == (64, 64, 3)
    assert img.std() > 0, "decoded image is flat"
    log = comfy_sd15.log()[start:]
    # The host (run at --verbose DEBUG) names every key it could not place.  A real
    # v1-5-pruned-emaonly file gives exactly these, and nothing else:
    allowed = {
        "clip missing": {"clip_l.logit_scale", "clip_l.transformer.text_projection.weight"},
        "clip unexpected": {"clip_l.transformer.text_model.embeddings.position_ids"},
        "left over keys": set(sd15.SCHEDULE_KEYS),
    }
    for pattern in ("unet missing", "unet unexpected", "Missing VAE keys", "Leftover VAE keys"):
        assert pattern not in log, f"host reported '{pattern}':\n{log[-3000:]}"
    for pattern, ok in allowed.items():
        for line in log.splitlines():
            if line.startswith(pattern):
                keys = set(re.findall(r"'([^']+)'", line))
                assert keys <= ok, f"{pattern}: unexpected {keys - ok}"
    assert "left over keys" in log, "run the host at --verbose DEBUG so key mismatches are logged"


def test_controlnet_fixture_loads_with_the_exact_layout(comfy_sd15):
    from lean_testlib import controlnet, harness, images
    import shutil
    harness.link_model(comfy_sd15.base, "controlnet", controlnet.sd15_controlnet(), "lean_controlnet_sd15.safetensors")
    shutil.copy(images.photo_png(), comfy_sd15.base / "input" / "lean_photo.png")
    g = graphs.txt2img(prefix="smoke_cn")
    g["10"] = {"class_type": "LoadImage", "inputs": {"image": "lean_photo.png"}}
    g["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "lean_controlnet_sd15.safetensors"}}
    g["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["2", 0], "negative": ["3", 0], "control_net": ["11", 0], "image": ["10", 0], "vae": ["1", 2],
        "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    g["5"]["inputs"]["positive"] = ["12", 0]
    g["5"]["inputs"]["negative"] = ["12", 1]
    entry = comfy_sd15.run(g)
    assert len(comfy_sd15.output_files(entry)) == 1
    log = comfy_sd15.log()
    assert "missing controlnet keys" not in log and "unexpected controlnet keys" not in log, log[-3000:]
    assert "error could not detect control model type" not in log
