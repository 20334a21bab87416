"""A tiny SDXL-shaped text encoder (the host's own SDXLClipModel + SDXLTokenizer, CLIP-L and CLIP-G
shrunk to a few layers, random weights) to check LeanPromptBatch on SDXL's two-encoder layout, in the
host's code, in a subprocess:

    python -m lean_testlib.sdxl_tiny    (with tests/ on PYTHONPATH) -> one JSON line of results
"""
import json


def make_clip(seed=0):
    import torch
    import comfy.sd
    import comfy.sdxl_clip

    class Target:
        params = {}
        clip = comfy.sdxl_clip.SDXLClipModel
        tokenizer = comfy.sdxl_clip.SDXLTokenizer

    small = {"num_hidden_layers": 3, "num_attention_heads": 2}
    options = {"clip_l_model_config": {**small, "hidden_size": 32, "intermediate_size": 64, "projection_dim": 32},
               "clip_g_model_config": {**small, "hidden_size": 64, "intermediate_size": 128, "projection_dim": 48},
               "dtype": torch.float32}
    clip = comfy.sd.CLIP(Target(), model_options=options)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in clip.cond_stage_model.named_parameters():
            if p.dtype.is_floating_point:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "norm" not in name else 0.1) + ("norm" in name and name.endswith("weight")))
    return clip


PROMPTS = ["a red cube", "(a green sphere:1.3) in a (dark:0.6) room", ", ".join(["word"] * 45),
           "a house, " + ", ".join(["thing"] * 90), "a red cube"]


def run():
    from . import inproc
    inproc.load_host()
    import torch
    import nodes
    inproc.load_pack()
    from lean_nodes.nodes import prompt_batch as PB

    torch.set_grad_enabled(False)
    clip = make_clip()
    (cond, info), stats = (lambda r: (r[0][0], r[1]))(PB.encode_batched(clip, PROMPTS))
    (cond_each, info_each) = PB.encode_each(clip, PROMPTS)[0][0]
    enc = nodes.CLIPTextEncode()
    empty = enc.encode(clip, "")[0][0][0]
    res = {"shape": list(cond.shape), "each_shape": list(cond_each.shape),
           "pooled_shape": list(info["pooled_output"].shape), "stats": stats, "prompts": []}

    def errors(batch, pooled, i, c, d):
        """One entry of a batch against stock CLIPTextEncode of its prompt: its tokens, then encoded-empty padding."""
        t = c.shape[1]
        pads = [(batch[i:i + 1, s:s + 77] - empty).abs().max().item() for s in range(t, batch.shape[1], 77)]
        return {"cond_err": (batch[i:i + 1, :t] - c).abs().max().item(),
                "pooled_err": (pooled[i:i + 1] - d["pooled_output"]).abs().max().item(),
                "pad_err": max(pads) if pads else 0.0}

    for i, p in enumerate(PROMPTS):
        c, d = enc.encode(clip, p)[0][0]  # the stock path, per prompt
        row = {"tokens": c.shape[1], "scale": c.abs().max().item(),
               **errors(cond, info["pooled_output"], i, c, d)}
        row["each"] = errors(cond_each, info_each["pooled_output"], i, c, d)  # the one-by-one fallback path
        res["prompts"].append(row)
    res["distinct_0_1"] = (cond[0] - cond[1]).abs().max().item()
    return res


if __name__ == "__main__":
    print("RESULT_JSON " + json.dumps(run()))
