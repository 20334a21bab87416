"""The example workflows of example_workflows/, made runnable in a test host.

    put_fixtures(host.base)             # the test fixtures under the public model names the workflows use
    prompt = small(api_prompt)          # 64x64, 1 step, few LLM tokens
"""
import json
import shutil

from . import REPO, declared_nodes  # noqa: F401  (re-exported for the tests)

WORKFLOWS = REPO / "example_workflows"
API_DIR = REPO / "tests" / "workflows_api"



def _workflow_models():
    """scripts/workflow_models.py: the public model names the workflows use, defined once for the script that
    writes the workflows and for these tests."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("lean_workflow_models", REPO / "scripts" / "workflow_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_M = _workflow_models()
CKPT, CONTROLNET, LORA, LORA2, LLM, IMAGE = _M.CKPT, _M.CONTROLNET, _M.LORA, _M.LORA2, _M.LLM, _M.IMAGE
VL_LLM, VL_MMPROJ = _M.VL_LLM, _M.VL_MMPROJ
SDXL_CKPT, SDXL_LORA = _M.SDXL_CKPT, _M.SDXL_LORA
FLUX_UNET, FLUX_T5, FLUX_CLIP_L = _M.FLUX_UNET, _M.FLUX_T5, _M.FLUX_CLIP_L
FLUX_VAE, FLUX_LORA = _M.FLUX_VAE, _M.FLUX_LORA
ZIMAGE_UNET, ZIMAGE_TE, ZIMAGE_LORA = _M.ZIMAGE_UNET, _M.ZIMAGE_TE, _M.ZIMAGE_LORA
QWEN_UNET, QWEN_TE, QWEN_VAE, QWEN_LORA = _M.QWEN_UNET, _M.QWEN_TE, _M.QWEN_VAE, _M.QWEN_LORA
OWN_HOST = {"lean_flux_lora_prompt_batch", "lean_flux_lora_per_image"}  # workflows that run in a host of their own (test-only hooks)
# workflows that need a peer pack installed in the host (archive of ../shared/peers); converted, run and dropped in
# the editor by the test module that installs it, never in the shared host (which has no peer pack)
PEER_WORKFLOWS = {"lean_prompt_batch_distributed": "comfyui-distributed-a91f9fb.tar.gz"}  # test_tier2_prompt_batch_distributed.py


def workflow_files():
    return sorted(WORKFLOWS.glob("*.json"))


def load(path):
    return json.loads(path.read_text())


def put_fixtures(base):
    """Link the random-weight fixtures into the host's folders under the names the workflows use."""
    from . import controlnet, harness, images, lora, sd15, tiny_gguf
    # the narrow SD1.5 (every key and block at 320 channels) with a ControlNet and LoRAs of its widths: a workflow's
    # claim is that it runs, wired right; the loaders' claims are tested on the full-size file elsewhere
    harness.link_model(base, "checkpoints", sd15.sd15_checkpoint(narrow=True), CKPT)
    harness.link_model(base, "controlnet", controlnet.sd15_controlnet(narrow=True), CONTROLNET)
    harness.link_model(base, "loras", lora.sd15_lora(narrow=True), LORA)
    harness.link_model(base, "loras", lora.sd15_lora(seed=1, narrow=True), LORA2)
    harness.link_model(base, "llm", tiny_gguf.tiny_model("chatml"), LLM)
    from . import tiny_vision
    harness.link_model(base, "llm", tiny_vision.text_model(), VL_LLM)
    harness.link_model(base, "llm", tiny_vision.projector(), VL_MMPROJ)
    from . import sdxl_ckpt, sdxl_loras
    # the narrow SDXL (every key; the UNet at 320 channels): a workflow's claim is that it runs, wired right
    harness.link_model(base, "checkpoints", sdxl_ckpt.sdxl_checkpoint(narrow=True), SDXL_CKPT)
    harness.link_model(base, "loras", sdxl_loras.sdxl_kohya_lora(depth=1, te_attn_only=True, narrow=True), SDXL_LORA)
    from . import families, flux_files
    harness.link_model(base, "diffusion_models", families.zimage_tiny(), ZIMAGE_UNET)
    harness.link_model(base, "text_encoders", families.qwen3_4b_tiny(), ZIMAGE_TE)
    harness.link_model(base, "loras", families.family_lora("zimage", "aitoolkit"), ZIMAGE_LORA)
    harness.link_model(base, "vae", flux_files.flux_vae(), FLUX_VAE)
    harness.link_model(base, "diffusion_models", families.qwen_image_tiny(), QWEN_UNET)
    harness.link_model(base, "text_encoders", families.qwen25_7b_tiny(), QWEN_TE)
    harness.link_model(base, "loras", families.family_lora("qwen_image", "peft"), QWEN_LORA)
    harness.link_model(base, "vae", families.qwen_image_vae(), QWEN_VAE)
    dst = base / "input" / IMAGE
    if not dst.exists():
        shutil.copy(images.photo_png(), dst)


def put_flux_fixtures(base):
    """The Flux fixtures under the Flux workflow's names: the tiny Flux diffusion model and its kohya LoRA
    (flux_tiny.py), tiny T5-XXL and CLIP-L files and the Flux VAE in ae.safetensors' layout (flux_files.py).
    The host needs tiny_te_node.py linked before it starts (it builds T5/CLIP-L of the tiny files' shapes)."""
    from . import flux_files, flux_tiny, harness
    harness.link_model(base, "diffusion_models", flux_tiny.flux_tiny(), FLUX_UNET)
    harness.link_model(base, "loras", flux_tiny.flux_kohya_lora(), FLUX_LORA)
    harness.link_model(base, "text_encoders", flux_files.tiny_t5xxl(), FLUX_T5)
    harness.link_model(base, "text_encoders", flux_files.tiny_clip_l(), FLUX_CLIP_L)
    harness.link_model(base, "vae", flux_files.flux_vae(), FLUX_VAE)


SMALL = {  # class_type -> {input: value} overrides that keep a CPU run short
    "EmptyLatentImage": {"width": 64, "height": 64},
    "EmptySD3LatentImage": {"width": 64, "height": 64},
    "KSampler": {"steps": 1},
    "LeanLLMPrompt": {"max_tokens": 12},
    "LeanLLMLoader": {"n_ctx": 512},
    "LeanCanny": {"resolution": 64},
}


def host_lacks_family(host, prompt):
    """The allow-listed skip reason when an API prompt runs a model family this host does not have, else None: Z-Image
    needs the ZImage model and the Qwen3-4B text encoder (ComfyUI 0.3.64's lumina2 type is Gemma-2 only; the hosts
    that have Z-Image also have the flux2 type)."""
    if any(n["inputs"].get("unet_name") == ZIMAGE_UNET for n in prompt.values()):
        types = host.object_info("CLIPLoader")["input"]["required"]["type"][0]
        if "flux2" not in types:
            from . import families
            return families.MISSING_064["zimage"]  # the allow-listed reason (tests/conftest.py)
    return None


def uses_sdxl(prompt):
    """True when an API prompt loads the SDXL fixture (its narrow variant, still ~5 GB as fp32 on the CPU with its
    text encoders: run it with nothing else loaded)."""
    return any(n["inputs"].get("ckpt_name") == SDXL_CKPT for n in prompt.values())


def small(prompt):
    """A copy of an API prompt at 64x64, 1 step (linked inputs are left alone)."""
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        for k, v in SMALL.get(node["class_type"], {}).items():
            if k in node["inputs"] and not isinstance(node["inputs"][k], list):
                node["inputs"][k] = v
    return out
