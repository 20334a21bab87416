"""In the host's Python (python -m lean_testlib.llm_pack): Prompt Batch's encode of an LLM text encoder with the
prompts side by side in one row (nodes/_host.packed_llm_rows), against the host's own encode of each prompt alone.

The encoder is the tiny Qwen3-4B fixture (lean_testlib.families, 28 layers at Qwen3-4B's width, built by the host
through the test-only hook lean_testlib.tiny_te_node) loaded as Z-Image's (ComfyUI 0.33.0 and later).  The reference
for prompt i is ``clip.encode_from_tokens_scheduled(clip.tokenize(prompt i))``: the host's encode of it alone.  Cases:
  * side by side: 8 prompts of 9-103 tokens (like the benchmark's) and the empty prompt, the CPU's 512-token passes;
  * small passes: at most 64 tokens a pass (several passes, a prompt longer than a pass alone);
  * refused: the hook refuses the host's call (as where the host calls its LLM another way): padded rows instead;
  * not called: the hook never sees the call (a host that calls the LLM's forward directly): padded rows instead;
  * a pad token in a prompt (the host masks the row from it on): padded rows.
Each case gives the largest difference from the reference relative to its scale, the passes and the packed passes.
Prints RESULT_JSON {"cases": [{"name", "max_rel", "passes", "packed", "count", "lengths"}], "pad_in_row": bool}."""
import json

from . import inproc

TEXTS = ["x", "a red cube", "a red cube on a wooden table",
         "a fox in the snow, a lighthouse on a rocky coast at dusk, waves breaking on the rocks, warm light in the "
         "windows of the keeper's house",
         "a lighthouse on a rocky coast at dusk, waves breaking on the rocks, warm light in the windows",
         ", ".join(["a lighthouse on a rocky coast at dusk, waves breaking on the rocks"] * 2),
         ", ".join(["a lighthouse on a rocky coast at dusk, waves breaking on the rocks"] * 4),
         ", ".join(["a lighthouse on a rocky coast at dusk, waves breaking on the rocks"] * 6), ""]
PAD_TEXT = "a red cube<|endoftext|> on a table"


def run():
    inproc.load_host()
    inproc.load_pack()
    import comfy.sd
    import torch
    from lean_nodes.nodes import _host, prompt_batch as PB
    from . import families, tiny_te_node
    tiny_te_node._install()
    torch.set_grad_enabled(False)
    if not hasattr(comfy.sd.CLIPType, "FLUX2"):
        return {"skip": "no Z-Image / Qwen3-4B text encoder in this ComfyUI"}
    clip = comfy.sd.load_clip(ckpt_paths=[str(families.qwen3_4b_tiny())], clip_type=comfy.sd.CLIPType.LUMINA2)
    assert _host.packed_llm_core(clip) is not None, "the host's Qwen3-4B encoder cannot be packed"

    def case(name, texts):
        refs = [clip.encode_from_tokens_scheduled(clip.tokenize(t))[0][0] for t in texts]
        results, passes, packed = PB.encode_llm_rows(clip, texts)
        rel = max(((r[0][0] - ref).abs().max() / ref.abs().max()).item() if r[0][0].shape == ref.shape
                  else float("inf") for r, ref in zip(results, refs))
        return {"name": name, "max_rel": rel, "passes": passes, "packed": packed, "count": len(texts),
                "lengths": [ref.shape[1] for ref in refs]}

    cases = [case("side by side", TEXTS)]
    pack_cpu = dict(PB.LLM_PACK)
    PB.LLM_PACK["cpu"] = 64
    try:
        cases.append(case("small passes", TEXTS))
    finally:
        PB.LLM_PACK.clear()
        PB.LLM_PACK.update(pack_cpu)

    real_pre, real_enter = _host.packed_llm_rows._pre, _host.packed_llm_rows.__enter__

    def refuse(self, module, args, kwargs):
        self.calls += 1
        raise _host.PackRefused("refused by the test")

    class NoHandle:
        def remove(self):
            pass

    def no_hook(self):
        self._handle = NoHandle()
        return self
    try:
        _host.packed_llm_rows._pre = refuse
        cases.append(case("refused", TEXTS))
        _host.packed_llm_rows._pre = real_pre
        _host.packed_llm_rows.__enter__ = no_hook
        cases.append(case("not called", TEXTS))
    finally:
        _host.packed_llm_rows._pre, _host.packed_llm_rows.__enter__ = real_pre, real_enter
    key = next(iter(clip.tokenize(PAD_TEXT)))
    pad_in_row = any(t[0] == _host.causal_llm_encoder(clip)[1] for t in clip.tokenize(PAD_TEXT)[key][0])
    cases.append(case("a pad token in a prompt", TEXTS[:4] + [PAD_TEXT]))
    return {"cases": cases, "pad_in_row": pad_in_row}


if __name__ == "__main__":
    print("RESULT_JSON " + json.dumps(run()))
