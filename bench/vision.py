"""Benchmark: image to prompt -- LLM Prompt Writer's code path with an image vs raw llama_cpp with its own
MTMDChatHandler, same model, projector, picture, seed and sampler settings.

Runs the real node classes (nodes/llm.py with the host's folder_paths/comfy modules on sys.path, no server):
Local LLM Loader (model + mmproj) and LLM Prompt Writer fed the picture as a ComfyUI IMAGE tensor, against
llama_cpp.Llama(chat_handler=MTMDChatHandler(mmproj)).create_chat_completion(stream=True) fed the same picture as
a PNG data URL, alternating, one warm-up round, medians.  Per run: time to the first token (the picture's encode
plus the prompt's evaluation: "encode") and generation speed after it (tokens/s).  Models: the tiny Qwen2-VL-style
pair of the tests and (not with --smoke/--skip-big) a pair with Qwen2.5-0.5B's text shapes and an 8-layer ViT.
Ends with:  RESULT tok_ratio=<lean/raw tokens per s, worst model> encode_ratio=<raw/lean time to first token,
worst model> cached_load_s=<a second load of the same model + projector>
Targets: tok_ratio >= 0.95, encode_ratio >= 0.95, cached_load_s <= 0.01.

    flock /tmp/lean-heavy.lock python bench/vision.py [--host VERSION|PATH] [--rounds 5] [--tokens 64]
        [--skip-big] [--smoke]

--smoke: the tiny pair only, 8 tokens, one round after the warm-up (the figures mean nothing).  Without
llama-cpp-python it prints `RESULT skipped=1 why=no_llama_cpp` and exits 3.
"""
import argparse
import base64
import io
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lean_testlib import harness, images, tiny_vision  # noqa: E402


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per model (after one warm-up round)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per run")
    ap.add_argument("--size", type=int, nargs=2, default=(448, 336), help="picture width height")
    ap.add_argument("--skip-big", action="store_true", help="only the tiny pair")
    ap.add_argument("--smoke", action="store_true", help="tiny pair, 8 tokens, one round")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.tokens, args.skip_big = 1, 8, True

    host, why = harness.find_host()
    if not host:
        sys.exit(f"no ComfyUI host: {why}")
    try:
        import llama_cpp
        from llama_cpp.llama_chat_format import MTMDChatHandler
    except ImportError:
        print("llama-cpp-python (with mtmd) is not installed in this python: nothing to measure")
        print("RESULT skipped=1 why=no_llama_cpp", flush=True)
        return 3
    import llm as bench_llm  # bench/llm.py: the same in-process host setup
    nodes_llm = bench_llm.load_pack(host)
    import folder_paths
    import numpy as np
    import torch
    from PIL import Image
    from lean_nodes.core.llm_text import DESCRIBE, STYLE_PRESETS

    pairs = [("tiny", *(tiny_vision.text_model(), tiny_vision.projector()))]
    if not args.skip_big:
        t0 = time.perf_counter()
        pairs.append(("mid", *tiny_vision.mid_pair()))
        print(f"mid pair ready in {time.perf_counter() - t0:.1f} s", flush=True)
    for _, text, proj in pairs:
        folder_paths.add_model_folder_path("llm", str(text.parent))

    w, h = args.size
    pic = images.photo_like(w, h, seed=0)
    tensor = torch.from_numpy(pic.astype(np.float32) / 255.0)[None]
    buf = io.BytesIO()
    Image.fromarray(pic).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    style, seed, temp, top_p, n_ctx = "describe for SDXL", 42, 0.7, 0.9, 2048
    messages = [{"role": "system", "content": STYLE_PRESETS[style]},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": DESCRIBE}]}]

    first = {}

    class TimedStreamer(nodes_llm._Streamer):  # notes when the node's first token arrives
        def __call__(self, piece, n):
            first.setdefault("t", time.perf_counter())
            super().__call__(piece, n)

    nodes_llm._Streamer = TimedStreamer
    loader, writer = nodes_llm.LeanLLMLoader(), nodes_llm.LeanLLMPrompt()
    tok_ratios, enc_ratios, cached = {}, {}, 0.0
    print(f"llama-cpp-python {llama_cpp.__version__}, {os.cpu_count()} CPUs, picture {w}x{h}, {args.rounds} rounds "
          f"+ 1 warm-up, {args.tokens} tokens, seed {seed}; raw = MTMDChatHandler + create_chat_completion(stream)")
    for name, text, proj in pairs:
        t0 = time.perf_counter()
        (handle,) = loader.load("llama_cpp", text.name, "", "", n_ctx, 0, 0, mmproj=proj.name)["result"]
        first_load = time.perf_counter() - t0
        hits = []
        for _ in range(10):
            t0 = time.perf_counter()
            loader.load("llama_cpp", text.name, "", "", n_ctx, 0, 0, mmproj=proj.name)
            hits.append(time.perf_counter() - t0)
        cached = max(cached, statistics.median(hits))
        raw = llama_cpp.Llama(model_path=str(text), n_ctx=n_ctx, n_gpu_layers=0, verbose=False,
                              chat_handler=MTMDChatHandler(clip_model_path=str(proj), verbose=False, use_gpu=False))
        sampled = []  # raw tokens as Llama.generate yields them (streamed chunks merge split UTF-8 characters)
        generate = raw.generate

        def counting(*a, **k):
            for tok in generate(*a, **k):
                sampled.append(time.perf_counter())
                yield tok

        raw.generate = counting
        lean = {"ttft": [], "tps": []}
        rawm = {"ttft": [], "tps": []}
        counts = []
        for r in range(args.rounds + 1):
            order = ("lean", "raw") if r % 2 == 0 else ("raw", "lean")
            for who in order:
                if who == "lean":
                    first.clear()
                    t0 = time.perf_counter()
                    out = writer.write(handle, "", style, "", seed, args.tokens, temp, top_p, True,
                                       unique_id="bench", image=tensor)
                    t1 = time.perf_counter()
                    n = out["ui"]["lean_llm"][0]["tokens"]
                    tf = first.get("t", t1)
                    m = lean
                else:
                    sampled.clear()
                    t0 = time.perf_counter()
                    for _ in raw.create_chat_completion(messages=messages, seed=seed, max_tokens=args.tokens,
                                                        temperature=temp, top_p=top_p, top_k=40, min_p=0.05,
                                                        repeat_penalty=1.0, stream=True):
                        pass
                    t1 = time.perf_counter()
                    # llama_cpp samples a few tokens past max_tokens when they end inside a UTF-8 character: count
                    # the first max_tokens, as the node does
                    n = min(len(sampled), args.tokens)
                    tf = sampled[0] if sampled else t1
                    t1 = sampled[n - 1] if n else t1
                    m = rawm
                if r:  # round 0 warms both up
                    m["ttft"].append(tf - t0)
                    m["tps"].append((n - 1) / (t1 - tf) if n > 1 and t1 > tf else float("nan"))
                counts.append((who, n))
        raw.close()
        med = {k: (statistics.median(lean[k]), statistics.median(rawm[k])) for k in lean}
        tok_ratios[name] = med["tps"][0] / med["tps"][1]
        enc_ratios[name] = med["ttft"][1] / med["ttft"][0]
        print(f"{name:5s} first load {first_load:.3f} s, cached load median {statistics.median(hits) * 1e3:.3f} ms")
        print(f"{name:5s} time to first token (encode + prompt): lean {med['ttft'][0] * 1e3:.1f} ms, raw "
              f"{med['ttft'][1] * 1e3:.1f} ms -> raw/lean {enc_ratios[name]:.3f}")
        print(f"{name:5s} generation: lean {med['tps'][0]:.1f} tok/s, raw {med['tps'][1]:.1f} tok/s -> lean/raw "
              f"{tok_ratios[name]:.3f}; token counts {sorted(set(counts))}", flush=True)
        handle.free()
    print("per model: " + ", ".join(f"{k} tok={tok_ratios[k]:.3f} encode={enc_ratios[k]:.3f}" for k in tok_ratios)
          + " (RESULT: the lowest)")
    print(f"RESULT tok_ratio={min(tok_ratios.values()):.3f} encode_ratio={min(enc_ratios.values()):.3f} "
          f"cached_load_s={cached:.6f}" + (" smoke=1" if args.smoke else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
