"""Benchmark: Lean LoRA (low-rank branch) vs stock LoraLoader and core hooks, in one run, fp32 on CPU.

  (a) change strength_model and get the model + CLIP ready to sample: LeanLoraLoader vs stock LoraLoader
  (b) 10 steps with a 5-keyframe strength schedule: Lean vs core hooks (CreateHookLora + keyframes), and
      Lean vs no LoRA
  (c) RSS added by 4 stacked LoRAs (model + CLIP ready, one step sampled): Lean vs stock (one subprocess each)

Runs the host's own code in-process (comfy.*, nodes.py, comfy_extras.nodes_hooks) with the SD1.5 fixture and
rank-32 kohya fixture LoRAs.  Contenders alternate in blocks (the first run of a block, which pays for switching
away from the other contender's patched weights, is not counted).  Ends with

  RESULT restrength_ratio=<lean/stock> schedule_vs_hooks=<lean/hooks> step_overhead=<lean/none - 1> mem_ratio=<lean/stock>

Every figure is a median over the rounds.  With --only-time, (a) and (b) run and the line has no mem_ratio (what
was not measured is not printed).  --smoke: one round, 1 step at 64x64, (a) + (b) + (c) each once, on the SD1.5
fixture's narrow variant and its LoRAs (lean_testlib.sd15.NARROW; checks that the benchmark still runs; the figures
mean nothing).

Usage: flock /tmp/lean-heavy.lock python bench/lora.py [--host VERSION|PATH] [--rounds 3] [--size 64] [--only-time]
"""
import argparse
import gc
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

SCHED = "0:1,0.25:0.6,0.5:1.2,0.75:0.4,1:0.8"  # 5 keyframes
KEYFRAMES = [(0.0, 1.0), (0.25, 0.6), (0.5, 1.2), (0.75, 0.4), (1.0, 0.8)]


def setup_host():
    add_host_to_path()
    from comfy.cli_args import args
    args.cpu = True
    import folder_paths
    from lean_testlib import lora as kohya, sd15
    loras = pathlib.Path(tempfile.mkdtemp(prefix="lean-bench-loras-"))
    for seed in range(4):
        harness_link(kohya.sd15_lora(seed=seed, rank=32, narrow=sd15_narrow()),
                     loras / f"bench_lora_{seed}.safetensors")
    folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    # the pack, as ComfyUI loads it (a package by file location; never the repo root on sys.path)
    load_pack("lean_nodes")
    return sd15.sd15_checkpoint(narrow=sd15_narrow())  # --smoke: the narrow SD1.5 fixture (bench/_common.py)


def harness_link(src, dst):
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    dst.symlink_to(pathlib.Path(src).resolve())


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def load_base(ckpt):
    import comfy.sd
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clipvision=False)
    return model, clip


def ready(model, clip):
    """What the next sampling needs: both models loaded (patched) on the compute device."""
    import comfy.model_management as mm
    mm.load_models_gpu([model])
    clip.load_model()


def sample(model, pos, neg, steps, size, seed=1):
    import torch
    import nodes
    lat = {"samples": torch.zeros(1, 4, size // 8, size // 8)}
    return nodes.common_ksampler(model, seed, steps, 7.0, "euler", "normal", pos, neg, lat)[0]["samples"]


def encode(clip, text):
    import nodes
    return nodes.CLIPTextEncode().encode(clip, text)[0]


def lean_loader():
    from lean_nodes.nodes import lora as lean
    return lean.LeanLoraLoader()


def lean_apply(node, model, clip, name, sm, sc, schedule=""):
    """(model, clip) from LeanLoraLoader.apply (its further outputs, e.g. trigger_words, are not needed here)."""
    out = node.apply(model, clip, name, sm, sc, schedule, "")
    m, c = out["result"][:2]
    return m, c


# ------------------------------------------------------------------ (a) + (b)

def bench_time(ckpt, rounds, size, steps=10):
    import nodes
    from comfy_extras import nodes_hooks as nh
    model, clip = load_base(ckpt)
    name = "bench_lora_0.safetensors"
    stock = nodes.LoraLoader()
    lean = lean_loader()
    strengths = iter([0.5 + 0.05 * i for i in range(1000)])

    def restrength_stock():
        t = time.perf_counter()
        m, c = stock.load_lora(model, clip, name, next(strengths), 1.0)
        ready(m, c)
        return time.perf_counter() - t

    def restrength_lean():
        t = time.perf_counter()
        m, c = lean_apply(lean, model, clip, name, next(strengths), 1.0)
        ready(m, c)
        return time.perf_counter() - t

    def block(fn, n):
        if not smoke():  # (a smoke run checks that the code runs, not its timings)
            fn()  # pays for switching away from the other contender; not counted
        return [fn() for _ in range(n)]

    ready(model, clip)
    a = {"stock": [], "lean": []}
    for r in range(rounds):  # alternating blocks, the first of each not counted
        for who in (("stock", "lean") if r % 2 == 0 else ("lean", "stock")):
            a[who] += block(restrength_stock if who == "stock" else restrength_lean, 2)
    st, le = statistics.median(a["stock"]), statistics.median(a["lean"])
    print(f"(a) restrength + ready: stock {st:.3f}s  lean {le:.4f}s  ratio {le / st:.4f}  "
          f"(runs stock {['%.2f' % x for x in a['stock']]}, lean {['%.4f' % x for x in a['lean']]})", flush=True)

    # (b) `steps` steps (10), 5-keyframe schedule
    text = "a red cube on a table"
    lm, lc = lean_apply(lean_loader(), model, clip, name, 1.0, 1.0, SCHED)
    lpos, lneg = encode(lc, text), encode(lc, "blurry")
    hooks = nh.CreateHookLora().create_hook(name, 1.0, 1.0)[0]
    kf = None
    for p, v in KEYFRAMES:
        kf = nh.CreateHookKeyframe().create_hook_keyframe(v, p, kf)[0]
    hooks = nh.SetHookKeyframes().set_hook_keyframes(hooks, kf)[0]
    hc = nh.SetClipHooks().apply_hooks(clip, False, True, hooks)[0]
    hpos, hneg = encode(hc, text), encode(hc, "blurry")
    npos, nneg = encode(clip, text), encode(clip, "blurry")
    runs = {"none": lambda: sample(model, npos, nneg, steps, size),
            "lean": lambda: sample(lm, lpos, lneg, steps, size),
            "hooks": lambda: sample(model, hpos, hneg, steps, size)}
    tb = {k: [] for k in runs}
    for r in range(rounds):
        for k in (("none", "lean", "hooks") if r % 2 == 0 else ("hooks", "lean", "none")):
            if not smoke():
                runs[k]()  # warm/switch run, not counted
            t = time.perf_counter()
            runs[k]()
            tb[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in tb.items()}
    print(f"(b) {steps} steps {size}x{size}, 5-keyframe schedule: none {med['none']:.2f}s  lean {med['lean']:.2f}s  "
          f"hooks {med['hooks']:.2f}s  lean/hooks {med['lean'] / med['hooks']:.3f}  "
          f"lean/none-1 {med['lean'] / med['none'] - 1:+.3f}  (median of {rounds}; runs "
          f"{ {k: ['%.2f' % x for x in v] for k, v in tb.items()} })", flush=True)
    return le / st, med["lean"] / med["hooks"], med["lean"] / med["none"] - 1


# ------------------------------------------------------------------ (c)

def bench_mem(ckpt, who, size):
    import nodes
    model, clip = load_base(ckpt)
    ready(model, clip)
    pos, neg = encode(clip, "a red cube"), encode(clip, "blurry")
    sample(model, pos, neg, 1, size)
    gc.collect()
    r0 = rss()
    m, c = model, clip
    keep = []
    for seed in range(4):
        name = f"bench_lora_{seed}.safetensors"
        if who == "stock":
            node = nodes.LoraLoader()
            m, c = node.load_lora(m, c, name, 0.8, 0.8)
        else:
            node = lean_loader()
            m, c = lean_apply(node, m, c, name, 0.8, 0.8)
        keep.append(node)  # node instances keep their loaded LoRA, as in the UI
    ready(m, c)
    sample(m, encode(c, "a red cube"), encode(c, "blurry"), 1, size)
    gc.collect()
    return rss() - r0


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=64, help="image size of the sampling runs (latent = size/8)")
    ap.add_argument("--mem", choices=("lean", "stock"), help=argparse.SUPPRESS)
    ap.add_argument("--only-time", action="store_true", help="skip (c); the RESULT line then has no mem_ratio")
    ap.add_argument("--smoke", action="store_true", help="one round, 1 step: does the benchmark still run")
    a = ap.parse_args()
    steps = 10
    if a.smoke:
        a.rounds, a.size, steps = 1, 64, 1
        _common.smoke_on_narrow(True)
    ckpt = setup_host()
    if a.mem:
        print(json.dumps({"added": bench_mem(ckpt, a.mem, 64)}))
        return
    figures = {}
    if not a.only_time:
        mem = {}
        # each in a fresh process (RSS deltas stay clean), stock first in even rounds
        for r in range(1 if a.smoke else 2):
            for who in (("stock", "lean") if r % 2 == 0 else ("lean", "stock")):
                out = subprocess.run([sys.executable, __file__, "--mem", who], capture_output=True, text=True)
                line = [x for x in out.stdout.splitlines() if x.startswith("{")]
                if out.returncode != 0 or not line:
                    print(out.stdout[-2000:], out.stderr[-4000:])
                    raise SystemExit(f"memory run for {who} failed")
                mem.setdefault(who, []).append(json.loads(line[-1])["added"])
        ml, ms = statistics.median(mem["lean"]), statistics.median(mem["stock"])
        figures["mem_ratio"] = ml / ms
        print(f"(c) RSS added by 4 stacked LoRAs (median of {len(mem['lean'])}): lean {ml / 2**20:.0f} MiB  "
              f"stock {ms / 2**20:.0f} MiB  ratio {ml / ms:.3f}  (runs MiB lean "
              f"{[round(x / 2**20) for x in mem['lean']]}, stock {[round(x / 2**20) for x in mem['stock']]})", flush=True)
    restrength, vs_hooks, overhead = bench_time(ckpt, a.rounds, a.size, steps)
    figures = {"restrength_ratio": round(restrength, 4), "schedule_vs_hooks": round(vs_hooks, 3),
               "step_overhead": round(overhead, 3), **{k: round(v, 3) for k, v in figures.items()}}
    if a.smoke:
        figures["smoke"] = 1
    print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
