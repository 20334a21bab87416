"""In the host's Python (python -m lean_testlib.masked_groups): Prompt Batch's per-entry text-encoder LoRA groups on an
encoder whose model reads the text attention mask (Qwen-Image's path: encode_each + cond_batch.stack_masked), with
and without a participant's share.

The text encoder is a stand-in whose output for a prompt depends only on that prompt and on the LoRA set the entry's
CLIP carries (a per-set offset), one token per word + 1; the host's own Qwen-Image check (_host.text_mask_read_by_model)
is answered True and the chunked SD path is declined, so the node's glue (encode_with_entry_loras -> encode_prompts
-> encode_each -> the groups' merge) runs as on Qwen-Image.  The reference is written here by hand: entry i is its
prompt encoded alone by its own set's CLIP, zero-padded to the whole batch's longest prompt, mask 1 on its own tokens
and 0 after.  Prints RESULT_JSON {"cases": [{"name", "cond_equal", "mask_equal", "shape"}]}."""
import json

from . import inproc

TEXTS = ["a red cube", "x", "a green cone on a long wooden table by the sea", "a house at dusk"]
SETS = [(), (("a", 1.0),), (("b", 0.5),), (("a", 1.0),)]  # entry -> its text-encoder LoRA set


class Clip:
    cond_stage_model = None

    def __init__(self, offset=0.0):
        self.offset = offset

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, text):
        import torch
        n = len(text.split()) + 1
        g = torch.Generator().manual_seed(sum(map(ord, text)) + 1)
        return [[torch.randn(1, n, 8, generator=g) + self.offset, {}]]


class Loras:
    def __init__(self, te_sets):
        self.te_sets = te_sets

    def clip_for(self, clip, te_set):
        return Clip(clip.offset + sum((10.0 if key == "a" else 100.0) * s for key, s in te_set))


def run():
    inproc.load_host()
    inproc.load_pack()
    import torch
    from lean_nodes.nodes import _host, prompt_batch as PB
    _host.text_mask_read_by_model = lambda clip: isinstance(clip, Clip)
    _host.clip_hooks_scheduled = lambda clip: False
    _host.chunk_encoders = lambda clip: []
    base = Clip()
    alone = [Loras(SETS).clip_for(base, s).encode_from_tokens_scheduled(t)[0][0] for t, s in zip(TEXTS, SETS)]
    length = max(c.shape[1] for c in alone)
    cases = []
    for name, keep in (("whole batch", None), ("participant 2-3", (1, 3)), ("participant 1-2", (0, 2))):
        start, end = keep or (0, len(TEXTS))
        out, _ = PB.encode_with_entry_loras(base, TEXTS, Loras(SETS[start:end]), keep)
        (cond, info), = out
        want = torch.zeros(end - start, length, 8)
        want_mask = torch.zeros(end - start, length, dtype=torch.long)
        for j, i in enumerate(range(start, end)):
            want[j, :alone[i].shape[1]] = alone[i][0]
            want_mask[j, :alone[i].shape[1]] = 1
        mask = info.get("attention_mask")
        cases.append({"name": name, "shape": list(cond.shape), "cond_equal": bool(torch.equal(cond, want)),
                      "mask_equal": mask is not None and bool(torch.equal(mask.to(torch.long), want_mask))})
    return {"cases": cases}


if __name__ == "__main__":
    print("RESULT_JSON " + json.dumps(run()))
