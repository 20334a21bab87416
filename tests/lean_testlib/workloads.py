"""Small prompts that together run every Lean node a host has (fixtures, 64x64, 1 step), for the soak
benchmark and the offline/socket-audit test.

    prepare(base)                      # link the fixtures into a base dir (before the host starts)
    kinds(nodes)                       # which workloads this host can run: "llm", "canny", "sd"
    prompt(kind, i, nodes)             # the i-th prompt of that kind (inputs vary with i, so nodes re-run)
"""
import shutil

from . import families, flux_files, flux_tiny, harness, images, lora, sd15, tiny_gguf, tiny_te_node

SD15 = "lean_sd15.safetensors"
LORA = "lean_lora.safetensors"
TINY = "tiny.gguf"
PHOTO = "lean_workload_photo.png"
FLUX = "lean_flux_tiny.safetensors"
TE_CLIP_L = "lean_sd15_clip_l.safetensors"
TE_T5 = "lean_flux_t5_tiny.safetensors"
TE_FLUX_CLIP_L = "lean_flux_clip_l_tiny.safetensors"
LEAN_NODES_PER_KIND = {
    "llm": {"LeanLLMLoader", "LeanLLMPrompt"},
    "canny": {"LeanCanny"},
    "sd": {"LeanCheckpointLoader", "LeanLoraTags", "LeanLoraLoader", "LeanPromptBatch"},
    "system": {"LeanSystemCheck"},
    "flux": {"LeanDiffusionModelLoader"},
    "te": {"LeanTextEncoderLoader", "LeanDualTextEncoderLoader"},
    "check": {"LeanPromptBatchCheck"},
}


def prepare(base, llm=True):
    harness.make_base_dir(base)
    harness.link_model(base, "checkpoints", sd15.sd15_checkpoint(), SD15)
    harness.link_model(base, "loras", lora.sd15_lora(), LORA)
    harness.link_model(base, "diffusion_models", flux_tiny.flux_tiny(), FLUX)
    harness.link_model(base, "text_encoders", families.sd15_clip_l(), TE_CLIP_L)
    harness.link_model(base, "text_encoders", flux_files.tiny_t5xxl(), TE_T5)
    harness.link_model(base, "text_encoders", flux_files.tiny_clip_l(), TE_FLUX_CLIP_L)
    tiny_te_node.install(base)   # test-only: the host builds the tiny T5 / CLIP-L of the Dual loader's files
    if llm:
        harness.link_model(base, "llm", tiny_gguf.tiny_model("chatml"), TINY)
    (base / "models" / "wildcards").mkdir(parents=True, exist_ok=True)
    (base / "models" / "wildcards" / "lean_colors.txt").write_text("red\ngreen\nblue\nyellow\n")
    shutil.copy(images.photo_png(width=64, height=64), base / "input" / PHOTO)
    return base


def kinds(nodes, llm=True):
    out = []
    if llm and LEAN_NODES_PER_KIND["llm"] <= nodes:
        out.append("llm")
    if "LeanCanny" in nodes:
        out.append("canny")
    if LEAN_NODES_PER_KIND["sd"] & nodes:
        out.append("sd")
    if "LeanSystemCheck" in nodes:
        out.append("system")
    if "LeanDiffusionModelLoader" in nodes:
        out.append("flux")
    if LEAN_NODES_PER_KIND["te"] & nodes:
        out.append("te")
    if "LeanPromptBatchCheck" in nodes:
        out.append("check")
    return out


def llm_prompt(i, n_ctx=512, backend="llama_cpp", base_url="http://127.0.0.1:8080/v1", model_id=""):
    return {
        "l": {"class_type": "LeanLLMLoader", "inputs": {"backend": backend, "model": TINY, "base_url": base_url,
                                                        "model_id": model_id, "n_ctx": n_ctx, "n_gpu_layers": 0,
                                                        "threads": 0}},
        "p": {"class_type": "LeanLLMPrompt", "inputs": {"llm": ["l", 0], "idea": f"a red fox number {i}",
                                                        "style": "SD1.5 tags", "system_prompt": "", "seed": i,
                                                        "max_tokens": 4, "temperature": 0.7, "top_p": 0.9,
                                                        "keep_loaded": True}},
        "v": {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}},
    }


def canny_prompt(i):
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": PHOTO}},
        "2": {"class_type": "LeanCanny", "inputs": {"image": ["1", 0], "low_threshold": 40 + i % 60,
                                                    "high_threshold": 150, "auto": ["off", "median", "otsu"][i % 3],
                                                    "sigma": 0.33, "blur": [0, 3][i % 2], "aperture": "3",
                                                    "l2_gradient": bool(i % 2), "resolution": 0, "invert": False}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}},
    }


def sd_prompt(i, nodes):
    """Checkpoint (Lean if present) -> LoRA tags -> LoRA loader -> prompt batch -> KSampler 1 step 64x64."""
    g = {}
    if "LeanCheckpointLoader" in nodes:
        g["k"] = {"class_type": "LeanCheckpointLoader", "inputs": {"ckpt_name": SD15, "load_mode": "mmap",
                                                                   "weight_dtype": "auto", "load_clip": True,
                                                                   "load_vae": True}}
    else:
        g["k"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15}}
    model, clip, text = ["k", 0], ["k", 1], f"a cube number {i}"
    if "LeanLoraTags" in nodes:
        g["t"] = {"class_type": "LeanLoraTags", "inputs": {
            "model": model, "clip": clip, "text": f"a cube <lora:lean_lora:{0.2 + (i % 250) * 0.003:.3f}> number {i}"}}
        model, clip, text = ["t", 0], ["t", 1], ["t", 2]
    if "LeanLoraLoader" in nodes:
        g["r"] = {"class_type": "LeanLoraLoader", "inputs": {
            "model": model, "clip": clip, "lora_name": LORA, "strength_model": round(0.05 + (i % 250) * 0.004, 3),
            "strength_clip": round(0.3 + (i % 250) * 0.001, 3),
            "schedule": "" if i % 2 else "0:1,1:0.5", "block_weights": ""}}
        model, clip = ["r", 0], ["r", 1]
    if "LeanPromptBatch" in nodes:
        g["b"] = {"class_type": "LeanPromptBatch", "inputs": {
            "clip": clip, "text": "__lean_colors__ cube, {small|large}", "mode": "random", "count": 1,
            "seed": i, "prefix": "", "suffix": ""}}
        positive = ["b", 0]
    else:
        g["b"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text if isinstance(text, str) else "a cube",
                                                             "clip": clip}}
        positive = ["b", 0]
    if isinstance(text, list):  # the LoRA tags' cleaned text goes to the negative side so it is used too
        g["n"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}}
    else:
        g["n"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}}
    g["e"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    g["s"] = {"class_type": "KSampler", "inputs": {"model": model, "positive": positive, "negative": ["n", 0],
                                                   "latent_image": ["e", 0], "seed": i, "steps": 1, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    g["d"] = {"class_type": "VAEDecode", "inputs": {"samples": ["s", 0], "vae": ["k", 2]}}
    g["o"] = {"class_type": "PreviewImage", "inputs": {"images": ["d", 0]}}
    return g


def flux_prompt(i):
    """The tiny Flux through LeanDiffusionModelLoader (fp8 and default alternating), its report previewed."""
    return {"m": {"class_type": "LeanDiffusionModelLoader", "inputs": {
                "unet_name": FLUX, "weight_dtype": ["fp8_e4m3fn", "default"][i % 2], "load_mode": "mmap"}},
            "v": {"class_type": "PreviewAny", "inputs": {"source": ["m", 1]}}}


def te_prompt(i, nodes):
    """Load Text Encoder (mmap) with SD1.5's CLIP-L and the Dual loader with Flux.1's T5 + CLIP-L, each encoding a
    prompt (load_mode alternating mmap / read)."""
    mode = ["mmap", "read"][i % 2]
    g = {}
    if "LeanTextEncoderLoader" in nodes:
        g["t"] = {"class_type": "LeanTextEncoderLoader", "inputs": {
            "clip_name": TE_CLIP_L, "type": "stable_diffusion", "device": "default", "load_mode": mode,
            "weight_dtype": "default"}}
        g["c"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["t", 0], "text": f"a cube number {i}"}}
        g["v"] = {"class_type": "PreviewAny", "inputs": {"source": ["t", 1]}}
        g["cv"] = {"class_type": "PreviewAny", "inputs": {"source": ["c", 0]}}
    if "LeanDualTextEncoderLoader" in nodes:
        g["d"] = {"class_type": "LeanDualTextEncoderLoader", "inputs": {
            "clip_name1": TE_T5, "clip_name2": TE_FLUX_CLIP_L, "type": "flux", "device": "default",
            "load_mode": mode, "weight_dtype": "default"}}
        g["dv"] = {"class_type": "PreviewAny", "inputs": {"source": ["d", 1]}}
    return g


def check_prompt(i):
    """Prompt Batch Check outside a distributed run: one image for a count of one passes through."""
    return {"1": {"class_type": "LoadImage", "inputs": {"image": PHOTO}},
            "2": {"class_type": "LeanPromptBatchCheck", "inputs": {"images": ["1", 0], "count": 1}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def prompt(kind, i, nodes, **kw):
    if kind == "llm":
        return llm_prompt(i, **kw)
    if kind == "canny":
        return canny_prompt(i)
    if kind == "sd":
        return sd_prompt(i, nodes)
    if kind == "system":
        return {"s": {"class_type": "LeanSystemCheck", "inputs": {}}}
    if kind == "flux":
        return flux_prompt(i)
    if kind == "te":
        return te_prompt(i, nodes)
    if kind == "check":
        return check_prompt(i)
    raise ValueError(kind)


def lean_nodes_covered(kind_list, nodes):
    out = set()
    for k in kind_list:
        out |= LEAN_NODES_PER_KIND[k] & nodes
    return out
