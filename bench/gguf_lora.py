"""Benchmark: sampling step time of a ComfyUI-GGUF model with 1, 2 and 4 LoRAs, LeanLoraLoader vs stock
LoraLoaderModelOnly, side by side in one host (fp32 on CPU unless the host has an accelerator).

ComfyUI-GGUF applies stock LoRA patches inside every forward (dequantise W, then W + s*(B@A) for each LoRA, per
layer, per step: its issue #36, "every LoRA added slows it"); Lean adds s*B(A x) beside the untouched quantized
layer.  The host runs with ComfyUI-GGUF installed from ../shared/peers (sha256 checked) and the tiny Flux
(lean_testlib.flux_tiny: Flux-dev widths, one double and one single block) as GGUF (lean_testlib.gguf_unet),
rank-16 kohya LoRAs on all 13 block linears.  Each (contender, LoRA count) is warmed once; then the contenders
(none, stock, lean) run in rotating order for --pairs rounds and the median ms per step is reported.

  RESULT host=<v> model=flux_<q> none_ms=.. stock_ms_<n>=.. lean_ms_<n>=.. lean_vs_stock_<n>=.. ...

Usage: flock /tmp/lean-heavy.lock python bench/gguf_lora.py --host 0.33.0 [--qtype Q8_0] [--pairs 5] [--steps 4]
       ... --smoke   (1 LoRA, 1 round, 1 step: checks that the benchmark runs; no targets)
"""
import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common  # noqa: E402  (also puts tests/ on sys.path)
from lean_testlib import flux_cond_node, flux_tiny, gguf_unet, harness, probe_node  # noqa: E402

PEER = "comfyui-gguf-795e451.tar.gz"


def graph(q, contender, n, steps, seed):
    g = {"m": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": f"bench_flux_{q}.gguf"}},
         "c": {"class_type": "TestFluxCond_lean", "inputs": {"seed": 1, "tokens": 8, "context_dim": 4096,
                                                              "guidance": 3.5}},
         "e": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
         "nc": {"class_type": "TestNoneClip_lean", "inputs": {}}}
    model = ["m", 0]
    for i in range(n if contender != "none" else 0):
        name = f"bench_flux_lora_{i}.safetensors"
        if contender == "stock":
            inp = {"model": model, "lora_name": name, "strength_model": 0.8}
            g[f"l{i}"] = {"class_type": "LoraLoaderModelOnly", "inputs": inp}
        else:
            inp = {"model": model, "clip": ["nc", 0], "lora_name": name, "strength_model": 0.8, "strength_clip": 0.0,
                   "schedule": "", "block_weights": ""}
            g[f"l{i}"] = {"class_type": "LeanLoraLoader", "inputs": inp}
        model = [f"l{i}", 0]
    g["s"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["c", 0], "negative": ["c", 0], "latent_image": ["e", 0], "seed": seed,
        "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    g["p"] = {"class_type": "TestProbe_lean", "inputs": {"name": "bench", "latent": ["s", 0]}}
    return g


def main():
    path = _common.host_from_argv() or _common.host_or_exit()
    ap = argparse.ArgumentParser()
    ap.add_argument("--qtype", default="Q8_0", choices=("Q8_0", "Q4_0"))
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--smoke", action="store_true", help="1 LoRA, 1 round, 1 step; no targets")
    a = ap.parse_args()
    counts = (1,) if a.smoke else (1, 2, 4)
    pairs, steps = (1, 1) if a.smoke else (a.pairs, a.steps)
    base = harness.make_base_dir(tempfile.mkdtemp(prefix="lean-bench-gguf-"))
    harness.install_peer(base, PEER)
    probe_node.install(base)
    flux_cond_node.install(base)
    harness.link_model(base, "diffusion_models", gguf_unet.flux_gguf(a.qtype), f"bench_flux_{a.qtype}.gguf")
    for i in range(max(counts)):
        harness.link_model(base, "loras", flux_tiny.flux_kohya_lora(seed=100 + i, rank=a.rank),
                           f"bench_flux_lora_{i}.safetensors")
    host = harness.ComfyHost.start(path, base)
    seed = [0]

    def timed(contender, n):
        seed[0] += 1
        t = time.perf_counter()
        host.run(graph(a.qtype, contender, n, steps, seed[0]))
        return (time.perf_counter() - t) * 1000 / steps

    try:
        contenders = [("none", 0)] + [(c, n) for n in counts for c in ("stock", "lean")]
        for c, n in contenders:  # warm each alike: loads, LoRA mapping, first patching (a smoke run checks no time)
            if not a.smoke:
                timed(c, n)
        times = {k: [] for k in contenders}
        for r in range(pairs):
            k = r % len(contenders)
            for c, n in contenders[k:] + contenders[:k]:  # rotate who goes first
                times[(c, n)].append(timed(c, n))
        med = {k: statistics.median(v) for k, v in times.items()}
        figures = {"host": harness.host_version(path), "model": f"flux_{a.qtype}", "steps": steps, "rounds": pairs,
                   "none_ms": med[("none", 0)]}
        if a.smoke:
            figures["smoke"] = 1
        print(f"no LoRA: {med[('none', 0)]:.0f} ms/step")
        for n in counts:
            s, le = med[("stock", n)], med[("lean", n)]
            print(f"{n} LoRA(s): stock {s:.0f} ms/step, lean {le:.0f} ms/step, lean/stock {le / s:.3f}  "
                  f"(all: stock {[round(x) for x in times[('stock', n)]]}, lean {[round(x) for x in times[('lean', n)]]})")
            figures.update({f"stock_ms_{n}": s, f"lean_ms_{n}": le, f"lean_vs_stock_{n}": _common.ratio(le, s)})
        _common.result(**figures)
    finally:
        host.stop()


if __name__ == "__main__":
    main()
