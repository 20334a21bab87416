"""Tier 2: LeanCheckpointLoader inside a real ComfyUI, checked against the stock CheckpointLoaderSimple."""
import json
import pathlib
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from lean_testlib import graphs, harness, pagecache

pytestmark = pytest.mark.tier2

NODE = "LeanCheckpointLoader"
INPUTS = ["ckpt_name", "load_mode", "weight_dtype", "load_clip", "load_vae"]


def lean_txt2img(prefix, ckpt="lean_sd15.safetensors", load_mode="mmap", weight_dtype="auto", load_clip=True,
                 load_vae=True):
    p = graphs.txt2img(ckpt=ckpt, prefix=prefix)
    p["1"] = {"class_type": NODE, "inputs": {"ckpt_name": ckpt, "load_mode": load_mode, "weight_dtype": weight_dtype,
                                             "load_clip": load_clip, "load_vae": load_vae}}
    return p


def lean_vae_only(prefix, ckpt="lean_sd15.safetensors", **kw):
    """Lean loader -> VAEDecode(empty latent) -> SaveImage: uses the VAE, never CLIP or the sampler."""
    inputs = {"ckpt_name": ckpt, "load_mode": "mmap", "weight_dtype": "fp16", "load_clip": False, "load_vae": True}
    inputs.update(kw)
    return {
        "1": {"class_type": NODE, "inputs": inputs},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def image(host, entry):
    files = host.output_files(entry)
    assert len(files) == 1 and files[0].is_file(), files
    return np.asarray(Image.open(files[0]))


def report_of(entry):
    text = entry["outputs"]["1"]["text"]
    assert isinstance(text, list) and len(text) == 1
    return text[0]


def header_ranges(path):
    """key -> (start, end) absolute byte offsets, parsed here from the safetensors spec (independent of core/)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1]) for k, v in header.items()}


def image_alone(host, prompt):
    """The image of `prompt` run with nothing loaded before it, and nothing left loaded after it."""
    host.free()
    img = image(host, host.run(prompt))
    host.free()
    return img


@pytest.fixture(scope="module")
def stock_image(comfy_sd15):
    return image_alone(comfy_sd15, graphs.txt2img(prefix="ckpt_stock"))


NARROW = "lean_sd15n.safetensors"  # the SD1.5 fixture's narrow variant, for the storage-format and dtype checks


@pytest.fixture(scope="module")
def narrow_stock(comfy_sd15, sd15n_ckpt):
    """Stock CheckpointLoaderSimple's image of the narrow SD1.5 fixture (linked as NARROW): the reference of the
    dtype and .ckpt checks, whose claim is how a storage format or weight dtype is read, which the UNet's width does
    not change (the full-size file goes through every load mode and the fp16 check in this module)."""
    harness.link_model(comfy_sd15.base, "checkpoints", sd15n_ckpt, NARROW)
    return image_alone(comfy_sd15, graphs.txt2img(ckpt=NARROW, prefix="ckpt_stock_n"))


def test_node_contract(comfy):
    info = comfy.object_info(NODE)
    assert list(info["input"]["required"]) == INPUTS
    assert info["input_order"]["required"] == INPUTS
    assert info["output"] == ["MODEL", "CLIP", "VAE", "STRING"]
    assert info["display_name"] == "Load Checkpoint (mmap)"
    assert info["category"].startswith("lean/")
    modes = info["input"]["required"]["load_mode"]
    assert modes[0] == ["mmap", "read", "direct"] and modes[1]["default"] == "mmap"
    dts = info["input"]["required"]["weight_dtype"]
    assert dts[0] == ["auto", "fp16", "bf16", "fp32", "fp8_e4m3fn"] and dts[1]["default"] == "auto"


# mmap on both hosts; read is a variant of it (marker one_host: CI runs it on 0.33.0 only)
@pytest.mark.parametrize("mode", ["mmap", pytest.param("read", marks=pytest.mark.one_host)])
def test_samples_identical_to_stock_loader(comfy_sd15, stock_image, mode):
    entry = comfy_sd15.run(lean_txt2img(f"ckpt_lean_{mode}", load_mode=mode))
    img = image(comfy_sd15, entry)
    assert img.shape == stock_image.shape == (64, 64, 3)
    assert img.std() > 0
    assert np.array_equal(img, stock_image), f"load_mode={mode}: image differs from stock CheckpointLoaderSimple"
    rep = report_of(entry)
    assert "lean_sd15.safetensors" in rep and f"mode {mode}" in rep and "peak RSS" in rep, rep
    assert "float32" in rep  # --cpu: ComfyUI's auto pick for the UNet is fp32
    comfy_sd15.free()


def test_saved_workflow_with_retired_direct_mode_loads_as_mmap(comfy_sd15, sd15_ckpt):
    """A saved UI workflow whose Load Checkpoint (mmap) holds load_mode=direct (retired) still converts, validates
    and runs: widget positions unchanged, the value accepted, the model loaded as mmap, and the report says so.
    Reference: the same workflow with the stock CheckpointLoaderSimple in the loader's place."""
    from lean_nodes.core import workflow
    from lean_testlib import shipped
    harness.link_model(comfy_sd15.base, "checkpoints", sd15_ckpt, shipped.CKPT)
    ui = shipped.load(shipped.WORKFLOWS / "lean_checkpoint_mmap.json")
    loader = next(n for n in ui["nodes"] if n["type"] == NODE)
    assert loader["widgets_values"][INPUTS.index("load_mode")] == "mmap"  # the saved position of load_mode
    loader["widgets_values"][INPUTS.index("load_mode")] = "direct"
    prompt = shipped.small(workflow.ui_to_api(ui, comfy_sd15.object_info()))
    nid = next(k for k, n in prompt.items() if n["class_type"] == NODE)
    assert prompt[nid]["inputs"]["load_mode"] == "direct"
    stock = json.loads(json.dumps(prompt))
    stock[nid] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": shipped.CKPT}}
    for p, tag in ((prompt, "lean"), (stock, "stock")):
        for n in p.values():
            if n["class_type"] == "SaveImage":
                n["inputs"]["filename_prefix"] = f"ckpt_direct_{tag}"
    comfy_sd15.free()
    ref = image(comfy_sd15, comfy_sd15.run(stock))
    comfy_sd15.free()
    entry = comfy_sd15.run(prompt)
    assert np.array_equal(image(comfy_sd15, entry), ref), "load_mode=direct: image differs from stock"
    rep = entry["outputs"][nid]["text"][0]
    assert "mode mmap" in rep and "mode direct" not in rep, rep
    assert "note: load_mode 'direct' is retired" in rep and "loaded as mmap" in rep, rep
    comfy_sd15.free()


def test_fp16_weights_sample_like_stock(comfy_sd15, stock_image):
    """fp16 weights, computed in fp32 through ComfyUI's manual cast: the file is fp16, so the result
    is the stock (fp32 weights) result exactly."""
    entry = comfy_sd15.run(lean_txt2img("ckpt_lean_fp16", weight_dtype="fp16"))
    assert np.array_equal(image(comfy_sd15, entry), stock_image)
    rep = report_of(entry)
    assert "weights float16" in rep and "compute float32" in rep, rep
    # the VAE (fp32 in ComfyUI's CPU pick) is held in fp16 too, and decodes the same pixels
    vae_line = next(line for line in rep.splitlines() if line.startswith("vae:"))
    assert "weights float16, computed in float32" in vae_line, rep
    comfy_sd15.free()


# fp8_e4m3fn on both hosts; bf16 is a variant of it (marker one_host: CI runs it on 0.33.0 only)
@pytest.mark.parametrize("dtype", [pytest.param("bf16", marks=pytest.mark.one_host), "fp8_e4m3fn"])
def test_small_weight_dtypes_sample_like_stock_on_the_same_values(comfy_sd15, sd15n_ckpt, narrow_stock, dtype):
    """bf16 / fp8 weights from the fp16 file, computed in fp32 through ComfyUI's manual cast: the pixels equal
    stock CheckpointLoaderSimple's on a file holding exactly those weight values (lean_testlib.sd15_variants: the
    bf16 file; the fp8-rounded file, stored in fp16) for the MODEL and VAE, with the text encoder from the original
    file (weight_dtype leaves it as the host picks it).  On the narrow SD1.5 fixture (NARROW)."""
    from lean_testlib import sd15_variants
    variant = {"bf16": "bf16", "fp8_e4m3fn": "fp8_rounded"}[dtype]
    ref_name = f"lean_sd15n_{variant}.safetensors"
    harness.link_model(comfy_sd15.base, "checkpoints", sd15_variants.sd15_variant(variant, sd15n_ckpt), ref_name)
    ref_graph = graphs.txt2img(ckpt=ref_name, prefix=f"ckpt_stock_{dtype}")
    ref_graph["te"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": NARROW}}
    ref_graph["2"]["inputs"]["clip"] = ref_graph["3"]["inputs"]["clip"] = ["te", 1]
    ref = image_alone(comfy_sd15, ref_graph)
    entry = comfy_sd15.run(lean_txt2img(f"ckpt_lean_{dtype}", ckpt=NARROW, weight_dtype=dtype))
    img = image(comfy_sd15, entry)
    assert img.shape == ref.shape == (64, 64, 3) and ref.std() > 0
    assert np.array_equal(img, ref), f"weight_dtype={dtype}: pixels differ from stock on the same weight values"
    if dtype == "fp8_e4m3fn":  # the rounding shows in the pixels: a loader that kept fp16 values would fail here
        assert not np.array_equal(ref, narrow_stock)
    rep = report_of(entry)
    want = {"bf16": "bfloat16", "fp8_e4m3fn": "float8_e4m3fn"}[dtype]
    assert f"weights {want}" in rep, rep
    comfy_sd15.free()


@pytest.fixture(scope="module")
def sd15_as_ckpt(sd15n_ckpt):
    """The narrow SD1.5 fixture re-saved as a torch .ckpt (zip format, {"state_dict": ...}), cached."""
    from safetensors.torch import load_file
    from lean_testlib import cache_dir
    out = cache_dir() / "fixtures" / (pathlib.Path(sd15n_ckpt).stem + ".ckpt")
    if not out.exists():
        tmp = out.with_suffix(".ckpt.part")
        torch.save({"state_dict": load_file(str(sd15n_ckpt))}, tmp)
        tmp.rename(out)
    return out


def test_torch_ckpt_samples_identical_to_stock(comfy_sd15, narrow_stock, sd15_as_ckpt):
    harness.link_model(comfy_sd15.base, "checkpoints", sd15_as_ckpt, "lean_sd15n.ckpt")
    entry = comfy_sd15.run(lean_txt2img("ckpt_lean_torch", ckpt="lean_sd15n.ckpt"))
    assert np.array_equal(image(comfy_sd15, entry), narrow_stock)
    assert "(torch," in report_of(entry)
    comfy_sd15.free()


def test_load_clip_off_never_reads_clip_bytes(comfy_sd15, sd15_ckpt):
    """Measured from outside through the page cache: drop the fixture from the cache, load with
    load_clip=false, and check with mincore that no page inside the CLIP tensors was read."""
    path = str(sd15_ckpt)
    ranges = header_ranges(path)
    clip = [r for k, r in ranges.items() if k.startswith("cond_stage_model.")]
    unet = [r for k, r in ranges.items() if k.startswith("model.diffusion_model.")]
    vae = [r for k, r in ranges.items() if k.startswith("first_stage_model.")]
    c0, c1 = min(a for a, _ in clip), max(b for _, b in clip)
    assert all(not (a < c1 and b > c0) for a, b in unet + vae), "CLIP tensors are not contiguous in the fixture"
    comfy_sd15.free()
    pagecache.evict(path)
    margin = 16 << 20  # the kernel reads ahead up to read_ahead_kb (8 MiB here) around every access
    before = pagecache.resident_bytes(path, c0 + margin, c1 - margin)
    if before:
        pytest.skip(f"{before} bytes of the CLIP range stay cached (another process maps the fixture); cannot measure")
    entry = comfy_sd15.run(lean_vae_only("ckpt_clip_off"))
    assert image(comfy_sd15, entry).shape == (64, 64, 3)
    pages = pagecache.resident_pages(path)
    clip_read = pagecache.resident_bytes(path, c0 + margin, c1 - margin, pages)
    vae_read = sum(pagecache.resident_bytes(path, a, b, pages) for a, b in vae)
    vae_total = sum(b - a for a, b in vae)
    assert vae_read >= 0.9 * vae_total, f"the measure does not see reads: VAE {vae_read} of {vae_total} bytes cached"
    assert clip_read == 0, f"{clip_read} bytes of CLIP weights were read with load_clip=false"
    rep = report_of(entry)
    assert "clip: off" in rep, rep
    comfy_sd15.free()


def _outputs(host):
    return sorted(p.name for p in (host.base / "output").rglob("*") if p.is_file())


def test_vae_off_is_a_clear_error(comfy_sd15):
    before = _outputs(comfy_sd15)
    entry = comfy_sd15.run(lean_vae_only("ckpt_vae_off", load_vae=False), expect_error=True)
    err = comfy_sd15.error_text(entry)
    assert "load_vae" in err and "VAE" in err and "NoneType" not in err, err
    assert comfy_sd15.alive() and _outputs(comfy_sd15) == before
    comfy_sd15.free()


def test_clip_off_is_a_clear_error(comfy_sd15):
    before = _outputs(comfy_sd15)
    entry = comfy_sd15.run(lean_txt2img("ckpt_clip_off_err", weight_dtype="fp16", load_clip=False), expect_error=True)
    err = comfy_sd15.error_text(entry)
    assert "load_clip" in err and "CLIP" in err, err
    assert comfy_sd15.alive() and _outputs(comfy_sd15) == before
    comfy_sd15.free()


# ------------------------------------------------------------------ bad input through the host

class _WriteFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


def _bad_files(folder, tmp):
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    p = folder / "lean_corrupt.safetensors"
    p.write_bytes(b"\xff" * 4096)
    out["corrupt"] = (p, "corrupt")
    p = folder / "lean_truncated.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(p))
    p.write_bytes(p.read_bytes()[:-1000])
    out["truncated"] = (p, "truncated")
    p = folder / "lean_not_a_model.safetensors"
    save_file({"foo.weight": torch.zeros(4, 4), "bar.bias": torch.zeros(4)}, str(p))
    out["not a model"] = (p, "no diffusion model")
    p = folder / "lean_evil.ckpt"
    target = tmp / "written_by_pickle.txt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _WriteFile(target)}, p)
    out["evil"] = (p, "refused")
    return out, target


def test_bad_files_give_clear_errors_and_the_host_survives(comfy, tmp_path):
    files, target = _bad_files(comfy.base / "models" / "checkpoints", tmp_path)
    for what, (path, word) in files.items():
        prompt = lean_vae_only(f"ckpt_bad_{path.stem}", ckpt=path.name)
        entry = comfy.run(prompt, expect_error=True)
        err = comfy.error_text(entry)
        assert path.name in err and word in err, f"{what}: {err}"
        assert comfy.alive()
    assert not target.exists(), "the malicious pickle ran"


def test_missing_checkpoint_is_refused(comfy):
    with pytest.raises(harness.PromptFailed) as e:
        comfy.submit(lean_vae_only("ckpt_missing", ckpt="no_such_model.safetensors"))
    assert "no_such_model.safetensors" in str(e.value)
    assert comfy.alive()
