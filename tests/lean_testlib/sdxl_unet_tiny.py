"""A tiny SDXL (the host's own comfy.model_base.SDXL: UNet with linear proj_in/out, ADM = pooled CLIP-G + six size
embeddings, and the host's SDXLClipModel shrunk as in sdxl_tiny.py), random weights, built in memory, and kohya LoRAs
for it, to check per-image LoRAs (LeanPromptBatch's tags) on SDXL's layout in the host's code, in a subprocess:

    python -m lean_testlib.sdxl_unet_tiny     (tests/ on PYTHONPATH) -> one RESULT_JSON line

The full-size SDXL fixture (lean_testlib.sdxl_ckpt) is ~14 GB as fp32 on the CPU; this one is a few MB, so the check
runs on both hosts.  The LoRA module list is taken from the tiny model's own modules (every Linear of its transformer
blocks, proj_in/proj_out, and the text encoders' attention and MLP layers), named the kohya way (LDM path with "_";
lora_te1_/lora_te2_ for CLIP-L/CLIP-G), not from the host's key map.

Reference per line: the host's stock LoraLoader node (a LoRA folder of its own), stock CLIPTextEncode of the text
without tags, stock KSampler / KSamplerAdvanced segments for the schedule, the same noise (batch_index).
"""
import json
import os
import tempfile
import zlib

RANK = 4
LINES = ["a red cube",
         "a blue sphere <lora:xt_a:0.8>",
         "a green cone <lora:xt_b:0.6:0.3> <lora:xt_a:-0.5>",
         "a yellow house <lora:xt_a:1:lbw=ALL0.5>",
         "a castle <lora:xt_b:1:sched=0:0,0.4:0,0.4:1,1:1>"]
CLEAN = ["a red cube", "a blue sphere", "a green cone", "a yellow house", "a castle"]
# stock per line: [(file, strength_model, strength_clip)] and the step from which the UNet side applies (4 steps,
# normal scheduler: step fractions 0, 1/3, 2/3, 1: the schedule 0 before 0.4 is off for steps 0 and 1)
STOCK = {0: ([], 0), 1: ([("xt_a", 0.8, 0.8)], 0), 2: ([("xt_b", 0.6, 0.3), ("xt_a", -0.5, -0.5)], 0),
         3: ([("xt_a", 0.5, 0.5)], 0), 4: ([("xt_b", 1.0, 1.0)], 2)}
STEPS, CFG, SEED, SIZE = 4, 3.0, 7, 64


def make_model(context_dim, adm, seed=0):
    import torch
    import comfy.model_patcher
    import comfy.supported_models
    unet = {"model_channels": 32, "use_linear_in_transformer": True, "transformer_depth": [0, 1],
            "transformer_depth_middle": 1, "transformer_depth_output": [0, 0, 1, 1], "context_dim": context_dim,
            "adm_in_channels": adm, "use_temporal_attention": False, "use_temporal_resblock": False,
            "num_res_blocks": [1, 1], "channel_mult": [1, 2], "num_head_channels": 16, "in_channels": 4,
            "out_channels": 4, "use_spatial_transformer": True, "legacy": False, "num_classes": "sequential",
            "image_size": 32, "use_checkpoint": False, "dtype": torch.float32}
    config = comfy.supported_models.SDXL(unet)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def lora_modules(model, clip):
    """{kohya module name: (out_features, in_features)} from the tiny model's own Linear layers."""
    import torch
    mods = {}
    for path, m in model.model.diffusion_model.named_modules():
        if isinstance(m, torch.nn.Linear) and (".transformer_blocks." in path or path.endswith(("proj_in", "proj_out"))):
            mods["lora_unet_" + path.replace(".", "_")] = (m.out_features, m.in_features)
    for prefix, enc in (("lora_te1_", "clip_l"), ("lora_te2_", "clip_g")):
        tm = getattr(clip.cond_stage_model, enc).transformer.text_model
        for path, m in tm.encoder.named_modules():
            if isinstance(m, torch.nn.Linear):
                mods[prefix + "text_model_encoder_" + path.replace(".", "_")] = (m.out_features, m.in_features)
    return mods


def write_lora(path, mods, seed, up_std=0.2):
    import torch
    from safetensors.torch import save_file
    sd = {}
    for name, (out_f, in_f) in sorted(mods.items()):
        g = torch.Generator().manual_seed((seed * 7919 + zlib.crc32(name.encode())) & 0x7FFFFFFF)
        sd[f"{name}.lora_down.weight"] = torch.randn(RANK, in_f, generator=g) * in_f ** -0.5
        sd[f"{name}.lora_up.weight"] = torch.randn(out_f, RANK, generator=g) * up_std
        sd[f"{name}.alpha"] = torch.tensor(float(RANK))
    save_file(sd, path)


def run():
    from . import inproc, sdxl_tiny
    inproc.load_host()
    import torch
    import folder_paths
    import nodes
    inproc.load_pack()
    from lean_nodes.nodes import prompt_batch as PB

    torch.set_grad_enabled(False)
    clip = sdxl_tiny.make_clip()
    c0, d0 = nodes.CLIPTextEncode().encode(clip, "")[0][0]
    model = make_model(c0.shape[-1], d0["pooled_output"].shape[-1] + 6 * 256)
    loras = tempfile.mkdtemp(prefix="lean-xt-loras-")
    mods = lora_modules(model, clip)
    for name, seed in (("xt_a", 0), ("xt_b", 1)):
        write_lora(os.path.join(loras, name + ".safetensors"), mods, seed)
    folder_paths.add_model_folder_path("loras", loras, is_default=True)
    n = len(LINES)
    out = PB.LeanPromptBatch().build(clip, "\n".join(LINES), "lines", 16, 0, "", "", model=model)
    cond, _, count, _, pm = out["result"]
    neg_plain = nodes.CLIPTextEncode().encode(clip, "blurry")[0]

    def adv(m, pos, lat, a, b, first):
        return nodes.KSamplerAdvanced().sample(m, "enable" if first else "disable", SEED, STEPS, CFG, "euler",
                                               "normal", pos, neg_plain, lat, a, b,
                                               "enable" if b < STEPS else "disable")[0]

    def latent(k, index=None):
        lat = {"samples": torch.zeros(k, 4, SIZE // 8, SIZE // 8)}
        if index is not None:
            lat["batch_index"] = index
        return lat

    batch = adv(pm, cond, latent(n), 0, STEPS, True)["samples"]
    res = {"n": count, "shape": list(batch.shape), "report": out["ui"]["text"], "rows": []}
    for i, (chain, start) in STOCK.items():
        m, c = model, clip
        for f, sm, sc in chain:
            m, c = nodes.LoraLoader().load_lora(m, c, f + ".safetensors", sm, sc)
        pos = nodes.CLIPTextEncode().encode(c, CLEAN[i])[0]
        if start:  # the schedule: plain model before the step, the LoRA from it on
            mid = adv(model, pos, latent(1, [i]), 0, start, True)
            ref = adv(m, pos, mid, start, STEPS, False)["samples"]
        else:
            ref = adv(m, pos, latent(1, [i]), 0, STEPS, True)["samples"]
        plain = adv(model, nodes.CLIPTextEncode().encode(clip, CLEAN[i])[0], latent(1, [i]), 0, STEPS, True)["samples"]
        res["rows"].append({"err": (batch[i] - ref[0]).abs().max().item(), "scale": ref.abs().max().item(),
                            "effect": (plain - ref).abs().max().item()})
    return res


if __name__ == "__main__":
    print("RESULT_JSON " + json.dumps(run()))
