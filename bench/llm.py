"""Benchmark: LLM Prompt Writer's code path vs raw llama_cpp.Llama, same model, seed and token budget.

Runs the real node classes (nodes/llm.py, imported with the host's folder_paths/comfy modules on sys.path,
no server) against llama_cpp's own create_chat_completion on a second Llama instance of the same file, in
one process, alternating, on the tiny test model and on a random-weight model with Qwen2.5-0.5B layer
shapes (Q8_0).  Ends with:  RESULT tok_ratio=<lean/raw tokens per s, worst model> cached_load_s=<second load>
Targets: tok_ratio >= 0.95, cached_load_s <= 0.01.

    flock /tmp/lean-heavy.lock python bench/llm.py [--host VERSION|PATH] [--rounds 5] [--tokens 256] [--skip-big]
        [--smoke]

--smoke: the tiny model only, 16 tokens, one round after the warm-up (checks that the benchmark still runs; the
figures mean nothing).  Without llama-cpp-python it prints `RESULT skipped=1 why=no_llama_cpp` and exits 3.
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lean_testlib import harness, inproc, tiny_gguf  # noqa: E402


def load_pack(host):
    sys.path.insert(0, str(host))  # folder_paths, comfy.* (the host's own modules)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True  # as the tier-2 host runs (--cpu); no GPU torch here
    inproc.load_pack()  # the repo as package `lean_nodes`
    import importlib
    return importlib.import_module("lean_nodes.nodes.llm")


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per model (after one warm-up round)")
    ap.add_argument("--tokens", type=int, default=256, help="tokens per run on the tiny model")
    ap.add_argument("--big-tokens", type=int, default=64, help="tokens per run on the 0.5B-shaped model")
    ap.add_argument("--skip-big", action="store_true", help="only the tiny model")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 16 tokens, one round")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.tokens, args.skip_big = 1, 16, True

    host, why = harness.find_host()
    if not host:
        sys.exit(f"no ComfyUI host: {why}")
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed in this python: nothing to measure")
        print("RESULT skipped=1 why=no_llama_cpp", flush=True)
        return 3
    nodes_llm = load_pack(host)
    import folder_paths
    from lean_nodes.core.llm_text import build_messages

    models = [("tiny", tiny_gguf.tiny_model("chatml", "Q8_0"), 1024, args.tokens)]
    if not args.skip_big:
        t0 = time.perf_counter()
        big = tiny_gguf.qwen05b_shaped("Q8_0")
        print(f"qwen2.5-0.5B-shaped Q8_0: {big.stat().st_size / 1e6:.0f} MB ({time.perf_counter() - t0:.1f} s to get)")
        models.append(("qwen05b", big, 1024, args.big_tokens))
    for _, path, _, _ in models:
        folder_paths.add_model_folder_path("llm", str(path.parent))

    idea, style, seed, temp, top_p = "a lighthouse on a cliff at dusk", "SD1.5 tags", 42, 0.7, 0.9
    messages = build_messages(idea, style)
    loader, writer = nodes_llm.LeanLLMLoader(), nodes_llm.LeanLLMPrompt()
    ratios = {}
    cached_load = None
    print(f"llama-cpp-python {llama_cpp.__version__}, {os.cpu_count()} CPUs, {args.rounds} rounds + 1 warm-up, "
          f"seed {seed}, same sampler settings; raw = Llama.create_chat_completion on its own instance")
    for name, path, n_ctx, n_tok in models:
        t0 = time.perf_counter()
        (handle,) = loader.load("llama_cpp", path.name, "", "", n_ctx, 0, 0)["result"]
        first_load = time.perf_counter() - t0
        hits = []
        for _ in range(10):
            t0 = time.perf_counter()
            loader.load("llama_cpp", path.name, "", "", n_ctx, 0, 0)
            hits.append(time.perf_counter() - t0)
        if cached_load is None:
            cached_load = hits[0]
        cached_load = max(cached_load, hits[0])
        raw = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_gpu_layers=0, verbose=False)
        lean_tps, raw_tps, same = [], [], []
        for r in range(args.rounds + 1):
            order = ("lean", "raw") if r % 2 == 0 else ("raw", "lean")
            for who in order:
                if who == "lean":
                    t0 = time.perf_counter()
                    out = writer.write(handle, idea, style, "", seed, n_tok, temp, top_p, True,
                                       unique_id="bench")
                    dt = time.perf_counter() - t0
                    n = out["ui"]["lean_llm"][0]["tokens"]
                    lean_tps.append(n / dt)
                    lean_n = n
                else:
                    raw.reset()
                    t0 = time.perf_counter()
                    res = raw.create_chat_completion(messages=messages, seed=seed, max_tokens=n_tok,
                                                     temperature=temp, top_p=top_p, top_k=40, min_p=0.05,
                                                     repeat_penalty=1.0)
                    dt = time.perf_counter() - t0
                    n = res["usage"]["completion_tokens"]
                    raw_tps.append(n / dt)
                    raw_n = n
            same.append(abs(lean_n - raw_n) <= 1)
            if r == 0:  # warm-up
                lean_tps.clear()
                raw_tps.clear()
        raw.close()
        ratio = statistics.median(lean_tps) / statistics.median(raw_tps)
        ratios[name] = ratio
        print(f"{name:8s} first load {first_load:.3f} s, cached load {hits[0] * 1e3:.3f} ms (median of 10 "
              f"{statistics.median(hits) * 1e3:.3f} ms)")
        print(f"{name:8s} {n_tok} tokens: lean {statistics.median(lean_tps):8.1f} tok/s  raw {statistics.median(raw_tps):8.1f} tok/s"
              f"  ratio lean/raw = {ratio:.3f}  (per round lean {[round(x, 1) for x in lean_tps]}, raw "
              f"{[round(x, 1) for x in raw_tps]}; token counts match: {all(same)})")
        handle.free()
    print(f"tok_ratio per model: " + ", ".join(f"{k}={v:.3f}" for k, v in ratios.items()) + " (RESULT: the lowest)")
    print(f"RESULT tok_ratio={min(ratios.values()):.3f} cached_load_s={cached_load:.6f}"
          + (" smoke=1" if args.smoke else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
