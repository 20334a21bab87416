"""In the host's Python (python -m lean_testlib.text_split): Prompt Batch's length split (nodes/_text_split.py), the
APPLY_MODEL wrapper that runs each entry's rows with its own prompt length, on the layouts the host's sampler makes.

The "model" is a stand-in executor whose output row depends on that row's latent, sigma and *whole* text (its
length included: mean and count of the tokens), as a DiT that reads every text token does.  The reference is
written here by hand, row by row: a row of Prompt Batch's entry e sees e's first lengths[e] tokens; every other row
(a negative of the same width, a conditioning that is not the batch's) sees its text as given.  Cases: cond + uncond
chunks, a latent batch of twice the entries (entry = latent % N), a batch-axis context window, a call that does not
come from the sampler (left whole), Lumina2's ``num_tokens`` and a text ``attention_mask`` cut per sub-call, and the
entries each sub-call hands to the per-image LoRA branch.
Prints RESULT_JSON {"cases": [{"name", "equal", "calls", "entries_ok", "max_diff"}]}."""
import json
import types

from . import inproc

N, WIDTH, C = 3, 6, 4
LENGTHS = [2, 6, 4]


class Executor:
    class_obj = None

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, c_concat, c_crossattn, control, transformer_options, **kw):
        self.calls.append({"rows": x.shape[0], "width": c_crossattn.shape[1], "kw": dict(kw),
                           "entries": transformer_options.get("lean_row_entries")})
        return _model(x, t, c_crossattn, kw)


def _model(x, t, ctx, kw):
    n_tok = kw.get("num_tokens", ctx.shape[1])
    mask = kw.get("attention_mask")
    mask_term = 0.0 if mask is None else mask.float().sum(dim=1).reshape(-1, 1, 1, 1) * 1e-3
    return (x * (1 + t.reshape(-1, 1, 1, 1)) + ctx.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
            + ctx.shape[1] * 0.01 + float(n_tok) * 1e-4 + mask_term)


def main():
    inproc.load_host()
    pack = inproc.load_pack()
    import importlib
    import torch
    split_mod = importlib.import_module(f"{pack.__name__}.nodes._text_split")
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(N, WIDTH, C, generator=g)  # Prompt Batch's padded conditioning
    negative = torch.randn(1, WIDTH, C, generator=g)  # another conditioning of the same width
    cases = []

    def run(name, latents, chunks, window=None, from_sampler=True, kw=None, expect_calls=None):
        wrapper = split_mod.TextLengthSplit([batch], LENGTHS)
        rows_ctx, rows_own = [], []
        lat_index = window if window is not None else list(range(latents))
        for chunk in chunks:
            for j in lat_index:
                e = j % N
                if chunk == "batch":
                    rows_ctx.append(batch[e])
                    rows_own.append((e, LENGTHS[e]))
                else:
                    rows_ctx.append(negative[0])
                    rows_own.append((e, WIDTH))
        rows = len(rows_ctx)
        ctx = torch.stack(rows_ctx)
        x = torch.randn(rows, 2, 3, 3, generator=g)
        t = torch.rand(rows, generator=g)
        topts = {"cond_or_uncond": [0 if c == "batch" else 1 for c in chunks]} if from_sampler else {}
        if window is not None:
            topts["context_window"] = types.SimpleNamespace(dim=0, index_list=list(window))
        ex = Executor()
        got = wrapper(ex, x, t, None, ctx, None, topts, **(kw or {}))
        ref = []
        for r, (e, own) in enumerate(rows_own):
            if not from_sampler:
                own = WIDTH
            k = dict(kw or {})
            if "num_tokens" in k:
                k["num_tokens"] = own
            if "attention_mask" in k:
                m = k["attention_mask"][r:r + 1, :own]
                if bool(m.all()):
                    del k["attention_mask"]
                else:
                    k["attention_mask"] = m
            ref.append(_model(x[r:r + 1], t[r:r + 1], ctx[r:r + 1, :own], k))
        ref = torch.cat(ref)
        groups = {}
        for r, (e, own) in enumerate(rows_own):
            groups.setdefault(own if from_sampler else WIDTH, []).append(r)
        want = [[rows_own[r][0] for r in rs] for _, rs in sorted(groups.items())] if len(groups) > 1 else [None]
        entries_ok = [c["entries"] for c in ex.calls] == want
        cases.append({"name": name, "equal": bool(torch.equal(got, ref)),
                      "max_diff": float((got - ref).abs().max()), "calls": len(ex.calls),
                      "expect_calls": expect_calls, "entries_ok": bool(entries_ok)})

    run("cond only", N, ["batch"], expect_calls=3)
    run("cond + uncond of the same width", N, ["batch", "other"], expect_calls=3)
    run("latent batch of 2N", 2 * N, ["other", "batch"], expect_calls=3)
    run("context window", 2 * N, ["batch"], window=[1, 2, 4], expect_calls=2)
    run("not from the sampler", N, ["batch"], from_sampler=False, expect_calls=1)
    mask = torch.ones(N, WIDTH, dtype=torch.long)
    mask[0, 4:] = 0  # entry 0: cut to its 2 tokens, all real: the mask is dropped (as for a prompt alone)
    mask[2, 3:] = 0  # entry 2: cut to its 4 tokens, one of them masked: the mask is kept, cut
    run("num_tokens and attention_mask", N, ["batch"], kw={"num_tokens": WIDTH, "attention_mask": mask},
        expect_calls=3)
    print("RESULT_JSON " + json.dumps({"cases": cases}))


if __name__ == "__main__":
    main()
