"""A tiny Flux text encoder (the host's own FluxClipModel + FluxTokenizer: T5-XXL and CLIP-L shrunk to one or
two layers and a few heads, random weights) to check LeanPromptBatch on Flux, in the host's code, in a
subprocess.  The T5 tokenizer is the host's own comfy/text_encoders/t5_tokenizer (both provisioned hosts ship
it); nothing downloads.

    python -m lean_testlib.flux_te_tiny encode   (tests/ on PYTHONPATH) -> one RESULT_JSON line
    python -m lean_testlib.flux_te_tiny sample   -> the same, for one sampler pass on lean_testlib.flux_tiny

T5 width: the tiny Flux diffusion model reads T5 tokens of width 4096 (0.3.64 fixes context_in_dim=4096), so
the sampler check uses d_model 4096 with one layer, two heads of 32 and d_ff 64: its shared embedding (32128 x
4096) is nearly all of its ~136 M parameters (~0.55 GB in fp32, built in memory, never written).  The encode
check uses d_model 64.  CLIP-L keeps width 768 (Flux's vec_in_dim: the pooled output) with one layer.
"""
import json
import sys


def make_clip(seed=0, t5_width=64, t5_layers=2):
    import torch
    import comfy.sd
    import comfy.text_encoders.flux as flux

    class Target:
        params = {}
        clip = flux.FluxClipModel
        tokenizer = flux.FluxTokenizer

    options = {"clip_l_model_config": {"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 768,
                                       "intermediate_size": 64, "projection_dim": 768},
               "t5xxl_model_config": {"d_model": t5_width, "num_layers": t5_layers, "num_heads": 2, "d_kv": 32,
                                      "d_ff": 64},
               "dtype": torch.float32}
    clip = comfy.sd.CLIP(Target(), model_options=options)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in clip.cond_stage_model.named_parameters():
            if not p.dtype.is_floating_point:
                continue
            if p.ndim <= 1:  # norms near 1, biases small
                t = 1.0 + 0.1 * torch.randn(p.shape, generator=g) if "weight" in name else 0.02 * torch.randn(p.shape, generator=g)
            elif "relative_attention_bias" in name or "embedding" in name or "shared" in name:
                t = torch.randn(p.shape, generator=g)
            else:
                t = torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5
            p.copy_(t)
    return clip


LONG_T5 = ", ".join(["word"] * 150)  # ~300 T5 tokens (more than the 256 a Flux prompt is padded to), 4 CLIP chunks
LONGER_T5 = "a castle, " + ", ".join(["stone"] * 300)  # ~600 T5 tokens: more than 512
PROMPTS = ["a red cube", "(a green sphere:1.3) in a (dark:0.6) room", LONG_T5, "x", LONGER_T5, "a red cube",
           ", ".join(["thing"] * 60)]  # 120 CLIP tokens: 2 CLIP-L chunks, one 256-token T5 sequence


def _flux_node_encode(clip, text, guidance):
    from comfy_extras.nodes_flux import CLIPTextEncodeFlux
    node = CLIPTextEncodeFlux
    if hasattr(node, "execute"):
        r = node.execute(clip=clip, clip_l=text, t5xxl=text, guidance=guidance)
    else:
        r = node().encode(clip, text, text, guidance)
    return r.args[0] if hasattr(r, "args") else r[0]


def encode():
    from . import inproc
    inproc.load_host()
    import torch
    import nodes
    inproc.load_pack()
    from lean_nodes.nodes import prompt_batch as PB

    torch.set_grad_enabled(False)
    clip = make_clip()
    calls = []
    orig = clip.encode_from_tokens
    clip.encode_from_tokens = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    cond_out, texts, n = PB.LeanPromptBatch().build(clip, "\n".join(PROMPTS), "lines", 16, 0, "", "",
                                                    guidance=2.5)["result"][:3]
    del clip.encode_from_tokens
    (cond, info), = cond_out
    _, stats = PB.encode_prompts(clip, PROMPTS)
    (cond_each, info_each), = PB.encode_each(clip, PROMPTS)[0]
    enc = nodes.CLIPTextEncode()
    empty = enc.encode(clip, "")[0][0][0]
    res = {"shape": list(cond.shape), "pooled_shape": list(info["pooled_output"].shape), "stats": stats,
           "keys": sorted(info), "guidance": info.get("guidance"), "texts_ok": texts == PROMPTS, "n": n,
           "encode_calls": len(calls), "empty_tokens": empty.shape[1], "prompts": [],
           "each_vs_batch": (cond_each - cond).abs().max().item(),
           "each_pooled_vs_batch": (info_each["pooled_output"] - info["pooled_output"]).abs().max().item()}
    for i, p in enumerate(PROMPTS):
        c, d = enc.encode(clip, p)[0][0]
        fc, fd = _flux_node_encode(clip, p, 2.5)[0]
        t = c.shape[1]
        need = cond.shape[1] - t
        pad_ref = torch.cat([empty] * (need // empty.shape[1] + 1), dim=1)[:, :need]
        res["prompts"].append({
            "tokens": t, "clip_chunks": len(clip.tokenize(p)["l"]),
            "cond_err": (cond[i:i + 1, :t] - c).abs().max().item(),
            "pooled_err": (info["pooled_output"][i:i + 1] - d["pooled_output"]).abs().max().item(),
            "flux_cond_err": (cond[i:i + 1, :t] - fc).abs().max().item(),
            "flux_pooled_err": (info["pooled_output"][i:i + 1] - fd["pooled_output"]).abs().max().item(),
            "flux_keys": sorted(fd), "flux_guidance": fd.get("guidance"), "stock_keys": sorted(d),
            "pad_err": (cond[i:i + 1, t:] - pad_ref).abs().max().item() if need else 0.0,
            "scale": c.abs().max().item()})
    res["distinct_0_1"] = (cond[0] - cond[1]).abs().max().item()
    res["distinct_pooled_0_1"] = (info["pooled_output"][0] - info["pooled_output"][1]).abs().max().item()
    return res


SAMPLE_PROMPTS = ["a red cube", "a blue sphere in the rain", LONG_T5, "x"]


def sample():
    """One KSampler pass (1 step, cfg 1) over a batch of 4 on the tiny Flux, against stock per prompt."""
    from . import inproc, flux_tiny
    inproc.load_host()
    import torch
    import comfy.sd
    import nodes
    inproc.load_pack()
    from lean_nodes.nodes import prompt_batch as PB

    torch.set_grad_enabled(False)
    clip = make_clip(t5_width=4096, t5_layers=1)
    model = comfy.sd.load_diffusion_model(str(flux_tiny.flux_tiny()))
    (batch,), texts, n = (lambda r: ([r[0]], r[1], r[2]))(
        PB.LeanPromptBatch().build(clip, "\n".join(SAMPLE_PROMPTS), "lines", 16, 0, "", "", guidance=3.5)["result"])
    size = (16, 16, 16)  # 128x128 pixels

    def run(cond, latent):
        return nodes.KSampler().sample(model, 7, 1, 1.0, "euler", "simple", cond, cond, latent, 1.0)[0]["samples"]

    out = run(batch, {"samples": torch.zeros((n,) + size)})
    stock_empty = nodes.CLIPTextEncode().encode(clip, "")[0][0][0]
    res = {"shape": list(out.shape), "cond_shape": list(batch[0][0].shape), "refs": {}, "pairs_min": None}
    diffs = [(out[a] - out[b]).abs().mean().item() for a in range(n) for b in range(a + 1, n)]
    res["pairs_min"] = min(diffs)
    for i in (0, 2):  # a padded short prompt and the long one (no padding)
        ref_cond = _flux_node_encode(clip, SAMPLE_PROMPTS[i], 3.5)
        c, d = ref_cond[0]
        need = batch[0][0].shape[1] - c.shape[1]
        if need:  # stock's own padding: ConditioningConcat with the encoded empty prompt, cut to the batch length
            c = torch.cat([c, torch.cat([stock_empty] * (need // stock_empty.shape[1] + 1), dim=1)[:, :need]], dim=1)
        ref = run([[c, d]], {"samples": torch.zeros((1,) + size), "batch_index": [i]})[0]
        other = out[(i + 1) % n]
        res["refs"][str(i)] = {"err": (out[i] - ref).abs().max().item(), "scale": ref.abs().max().item(),
                               "other": (other - ref).abs().max().item(), "padded": bool(need)}
    return res


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "encode"
    print("RESULT_JSON " + json.dumps({"encode": encode, "sample": sample}[mode]()))
