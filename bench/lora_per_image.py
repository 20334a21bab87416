"""Benchmark: a different LoRA set per image in ONE sampler pass (LeanPromptBatch's <lora:...> tags) vs the stock way.

  8 images, 4 LoRA sets (none; one LoRA; two LoRAs at other strengths; one LoRA with lbw=MIDD), two images per set:
  - lean:  LeanPromptBatch (8 lines, the tags of each set on its two lines, `model` input) -> one KSampler, batch 8
  - stock: per set, stock LoraLoader chain (the file filtered to MIDD's blocks for lbw: stock has no block weights)
           + CLIPTextEncode + KSampler with batch 2 (on the same rows' noise: batch_index 2k, 2k+1): 4 runs
  Each contender runs in a fresh process (the SD1.5 fixture loaded and made ready before the clock starts), lean and
  stock alternating, first one then the other, over several pairs; figures are medians.
  - wall_ratio:     lean / stock wall time of the work (LoRAs, text encoding, sampling of all 8 images)
  - peak_rss_ratio: lean / stock peak RSS of the process during the work (VmHWM, reset after the model load)
  - max_abs_diff:   the largest |lean - stock| over the 8 latents (each image's own is printed)
  - overhead:       the per-row branch vs the plain branch (LeanLoraLoader) at batch 8, the same LoRA on every image:
                    sampling time per-row / plain - 1 (one process, alternating, medians)

Ends with `RESULT wall_ratio=... peak_rss_ratio=... max_abs_diff=... overhead=... pairs=...`.
Targets (issue 23): wall_ratio <= 0.6, peak_rss_ratio <= 1.0, overhead <= 0.15.
--smoke: 64x64, 1 step, one pair, one overhead round, the SD1.5 fixture's narrow variant (lean_testlib.sd15.NARROW: its
keys and blocks at 320 channels) and its LoRAs (checks that the benchmark runs; the figures mean nothing).

Usage: flock /tmp/lean-heavy.lock python bench/lora_per_image.py [--host VERSION|PATH] [--pairs 3] [--size 64]
       [--steps 4] [--overhead-rounds 4]
(The defaults fit a 2-core CPU: the SD1.5 fixture at 64x64 costs ~0.5 s per image and step there; at larger sizes the
sampling, the same work for both contenders, weighs more and wall_ratio moves towards 1 + the branch cost.)
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import add_host_to_path, sd15_narrow, smoke  # noqa: E402  (also puts tests/ on sys.path)
from lean_testlib.inproc import load_pack  # noqa: E402

SETS = [  # (prompt with tags, stock chain [(file, strength_model, strength_clip)])
    ("a red cube on a table", []),
    ("a blue sphere <lora:bench_a:0.8>", [("bench_a", 0.8, 0.8)]),
    ("a green cone <lora:bench_b:0.6:0.3> <lora:bench_c:-0.5>", [("bench_b", 0.6, 0.3), ("bench_c", -0.5, -0.5)]),
    ("a yellow house <lora:bench_a:0.9:lbw=MIDD>", [("bench_a_midd", 0.9, 0.9)]),
]
CLEAN = ["a red cube on a table", "a blue sphere", "a green cone", "a yellow house"]
PER_SET = 2
SEED, CFG = 1, 7.0


def setup_host():
    add_host_to_path()
    from comfy.cli_args import args
    args.cpu = True
    # fp32 text encoder, as the tier-2 tests run it: on --cpu ComfyUI keeps it in fp16, where stock LoraLoader rounds
    # W + dW to fp16 while the branch adds the exact product (tests/test_tier2_lora.py); max_abs_diff then compares
    # the two paths, not that rounding
    args.fp32_text_enc = True
    import folder_paths
    from lean_testlib import lbw_presets, lora as kohya, lora_extra, sd15
    n = sd15_narrow()  # --smoke: the SD1.5 fixture's narrow variant (the children too)
    loras = pathlib.Path(tempfile.mkdtemp(prefix="lean-bench-pi-"))
    files = {"bench_a": kohya.sd15_lora(seed=0, narrow=n), "bench_b": kohya.sd15_lora(seed=1, narrow=n),
             "bench_c": kohya.sd15_lora(seed=2, narrow=n),
             "bench_a_midd": lora_extra.filtered_lora(lbw_presets.blocks_on("sd15", "MIDD"), seed=0, narrow=n)}
    for name, src in files.items():
        (loras / f"{name}.safetensors").symlink_to(pathlib.Path(src).resolve())
    folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    load_pack("lean_nodes")
    return sd15.sd15_checkpoint(narrow=n)


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    """Start VmHWM again from the current RSS (Linux >= 4.0: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def load(ckpt):
    import comfy.model_management as mm
    import comfy.sd
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clipvision=False)
    mm.load_models_gpu([model])
    clip.load_model()
    return model, clip


def encode(clip, text):
    import nodes
    return nodes.CLIPTextEncode().encode(clip, text)[0]


def ksample(model, pos, neg, n, size, steps, batch_index=None):
    import torch
    import nodes
    lat = {"samples": torch.zeros(n, 4, size // 8, size // 8)}
    if batch_index is not None:
        lat["batch_index"] = batch_index
    return nodes.common_ksampler(model, SEED, steps, CFG, "euler", "normal", pos, neg, lat)[0]["samples"]


def lean_run(model, clip, size, steps):
    from lean_nodes.nodes.prompt_batch import LeanPromptBatch
    text = "\n".join(t for t, _ in SETS for _ in range(PER_SET))
    cond, _, n, _, m = LeanPromptBatch().build(clip, text, "lines", 16, 0, "", "", model=model)["result"]
    return ksample(m, cond, encode(clip, "blurry"), n, size, steps)


def stock_run(model, clip, size, steps):
    import torch
    import nodes
    neg = encode(clip, "blurry")
    out = []
    for k, (_, chain) in enumerate(SETS):
        m, c = model, clip
        for f, sm, sc in chain:
            m, c = nodes.LoraLoader().load_lora(m, c, f + ".safetensors", sm, sc)
        out.append(ksample(m, encode(c, CLEAN[k]), neg, PER_SET, size, steps,
                           batch_index=list(range(PER_SET * k, PER_SET * (k + 1)))))
    return torch.cat(out)


def worker(who, size, steps, out_path):
    import torch
    from safetensors.torch import save_file
    torch.set_grad_enabled(False)
    model, clip = load(setup_host())
    base = status("VmRSS")
    reset_peak()
    t = time.perf_counter()
    lat = (lean_run if who == "lean" else stock_run)(model, clip, size, steps)
    wall = time.perf_counter() - t
    peak = status("VmHWM")
    save_file({"latent": lat.float().contiguous()}, out_path)
    return {"wall": wall, "peak": peak, "base": base}


def overhead_worker(size, steps, rounds):
    """Sampling time at batch 8 with the same LoRA on every image: per-row branch vs LeanLoraLoader's plain branch."""
    import torch
    torch.set_grad_enabled(False)
    model, clip = load(setup_host())
    from lean_nodes.nodes.lora import LeanLoraLoader
    from lean_nodes.nodes.prompt_batch import LeanPromptBatch
    n = len(SETS) * PER_SET
    row = LeanPromptBatch().build(clip, "\n".join(["a red cube <lora:bench_a:0.8>"] * n), "lines", 16, 0, "", "",
                                  model=model)["result"]
    pm, pc, _ = LeanLoraLoader().apply(model, clip, "bench_a.safetensors", 0.8, 0.8)["result"]
    plain = LeanPromptBatch().build(pc, "\n".join(["a red cube"] * n), "lines", 16, 0, "", "")["result"]
    neg = encode(clip, "blurry")
    runs = {"row": lambda: ksample(row[4], row[0], neg, n, size, steps),
            "plain": lambda: ksample(pm, plain[0], neg, n, size, steps)}
    got = {"row": [], "plain": []}
    last = {}
    for k in runs:  # warm both alike, not counted (not in a smoke run: its timings are not checked)
        if not smoke():
            runs[k]()
    for r in range(rounds):
        for k in (("row", "plain") if r % 2 == 0 else ("plain", "row")):
            t = time.perf_counter()
            last[k] = runs[k]()
            got[k].append(time.perf_counter() - t)
    same = float((last["row"] - last["plain"]).abs().max())
    return {"row": got["row"], "plain": got["plain"], "same_result_max_abs": same}


def child(args):
    cmd = [sys.executable, __file__, *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not lines:
        print(r.stdout[-2000:], r.stderr[-4000:])
        raise SystemExit(f"{' '.join(args)}: failed")
    return json.loads(lines[-1])


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--size", type=int, default=64, help="image size (latent = size/8)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--overhead-rounds", type=int, default=4)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--worker", choices=("lean", "stock", "overhead"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.smoke:
        a.pairs, a.size, a.steps, a.overhead_rounds = 1, 64, 1, 1
        _common.smoke_on_narrow(True)
    if a.worker == "overhead":
        print(json.dumps(overhead_worker(a.size, a.steps, a.overhead_rounds)))
        return
    if a.worker:
        print(json.dumps(worker(a.worker, a.size, a.steps, a.out)))
        return
    from safetensors.torch import load_file
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="lean-bench-pi-out-"))
    res = {"lean": [], "stock": []}
    lat = {}
    common = ["--size", str(a.size), "--steps", str(a.steps)]
    for p in range(a.pairs):
        for who in (("lean", "stock") if p % 2 == 0 else ("stock", "lean")):
            out = tmp / f"{who}.safetensors"
            r = child(["--worker", who, "--out", str(out), *common])
            res[who].append(r)
            lat[who] = load_file(str(out))["latent"]
            print(f"pair {p + 1} {who}: wall {r['wall']:.2f}s  peak RSS {r['peak'] / 2**20:.0f} MiB "
                  f"(after load {r['base'] / 2**20:.0f} MiB)", flush=True)
    per_image = [float((lat["lean"][i] - lat["stock"][i]).abs().max()) for i in range(lat["lean"].shape[0])]
    scale = float(lat["stock"].abs().max())
    print(f"max_abs_diff per image (latents up to {scale:.3g}): " + " ".join(f"{d:.2e}" for d in per_image))
    wl = statistics.median(r["wall"] for r in res["lean"])
    ws = statistics.median(r["wall"] for r in res["stock"])
    pl = statistics.median(r["peak"] for r in res["lean"])
    ps = statistics.median(r["peak"] for r in res["stock"])
    added = {k: statistics.median(r["peak"] - r["base"] for r in v) for k, v in res.items()}
    print(f"wall (median of {a.pairs}): lean {wl:.2f}s  stock {ws:.2f}s; peak RSS lean {pl / 2**20:.0f} MiB  stock "
          f"{ps / 2**20:.0f} MiB (added over the loaded model: lean {added['lean'] / 2**20:.0f} MiB, stock "
          f"{added['stock'] / 2**20:.0f} MiB); {a.size}x{a.size}, {a.steps} steps, cfg {CFG}", flush=True)
    ov = child(["--worker", "overhead", "--overhead-rounds", str(a.overhead_rounds), *common])
    orow, oplain = statistics.median(ov["row"]), statistics.median(ov["plain"])
    print(f"batch 8, same LoRA on every image: per-row branch {orow:.2f}s  plain branch {oplain:.2f}s (median of "
          f"{len(ov['row'])}; runs row {['%.2f' % x for x in ov['row']]}, plain {['%.2f' % x for x in ov['plain']]}); "
          f"their latents differ by {ov['same_result_max_abs']}", flush=True)
    figures = {"wall_ratio": round(wl / ws, 3), "peak_rss_ratio": round(pl / ps, 3),
               "max_abs_diff": float(f"{max(per_image):.3g}"), "overhead": round(orow / oplain - 1, 3),
               "pairs": a.pairs}
    if a.smoke:
        figures["smoke"] = 1
    print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
