"""Tier 2: LeanDiffusionModelLoader on a tiny Flux (lean_testlib.flux_tiny: Flux-dev's key names, one double and
one single block) inside a real ComfyUI, against the stock UNETLoader: the host detects the file as Flux, both
loaders give the same model, and one sampling step gives the same latent, bit for bit."""
import pytest
import torch

from lean_testlib import flux_tiny, harness, probe_node

pytestmark = pytest.mark.tier2

NODE = "LeanDiffusionModelLoader"
STRENGTH = 0.8
FLUX = "lean_flux_tiny.safetensors"
IN_UNET = "lean_flux_in_unet.safetensors"  # the same file in models/unet (UNETLoader's legacy folder)
LORA = "lean_flux_lora_kohya.safetensors"


def _flux_files(base):
    src = flux_tiny.flux_tiny()
    harness.link_model(base, "diffusion_models", src, FLUX)
    harness.link_model(base, "unet", src, IN_UNET)
    harness.link_model(base, "loras", flux_tiny.flux_kohya_lora(), LORA)


@pytest.fixture(scope="module")
def flux_host(shared_hosts):
    """The shared host with the default flags (its test-only nodes include the probe and TestFluxCond_lean)."""
    with shared_hosts.use(setup=_flux_files) as h:
        yield h


def sample(loader, name, weight_dtype):
    """loader -> KSampler (1 step, cfg 1, as Flux-dev is run) on a 16-channel 16x16 latent -> probe."""
    inputs = {"unet_name": FLUX, "weight_dtype": weight_dtype}
    if loader == NODE:
        inputs["load_mode"] = "mmap"
    return {
        "m": {"class_type": loader, "inputs": inputs},
        "c": {"class_type": "TestFluxCond_lean", "inputs": {"seed": 1, "tokens": 8, "context_dim": 4096,
                                                             "guidance": 3.5}},
        "e": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "s": {"class_type": "KSampler", "inputs": {"model": ["m", 0], "positive": ["c", 0], "negative": ["c", 0],
                                                   "latent_image": ["e", 0], "seed": 7, "steps": 1, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "p": {"class_type": "TestProbe_lean", "inputs": {"name": name, "latent": ["s", 0]}},
    }


def run_latent(host, loader, weight_dtype, lora=None, name=None):
    """lora: None, "stock" (LoraLoaderModelOnly) or "lean" (LeanLoraLoader, CLIP None and strength 0)."""
    name = name or f"{loader}_{weight_dtype}"
    g = sample(loader, name, weight_dtype)
    if lora == "stock":
        g["l"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["m", 0], "lora_name": LORA,
                                                                  "strength_model": STRENGTH}}
    elif lora == "lean":
        g["nc"] = {"class_type": "TestNoneClip_lean", "inputs": {}}
        g["l"] = {"class_type": "LeanLoraLoader", "inputs": {"model": ["m", 0], "clip": ["nc", 0], "lora_name": LORA,
                                                             "strength_model": STRENGTH, "strength_clip": 0.0,
                                                             "schedule": "", "block_weights": ""}}
    if lora:
        g["s"]["inputs"]["model"] = ["l", 0]
    entry = host.run(g)
    tensors, _ = probe_node.read(host.base, name)
    return tensors["latent.0"], entry


def test_inputs_follow_unetloader(flux_host):
    info = flux_host.object_info()
    lean, stock = info[NODE], info["UNETLoader"]
    assert lean["category"] == "lean/loaders"
    req, sreq = lean["input"]["required"], stock["input"]["required"]
    assert list(req)[:2] == list(sreq) == ["unet_name", "weight_dtype"]
    assert req["weight_dtype"][0] == sreq["weight_dtype"][0]  # the same options in the same order
    assert req["unet_name"][0] == sreq["unet_name"][0]
    assert {FLUX, IN_UNET} <= set(req["unet_name"][0])  # diffusion_models and unet
    for extra in list(req)[2:]:
        assert req[extra][1].get("advanced") is True, extra
    assert lean["output"] == ["MODEL", "STRING"]


@pytest.mark.parametrize("weight_dtype", ["default", "fp8_e4m3fn"])
def test_same_latent_as_stock_unetloader(flux_host, weight_dtype):
    h = flux_host
    mark = len(h.log())
    ref, _ = run_latent(h, "UNETLoader", weight_dtype)
    got, entry = run_latent(h, NODE, weight_dtype)
    log = h.log()[mark:]
    h.free()
    assert ref.shape == (1, 16, 16, 16), ref.shape  # Flux's 16-channel latent
    assert torch.isfinite(ref).all() and ref.std() > 0
    assert torch.equal(got, ref), f"max abs diff {(got - ref).abs().max().item()}"
    assert "model_type FLUX" in log, log[-3000:]  # the host detected the file as Flux (both loads)
    assert "keys missing" not in log and "has no place" not in log and "left over keys" not in log, log[-3000:]
    text = entry["outputs"]["m"]["text"][0]
    n = len(flux_tiny.flux_keys())
    assert f"({n} of {n} tensors)" in text, text
    assert "Flux (Flux)" in text, text
    if weight_dtype == "fp8_e4m3fn":
        assert "weights float8_e4m3fn" in text, text
        ref_default = probe_node.read(h.base, "UNETLoader_default")[0]["latent.0"]
        # the comparison sees weight changes: the fp8 weights give another latent than the bf16 ones
        assert not torch.equal(ref, ref_default)


def test_from_the_unet_folder(flux_host):
    h = flux_host
    g = sample(NODE, "lean_unet_folder", "fp8_e4m3fn")
    g["m"]["inputs"]["unet_name"] = IN_UNET
    entry = h.run(g)
    h.free()
    assert IN_UNET in entry["outputs"]["m"]["text"][0]


def test_kohya_flux_lora_stock_loads_every_key_and_lean_lora_equals_it(flux_host):
    """The Flux kohya/BFL LoRA fixture: the host's LoraLoaderModelOnly maps every key (no "lora key not loaded"),
    and LeanLoraLoader's branch gives the stock patched result within fp tolerance, on LeanDiffusionModelLoader's
    model; the LoRA changes the result."""
    h = flux_host
    mark = len(h.log())
    base, _ = run_latent(h, "UNETLoader", "default", name="nolora")
    stock, _ = run_latent(h, "UNETLoader", "default", lora="stock", name="lora_stock")
    log = h.log()[mark:]
    assert "lora key not loaded" not in log, [l for l in log.splitlines() if "lora key not loaded" in l][:5]
    lean, entry = run_latent(h, NODE, "default", lora="lean", name="lora_lean")
    h.free()
    assert (stock - base).abs().max() > 1e-2, "the LoRA changed nothing: the comparison would not see it"
    err = (lean - stock).abs().max().item()
    assert err <= 1e-3 * max(1.0, stock.abs().max().item()), err
