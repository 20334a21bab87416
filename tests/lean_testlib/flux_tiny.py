"""A tiny Flux diffusion model (random weights) with the exact key names, dtypes and shape rules of a
Black Forest Labs Flux-dev file (``flux1-dev.safetensors``: img_in, time_in, vector_in, guidance_in, txt_in,
double_blocks.N.*, single_blocks.N.*, final_layer), written from the published layout (not from the host's
model class), with few blocks.

    flux_tiny()                  -> path of the cached .safetensors (bf16, like the BFL release)
    flux_keys(...)               -> {key: shape} of the layout

How small it can be is set by the host's model detection (comfy/model_detection.py, detect_unet_config):
ComfyUI 0.3.64 fixes hidden_size=3072, num_heads=24 and context_in_dim=4096 for Flux (only the block counts,
in_channels and vec_in_dim come from the file), while 0.33 reads hidden_size from img_in/txt_in and sets
num_heads = hidden_size / sum(axes_dim) with axes_dim [16, 56, 56] (head dim 128).  So the smallest file both
detect as Flux has Flux-dev's widths and one double and one single block (~0.5 B parameters, ~1 GB in bf16);
``hidden_size`` (a multiple of 128) and ``context_in_dim`` can be shrunk for hosts that read them.
"""
import os

GENERATOR_VERSION = 1
HEAD_DIM = 128  # sum(axes_dim) = 16 + 56 + 56


def flux_keys(hidden_size=3072, depth=1, depth_single=1, context_in_dim=4096, vec_in_dim=768, in_channels=16,
              guidance=True, mlp_ratio=4):
    h, m = hidden_size, hidden_size * mlp_ratio
    patch = in_channels * 4  # 2x2 patches
    keys = {"img_in.weight": (h, patch), "img_in.bias": (h,)}
    for mlp in ("time_in", "vector_in") + (("guidance_in",) if guidance else ()):
        keys[f"{mlp}.in_layer.weight"] = (h, vec_in_dim if mlp == "vector_in" else 256)
        keys[f"{mlp}.in_layer.bias"] = (h,)
        keys[f"{mlp}.out_layer.weight"] = (h, h)
        keys[f"{mlp}.out_layer.bias"] = (h,)
    keys["txt_in.weight"] = (h, context_in_dim)
    keys["txt_in.bias"] = (h,)
    for i in range(depth):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}_"
            keys[p + "mod.lin.weight"] = (6 * h, h)
            keys[p + "mod.lin.bias"] = (6 * h,)
            keys[p + "attn.qkv.weight"] = (3 * h, h)
            keys[p + "attn.qkv.bias"] = (3 * h,)
            keys[p + "attn.norm.query_norm.scale"] = (HEAD_DIM,)
            keys[p + "attn.norm.key_norm.scale"] = (HEAD_DIM,)
            keys[p + "attn.proj.weight"] = (h, h)
            keys[p + "attn.proj.bias"] = (h,)
            keys[p + "mlp.0.weight"] = (m, h)
            keys[p + "mlp.0.bias"] = (m,)
            keys[p + "mlp.2.weight"] = (h, m)
            keys[p + "mlp.2.bias"] = (h,)
    for i in range(depth_single):
        p = f"single_blocks.{i}."
        keys[p + "linear1.weight"] = (3 * h + m, h)
        keys[p + "linear1.bias"] = (3 * h + m,)
        keys[p + "linear2.weight"] = (h, h + m)
        keys[p + "linear2.bias"] = (h,)
        keys[p + "norm.query_norm.scale"] = (HEAD_DIM,)
        keys[p + "norm.key_norm.scale"] = (HEAD_DIM,)
        keys[p + "modulation.lin.weight"] = (3 * h, h)
        keys[p + "modulation.lin.bias"] = (3 * h,)
    keys["final_layer.linear.weight"] = (patch, h)
    keys["final_layer.linear.bias"] = (patch,)
    keys["final_layer.adaLN_modulation.1.weight"] = (2 * h, h)
    keys["final_layer.adaLN_modulation.1.bias"] = (2 * h,)
    return keys


def flux_tiny(seed=0, hidden_size=3072, depth=1, depth_single=1, context_in_dim=4096, cache=None):
    """Path of the cached tiny Flux (bf16, random weights: N(0, 1/fan_in) weights, small biases, norm scales
    near 1, so a sampling step gives finite, input-dependent values)."""
    import torch
    from safetensors.torch import save_file
    from . import cache_dir
    if hidden_size % HEAD_DIM:
        raise ValueError(f"hidden_size must be a multiple of {HEAD_DIM}")
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"flux_tiny_v{GENERATOR_VERSION}_h{hidden_size}_d{depth}_s{depth_single}_c{context_in_dim}_seed{seed}.safetensors"
    if path.exists():
        return path
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in flux_keys(hidden_size, depth, depth_single, context_in_dim).items():
        if k.endswith(".scale"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith(".bias"):
            t = 0.02 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) * (1.0 / shape[1]) ** 0.5
        sd[k] = t.to(torch.bfloat16)
        del t
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata={"lean_fixture": f"flux_tiny v{GENERATOR_VERSION} seed {seed}"})
    os.replace(tmp, path)
    return path


def flux_kohya_lora(seed=0, rank=4, alpha=4.0, cache=None, **layout):
    """A Flux LoRA in the kohya / BFL naming people download (``lora_unet_double_blocks_0_img_attn_qkv``,
    ``lora_unet_single_blocks_0_linear1`` ...: the module path with "_" for "."; lora_down/lora_up/alpha, fp16)
    for every linear layer of the double and single blocks of ``flux_tiny(**layout)``."""
    import torch
    from safetensors.torch import save_file
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    tag = "_".join(f"{k}{v}" for k, v in sorted(layout.items()))
    atag = "" if alpha == 4.0 else f"_a{alpha:g}"  # (the default's name predates the alpha argument)
    path = d / f"flux_tiny_lora_kohya_v{GENERATOR_VERSION}_r{rank}{atag}_{tag}_seed{seed}.safetensors"
    if path.exists():
        return path
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in flux_keys(**layout).items():
        if not (k.startswith(("double_blocks.", "single_blocks.")) and k.endswith(".weight") and len(shape) == 2):
            continue
        name = "lora_unet_" + k[:-len(".weight")].replace(".", "_")
        out_f, in_f = shape
        sd[f"{name}.lora_down.weight"] = (torch.randn((rank, in_f), generator=g) / in_f ** 0.5).to(torch.float16)
        sd[f"{name}.lora_up.weight"] = (torch.randn((out_f, rank), generator=g) * 0.02).to(torch.float16)
        sd[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata={"ss_network_module": "networks.lora_flux",
                                      "lean_fixture": f"flux_tiny kohya lora v{GENERATOR_VERSION} seed {seed}"})
    os.replace(tmp, path)
    return path
