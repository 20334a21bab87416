"""Tier 2: LeanLoraLoader on ComfyUI-GGUF's quantized models (the real peer pack, installed from
../shared/peers into this test host's custom_nodes/ after checking its sha256), against the host's stock
LoraLoaderModelOnly on the same GGUF model.

Models: the tiny Flux (lean_testlib.flux_tiny) and the SD1.5 UNet (lean_testlib.sd15's narrow variant: every SD1.5
key and block at 320 channels, detected as SD1.5; its kohya LoRA), written as GGUF Q8_0 and Q4_0 by ``gguf``'s own
quantizers in the layout ComfyUI-GGUF's loader reads (lean_testlib.gguf_unet), loaded by its ``UnetLoaderGGUF``.
SD1.5's proj_in/proj_out are 1x1 convolutions whose GGMLTensor weights are packed 2-D rows: the case where a
weight's dim() is not its logical dimension count.

Tolerance: both paths run in fp32 on CPU on the same dequantised weight W (ComfyUI-GGUF dequantises per forward).
Stock adds the patch to W (ComfyUI-GGUF's get_weight -> comfy.lora.calculate_weight: W + s*(B@A), rounded to
fp32 once per element) and multiplies; Lean computes W@x + s*B@(A@x).  The two differ only by fp32 reassociation:
per layer about 2^-24 * sqrt(fan_in) ~ 1e-5 relative at fan_in 3072-12288, through the few layers of these
models and one step.  TOL (2e-4 relative to the latent's magnitude) is about 10x the largest difference measured
(see the report of issue 24), and the LoRA's effect is required to be >= 100x TOL, so a strength error of 1 % or
more fails."""
import pytest

from lean_testlib import (flux_cond_node, flux_tiny, gguf_unet, harness, lora as kohya, model_storage_node, prereq,
                          probe_node)

pytestmark = pytest.mark.tier2

PEER = "comfyui-gguf-795e451.tar.gz"
STRENGTH = 0.8
TOL = 2e-4
EFFECT = 100 * TOL
CASES = [("flux", "Q8_0"), ("flux", "Q4_0"), ("sd15", "Q8_0"), ("sd15", "Q4_0")]
BOTH_HOSTS = [("flux", "Q4_0"), ("sd15", "Q8_0")]
ARCH = {  # conditioning width, latent node and size, sampler settings, LoRA file, LoRA modules on the UNet
    "flux": dict(context_dim=4096, latent="EmptySD3LatentImage", size=128, scheduler="simple", denoise=1.0,
                 lora="lean_flux_kohya.safetensors", modules=13),
    # the random SD1.5 UNet predicts large noise: one step at denoise 0.2, cfg 1 keeps latents near 1
    "sd15": dict(context_dim=768, latent="EmptyLatentImage", size=64, scheduler="normal", denoise=0.2,
                 lora="lean_sd15n_unet.safetensors", modules=192),
}
MAKE = {"flux": gguf_unet.flux_gguf, "sd15": lambda q: gguf_unet.sd15_unet_gguf(q, narrow=True)}


def unet_name(arch, q):
    return f"lean_{arch}_{q}.gguf"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    path, why = harness.find_host()
    if not path:
        pytest.skip(prereq(f"tier 2 skipped: no ComfyUI host found ({why})"))
    base = harness.make_base_dir(tmp_path_factory.mktemp("gguf_lora_base"))
    try:
        harness.install_peer(base, PEER)
    except FileNotFoundError as e:
        pytest.skip(prereq(f"ComfyUI-GGUF: {e}"))
    for mod in (probe_node, flux_cond_node, model_storage_node):
        mod.install(base)
    for arch, q in CASES:
        harness.link_model(base, "diffusion_models", MAKE[arch](q), unet_name(arch, q))
    harness.link_model(base, "loras", flux_tiny.flux_kohya_lora(), ARCH["flux"]["lora"])
    harness.link_model(base, "loras", kohya.sd15_lora(rank=32, te=False, narrow=True), ARCH["sd15"]["lora"])
    h = harness.ComfyHost.start(path, base)
    try:
        h.object_info("UnetLoaderGGUF")
    except Exception:
        h.stop()
        raise AssertionError("ComfyUI-GGUF did not load in the host:\n" + h.log_tail())
    yield h
    h.stop()


_n = [0]


def graph(arch, q, loras=(), seed=7, storage=False):
    """UnetLoaderGGUF -> LoRA nodes [(class_type, inputs)] -> KSampler, 1 step -> probe (-> storage record)."""
    a = ARCH[arch]
    _n[0] += 1
    name = f"g{_n[0]}"
    g = {"m": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": unet_name(arch, q)}},
         "c": {"class_type": "TestFluxCond_lean", "inputs": {"seed": 1, "tokens": 8, "context_dim": a["context_dim"],
                                                              "guidance": 3.5}},
         "e": {"class_type": a["latent"], "inputs": {"width": a["size"], "height": a["size"], "batch_size": 1}}}
    model = ["m", 0]
    for i, (ct, inp) in enumerate(loras):
        inp = dict(inp, model=model)
        if ct != "LoraLoaderModelOnly":
            g["nc"] = {"class_type": "TestNoneClip_lean", "inputs": {}}
            inp["clip"] = ["nc", 0]
        g[f"l{i}"] = {"class_type": ct, "inputs": inp}
        model = [f"l{i}", 0]
    g["s"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["c", 0], "negative": ["c", 0], "latent_image": ["e", 0], "seed": seed,
        "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": a["scheduler"], "denoise": a["denoise"]}}
    g["p"] = {"class_type": "TestProbe_lean", "inputs": {"name": name, "latent": ["s", 0]}}
    if storage:
        g["st"] = {"class_type": "TestModelStorage_lean", "inputs": {"model": model, "name": name + "_st",
                                                                     "after": ["s", 0]}}
    return g, name


def run(host, *args, **kw):
    g, name = graph(*args, **kw)
    entry = host.run(g)
    return probe_node.read(host.base, name)[0]["latent.0"], entry, name


def stock(arch, s=STRENGTH):
    return ("LoraLoaderModelOnly", {"lora_name": ARCH[arch]["lora"], "strength_model": s})


def lean(arch, s=STRENGTH):
    return ("LeanLoraLoader", {"lora_name": ARCH[arch]["lora"], "strength_model": s, "strength_clip": 0.0,
                               "schedule": "", "block_weights": ""})


FLOAT_TYPES = ("F32", "F16", "BF16")


def file_tensors(path):
    """(count, bytes, quantized count, float bytes) of the tensors in a GGUF file, read with the gguf package
    (independent of the host)."""
    import gguf
    r = gguf.GGUFReader(str(path))
    quantized = [t for t in r.tensors if t.tensor_type.name not in FLOAT_TYPES]
    floats = sum(int(t.n_bytes) for t in r.tensors if t.tensor_type.name in FLOAT_TYPES)
    return len(r.tensors), sum(int(t.n_bytes) for t in r.tensors), len(quantized), floats


# flux-Q4_0 and sd15-Q8_0 on both hosts; the other two are variants (marker one_host: CI runs them on 0.33.0 only)
@pytest.mark.parametrize("arch,q", [c if c in BOTH_HOSTS else pytest.param(*c, marks=pytest.mark.one_host)
                                    for c in CASES], ids=[f"{a}-{q}" for a, q in CASES])
def test_lean_lora_equals_stock_on_gguf(host, arch, q):
    """LeanLoraLoader on a UnetLoaderGGUF model gives stock LoraLoaderModelOnly's latent (same GGUF model) within
    TOL; every module goes through the low-rank branch, on GGUF-quantized weights of this type."""
    base, _, _ = run(host, arch, q)
    mark = len(host.log())
    ref, _, _ = run(host, arch, q, [stock(arch)])
    log = host.log()[mark:]
    assert "lora key not loaded" not in log, [x for x in log.splitlines() if "lora key not loaded" in x][:5]
    scale = max(1.0, ref.abs().max().item())
    effect = (ref - base).abs().max().item()
    assert effect >= EFFECT * scale, f"the LoRA changes the latent by only {effect:.3g}: a strength error would hide"
    got, entry, _ = run(host, arch, q, [lean(arch)])
    err = (got - ref).abs().max().item()
    print(f"[gguf-lora] {arch} {q}: |lean - stock| = {err:.3g}, LoRA effect {effect:.3g}, scale {scale:.3g}")
    assert err <= TOL * scale, (arch, q, err, effect)
    text = " ".join(entry["outputs"]["l0"]["text"])
    n = ARCH[arch]["modules"]
    assert f"UNet {n} modules as low-rank branch, 0 by host patching" in text, text
    assert f"branch gguf {q} {n}" in text, text  # the weights the branch runs on are GGUF-quantized, of this type


@pytest.mark.parametrize("arch,q", [("flux", "Q4_0"), pytest.param("sd15", "Q8_0", marks=pytest.mark.one_host)],
                         ids=["flux-Q4_0", "sd15-Q8_0"])  # sd15-Q8_0: a variant (CI runs it on 0.33.0 only)
def test_no_dequantised_copy_kept(host, arch, q):
    """After sampling with LeanLoraLoader the model still holds exactly the file's tensors: as many tensors as the
    file has, with the file's bytes in all, every quantized one still a packed GGMLTensor (ComfyUI-GGUF keeps some
    float tensors, e.g. norm scales, as plain parameters: those may only hold the file's float bytes), no GGUF
    patches; and the host's RSS grows by far less than a dequantised copy would take."""
    host.free()
    run(host, arch, q, seed=11)  # model loaded and every mapped page touched once
    rss0 = host.rss_bytes()
    _, _, name = run(host, arch, q, [lean(arch)], seed=12, storage=True)
    run(host, arch, q, [lean(arch)], seed=13)
    rss1 = host.rss_bytes()
    st = model_storage_node.read(host.base, name + "_st")
    n, nbytes, n_quantized, float_bytes = file_tensors(MAKE[arch](q))
    ggml = st["classes"].get("GGMLTensor", {"count": 0, "bytes": 0})
    others = {k: v for k, v in st["classes"].items() if k != "GGMLTensor"}
    print(f"[gguf-lora] {arch} {q}: {st}; file {n} tensors ({n_quantized} quantized) {nbytes} B; RSS "
          f"{rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB")
    total = (sum(v["count"] for v in st["classes"].values()), sum(v["bytes"] for v in st["classes"].values()))
    assert total == (n, nbytes), (st, n, nbytes)  # nothing beside the file's tensors: no dequantised copy
    assert ggml["count"] >= n_quantized, (st, n_quantized)  # every quantized tensor still packed
    assert sum(v["bytes"] for v in others.values()) <= float_bytes, (others, float_bytes)
    assert st["patched"] == 0, st
    dequantised = st["logical_fp32_bytes"]
    # a dequantised copy would add all of it (narrow SD1.5 Q8_0: 446 MB); two samplings add ~23 MB on both hosts
    assert rss1 - rss0 < 0.25 * dequantised, (rss0, rss1, dequantised)
