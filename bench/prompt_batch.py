"""Benchmark: LeanPromptBatch vs stock, on the SD1.5 fixture checkpoint, in the host's own code.

    flock /tmp/lean-heavy.lock python bench/prompt_batch.py [--host VERSION|PATH] [--repeats 5] [--smoke]

(a) encode: 16 prompts of mixed lengths (1-3 chunks of 77 tokens) -> LeanPromptBatch's batched encode
    vs 16 stock CLIPTextEncode calls.
(b) end to end, 64x64, 1 step: LeanPromptBatch + one KSampler over a batch of 16 + one VAEDecode vs 16
    sequential stock prompts (CLIPTextEncode + EmptyLatentImage(1) + KSampler + VAEDecode each; the
    negative prompt is encoded once for both, as the host's cache would).

Runs inside one process with the host's modules (ComfyUI found through COMFYUI_PATH or ~/ComfyUI), so
what is timed is the host's compute, not HTTP or queue overhead.  The contenders alternate, each
figure is the median of --repeats runs after one warm-up.  Ends with
    RESULT encode_ratio=<lean/stock time> e2e_ratio=<lean/sequential time> images=<n>
--smoke: 4 of the prompts (one of each length and a weighted one), one repeat, the SD1.5 fixture's narrow variant
(lean_testlib.sd15.NARROW; checks that the benchmark still runs; the figures mean nothing).

--family zimage (ComfyUI 0.33.0 and later): the tiny Z-Image fixtures (lean_testlib.families: the DiT at Z-Image's
width 3840 with one layer and its 2 + 2 refiners, the Qwen3-4B-shaped encoder with its 28 layers at one head of
128, built by the host through the test-only hook lean_testlib.tiny_te_node), 8 prompts of 1 to ~110 words,
64x64, 2 steps at cfg 1 (Z-Image Turbo's way), no VAE:
(a) encode: LeanPromptBatch (the prompts side by side in one pass of the LLM encoder, each masked to its own
    tokens: nodes/prompt_batch.encode_llm_rows) vs 8 stock CLIPTextEncode;
(b) end to end: LeanPromptBatch (its `model` output: each token length runs with its own text, nodes/_text_split.py)
    + one KSampler over the batch of 8 vs 8 x (CLIPTextEncode + KSampler of one).
It also checks what it times: image i of the batch equals stock's image i within 1e-4 of its scale (max_rel_diff).
Ends with RESULT encode_ratio=... e2e_ratio=... images=8 family=zimage max_rel_diff=... lengths=<distinct>
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from lean_testlib import inproc, sd15  # noqa: E402

FILLER = ["sharp focus", "golden hour", "highly detailed", "soft light", "wide angle", "film grain",
          "bokeh", "ultra wide", "cinematic", "muted colors"]


def prompts16():
    """16 prompts: 6 of one chunk, 6 of two, 4 of three; every other prompt has (word:1.2) weights (the smoke
    run takes prompts 0, 3, 6, 7: one, two and three chunks, weighted ones among them)."""
    out = []
    for i in range(16):
        chunks = 1 if i % 8 < 3 else (2 if i % 8 < 6 else 3)
        words = [f"a {['red', 'green', 'blue', 'gold'][i % 4]} {['cube', 'fox', 'house', 'ship'][i // 4]}"]
        target = {1: 20, 2: 110, 3: 190}[chunks]
        k = 0
        while len(", ".join(words).split()) * 1.5 < target:
            w = FILLER[(i + k) % len(FILLER)]
            words.append(f"({w}:1.2)" if (i % 2 == 0 and k % 7 == 3) else w)
            k += 1
        out.append(", ".join(words))
    return out


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def compare(pairs, repeats, warm=True):
    """For each (name, lean, stock): one warm-up of each (not in a smoke run: warm=False), then `repeats` runs
    alternating which goes first.  Returns ({name: median lean / median stock}, {(name, is_lean): the output of its
    last run})."""
    results, last = {}, {}
    for name, lean, stock in pairs:
        if warm:
            lean(), stock()  # warm-up: model loads, allocator
        tl, ts = [], []
        for r in range(repeats):
            order = [(lean, tl), (stock, ts)] if r % 2 == 0 else [(stock, ts), (lean, tl)]
            for fn, acc in order:
                dt, out = timed(fn)
                acc.append(dt)
                last[(name, fn is lean)] = out
        ml, ms = statistics.median(tl), statistics.median(ts)
        results[name] = ml / ms
        print(f"{name:7s} lean {ml * 1000:8.1f} ms   stock {ms * 1000:8.1f} ms   ratio lean/stock {ml / ms:.3f}"
              f"   (runs lean {[round(x, 3) for x in tl]} stock {[round(x, 3) for x in ts]})")
    return results, last


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=int(os.environ.get("LEAN_BENCH_REPEATS", 5)))
    ap.add_argument("--smoke", action="store_true", help="4 prompts, one repeat: does the benchmark still run")
    ap.add_argument("--family", choices=["sd15", "zimage"], default="sd15")
    args = ap.parse_args()
    if args.smoke:
        args.repeats = 1
    if args.family == "zimage":
        return zimage(args)

    inproc.load_host()
    import torch
    import nodes as host_nodes
    inproc.load_pack()
    from lean_nodes.nodes import prompt_batch as PB

    torch.set_grad_enabled(False)
    model, clip, vae = inproc.load_checkpoint(sd15.sd15_checkpoint(narrow=args.smoke))  # --smoke: bench/_common.py
    texts = prompts16()
    if args.smoke:
        texts = [texts[i] for i in (0, 3, 6, 7)]
    count = len(texts)
    chunks = [len(clip.tokenize(t)["l"]) for t in texts]
    print(f"prompts: {len(texts)}, chunks per prompt: {chunks}")
    enc = host_nodes.CLIPTextEncode()
    ks = host_nodes.KSampler()
    dec = host_nodes.VAEDecode()
    node = PB.LeanPromptBatch()
    text = "\n".join(texts)
    negative = enc.encode(clip, "")[0]

    def lean_encode():
        return node.build(clip, text, "lines", count, 0, "", "")["result"]

    def stock_encode():
        return [enc.encode(clip, t)[0] for t in texts]

    def lean_e2e():
        cond, _, n = lean_encode()[:3]
        latent = host_nodes.EmptyLatentImage().generate(64, 64, n)[0]
        out = ks.sample(model, 1, 1, 7.0, "euler", "normal", cond, negative, latent)[0]
        return dec.decode(vae, out)[0]

    def stock_e2e():
        imgs = []
        for t in texts:
            cond = enc.encode(clip, t)[0]
            latent = host_nodes.EmptyLatentImage().generate(64, 64, 1)[0]
            out = ks.sample(model, 1, 1, 7.0, "euler", "normal", cond, negative, latent)[0]
            imgs.append(dec.decode(vae, out)[0])
        return torch.cat(imgs)

    results, last = compare((("encode", lean_encode, stock_encode), ("e2e", lean_e2e, stock_e2e)), args.repeats,
                            warm=not args.smoke)
    images = last[("e2e", True)].shape[0]
    # sanity: the batch equals the stock encodes (the bench would be meaningless otherwise)
    cond = lean_encode()[0][0][0]
    for i, c in enumerate(stock_encode()):
        t = c[0][0]
        err = (cond[i:i + 1, :t.shape[1]] - t).abs().max().item()
        assert err < 1e-3, f"prompt {i}: batch differs from CLIPTextEncode by {err}"
    print(f"torch threads: {torch.get_num_threads()}, device: {clip.patcher.load_device}")
    print(f"RESULT encode_ratio={results['encode']:.3f} e2e_ratio={results['e2e']:.3f} images={images}"
          + (" smoke=1" if args.smoke else ""))


LONG = "a lighthouse on a rocky coast at dusk, waves breaking on the rocks, warm light in the windows"


def prompts_zimage():
    """8 prompts of very different token counts (1 to ~110 words)."""
    return ["x", "a red cube", "a red cube on a wooden table", "a fox in the snow, " + LONG,
            LONG, ", ".join([LONG] * 2), ", ".join([LONG] * 4), ", ".join([LONG] * 6)]


def zimage(args):
    inproc.load_host()
    import torch
    import comfy.sd
    import nodes as host_nodes
    from lean_testlib import families, tiny_te_node
    tiny_te_node._install()  # the host builds the tiny Qwen3-4B fixture with its own classes
    inproc.load_pack()
    from lean_nodes.nodes import prompt_batch as PB

    torch.set_grad_enabled(False)
    if not hasattr(comfy.sd.CLIPType, "FLUX2"):  # 0.3.64 has a LUMINA2 type, but Gemma-2 only: no Qwen3-4B
        raise SystemExit("this ComfyUI has no Z-Image (Lumina2 / Qwen3-4B): use --host 0.33.0")
    model = comfy.sd.load_diffusion_model(str(families.zimage_tiny()))
    clip = comfy.sd.load_clip(ckpt_paths=[str(families.qwen3_4b_tiny())], clip_type=comfy.sd.CLIPType.LUMINA2)
    texts = prompts_zimage()
    if args.smoke:
        texts = [texts[0], texts[4]]
    n = len(texts)
    steps = 1 if args.smoke else 2
    enc = host_nodes.CLIPTextEncode()
    ks = host_nodes.KSampler()
    node = PB.LeanPromptBatch()
    text = "\n".join(texts)
    latent_n = {"samples": torch.zeros((n, 16, 8, 8))}  # EmptySD3LatentImage(64, 64, n): Z-Image's 16 channels

    def lean_encode():
        return node.build(clip, text, "lines", n, 0, "", "", model=model)["result"]

    def stock_encode():
        return [enc.encode(clip, t)[0] for t in texts]

    lengths = [c[0][0].shape[1] for c in stock_encode()]
    print(f"prompts: {n}, tokens per prompt: {lengths}")

    def lean_e2e():
        res = lean_encode()
        cond, out_model = res[0], res[4]
        return ks.sample(out_model, 7, steps, 1.0, "euler", "simple", cond, cond, latent_n)[0]["samples"]

    def stock_e2e():
        outs = []
        for i, t in enumerate(texts):
            cond = enc.encode(clip, t)[0]
            one = {"samples": latent_n["samples"][i:i + 1].clone(), "batch_index": [i]}
            outs.append(ks.sample(model, 7, steps, 1.0, "euler", "simple", cond, cond, one)[0]["samples"])
        return torch.cat(outs)

    results, last = compare((("encode", lean_encode, stock_encode), ("e2e", lean_e2e, stock_e2e)), args.repeats,
                            warm=not args.smoke)
    got, ref = last[("e2e", True)], last[("e2e", False)]
    rel = max(((got[i] - ref[i]).abs().max() / ref[i].abs().max().clamp(min=1.0)).item() for i in range(n))
    assert rel <= 1e-4, f"image of the batch differs from stock's image alone by {rel} of its scale"
    print(f"torch threads: {torch.get_num_threads()}, device: {clip.patcher.load_device}")
    print(f"RESULT encode_ratio={results['encode']:.3f} e2e_ratio={results['e2e']:.3f} images={n} family=zimage "
          f"max_rel_diff={rel:.2e} lengths={len(set(lengths))}" + (" smoke=1" if args.smoke else ""))


if __name__ == "__main__":
    main()
