"""Benchmark: stock CheckpointLoaderSimple vs LeanCheckpointLoader on the SD1.5-layout fp16 fixture
(``--model sdxl``: the SDXL-base-layout fp16 fixture, 6.5 GiB; ~14 GiB per process as fp32, one at a time).

Each load runs in a fresh subprocess (ComfyUI's modules imported in-process with --cpu), alternating the
order (stock first in even pairs, Lean first in odd ones) for --pairs pairs (default 3), warm page cache;
every figure is the median over the pairs, with its spread (min-max) printed.  Each worker records the load's wall time, runs one
KSampler step at 64x64 with a fixed seed and saves the latent.  Peak RSS is VmHWM right after the load
with every weight page touched once (weights a loader leaves mapped-but-untouched count as the sampler
would make them resident); the peak over load + that step is printed too; the stock and Lean (weight_dtype=auto) latents must be identical.  Finally Lean
once more with weight_dtype=fp16.

    flock /tmp/lean-heavy.lock python bench/ckpt_load.py [--host VERSION|PATH] [--pairs 3] [--model sd15|sdxl]
        [--ckpt PATH] [--smoke]

Ends with: RESULT peak_rss_ratio=.. peak_rss_fp16_ratio=.. wall_ratio=.. wall_ratio_min=.. wall_ratio_max=..
identical=0|1 cpu_ratio=.. pairs=N model=sd15|sdxl
(medians over the pairs; wall_ratio_min/max: the spread of the per-pair Lean/stock wall ratios; cpu_ratio: the
load's user+sys CPU seconds, Lean auto / stock; with every core busy the wall ratio follows it).
--smoke: one pair, on the SD1.5 fixture's narrow variant unless --model sdxl or --ckpt (lean_testlib.sd15.NARROW;
checks that the benchmark still runs; the figures mean nothing).
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def _host():
    sys.path.insert(0, str(TESTS))
    from lean_testlib import harness
    path, why = harness.find_host()
    return path, why, harness


# ------------------------------------------------------------------ worker (one load per process)

def worker(kind, ckpt, dtype, out):
    host, why, harness = _host()
    if harness.needs_torchvision_shim():
        sys.path.insert(0, str(harness.SHIMS))
    sys.path.insert(0, str(host))
    import comfy.options
    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu"]
    import torch
    import folder_paths
    import nodes as host_nodes  # the host's nodes.py
    import comfy.sample
    folder_paths.add_model_folder_path("checkpoints", str(pathlib.Path(ckpt).parent))
    name = pathlib.Path(ckpt).name

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    import resource

    def cpu_s():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    rss0 = status("VmRSS")
    c0 = cpu_s()
    t0 = time.perf_counter()
    if kind == "stock":
        model, clip, vae = host_nodes.CheckpointLoaderSimple().load_checkpoint(name)
        report = ""
    else:
        from lean_testlib import inproc
        inproc.load_pack()  # the repo as package `lean_nodes`, the way the host sees it
        from lean_nodes.nodes.checkpoint import LeanCheckpointLoader
        out_ = LeanCheckpointLoader().load(name, "mmap", dtype, True, True)
        model, clip, vae, report = out_["result"]
    wall = time.perf_counter() - t0
    cpu = cpu_s() - c0
    # Weights a loader leaves mapped but untouched are not resident yet; the sampler would fault them in.
    # Touch one element per page of every weight so the load's peak counts them (a no-op for copies).
    for root in (model.model, getattr(clip, "cond_stage_model", None), getattr(vae, "first_stage_model", None)):
        if root is not None:
            for t in list(root.parameters()) + list(root.buffers()):
                if t.numel():
                    t.detach().reshape(-1)[::max(1, 4096 // t.element_size())].float().sum()
    peak = status("VmHWM")
    held = status("VmRSS")
    pos = host_nodes.CLIPTextEncode().encode(clip, "a red cube on a table")[0]
    neg = host_nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    latent = host_nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    samples = host_nodes.common_ksampler(model, 1, 1, 7.0, "euler", "normal", pos, neg, latent)[0]["samples"]
    torch.save(samples.cpu(), out)
    peak_total = status("VmHWM")
    print(json.dumps({"kind": kind, "dtype": dtype, "wall": wall, "cpu": cpu, "peak": peak, "peak_total": peak_total,
                      "held": held, "rss0": rss0,
                      "report": report}))


# ------------------------------------------------------------------ driver

def run_one(kind, ckpt, dtype, tmp, i):
    out = os.path.join(tmp, f"{kind}_{dtype}_{i}.pt")
    r = subprocess.run([sys.executable, __file__, "--worker", kind, "--ckpt", str(ckpt), "--dtype", dtype,
                        "--out", out], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{kind} worker failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    fig = json.loads(r.stdout.strip().splitlines()[-1])
    fig["latent"] = out
    print(f"  {kind:5s} {dtype:4s}: load {fig['wall']:6.2f} s (CPU {fig['cpu']:5.2f} s)  peak RSS {fig['peak'] / 2**30:5.2f} GiB (with the step "
          f"{fig['peak_total'] / 2**30:5.2f})  held {fig['held'] / 2**30:5.2f} GiB  (RSS before load {fig['rss0'] / 2**30:.2f} GiB)", flush=True)
    return fig


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--model", choices=["sd15", "sdxl"], default="sd15",
                    help="which generated fixture to load (default sd15); ignored with --ckpt")
    ap.add_argument("--ckpt", default=None, help="checkpoint (default: the --model fixture)")
    ap.add_argument("--worker", choices=["stock", "lean"])
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out")
    ap.add_argument("--smoke", action="store_true", help="one pair: does the benchmark still run")
    a = ap.parse_args()
    if a.smoke:
        a.pairs = 1
    if a.pairs < 1:
        ap.error("--pairs must be >= 1")
    if a.worker:
        return worker(a.worker, a.ckpt, a.dtype, a.out)

    host, why, _ = _host()
    if host is None:
        print(f"no ComfyUI host found ({why}); set COMFYUI_PATH")
        print("RESULT skipped=1")
        return
    import torch
    from lean_testlib import sd15, sdxl_ckpt
    # --smoke: the narrow SD1.5 fixture (bench/_common.py), unless a model or file is named
    ckpt = pathlib.Path(a.ckpt or (sdxl_ckpt.sdxl_checkpoint() if a.model == "sdxl" else
                                   sd15.sd15_checkpoint(narrow=a.smoke)))
    print(f"checkpoint {ckpt} ({ckpt.stat().st_size / 2**30:.2f} GiB), host {host}, {a.pairs} pairs, CPU")
    with open(ckpt, "rb") as f:  # warm page cache
        while f.read(64 << 20):
            pass
    tmp = tempfile.mkdtemp(prefix="lean-bench-ckpt-")
    stock, lean = [], []
    for i in range(a.pairs):  # alternate who goes first: neither always gets the warmer machine
        for kind in (("stock", "lean") if i % 2 == 0 else ("lean", "stock")):
            (stock if kind == "stock" else lean).append(run_one(kind, ckpt, "auto", tmp, i))
    fp16 = run_one("lean", ckpt, "fp16", tmp, 0)
    print("Lean report (auto):\n  " + lean[-1]["report"].replace("\n", "\n  "))
    print("Lean report (fp16):\n  " + fp16["report"].replace("\n", "\n  "))

    ref = torch.load(stock[0]["latent"])
    identical = all(torch.equal(ref, torch.load(f["latent"])) for f in stock + lean)
    fp16_lat = torch.load(fp16["latent"])
    print(f"latents: stock vs Lean auto identical={identical}; Lean fp16 max|diff| vs stock "
          f"{(fp16_lat - ref).abs().max().item():.3g} (fp16 weights computed in fp32 from an fp16 file: 0 expected)")

    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    s_peak, l_peak, s_wall, l_wall = med(stock, "peak"), med(lean, "peak"), med(stock, "wall"), med(lean, "wall")
    print(f"median peak RSS of the load: stock {s_peak / 2**30:.2f} GiB, Lean auto {l_peak / 2**30:.2f} GiB "
          f"(ratio {l_peak / s_peak:.3f}), Lean fp16 {fp16['peak'] / 2**30:.2f} GiB (ratio {fp16['peak'] / s_peak:.3f})")
    s_tot, l_tot = med(stock, "peak_total"), med(lean, "peak_total")
    print(f"median peak RSS over load + 1 step: stock {s_tot / 2**30:.2f} GiB, Lean auto {l_tot / 2**30:.2f} GiB "
          f"(ratio {l_tot / s_tot:.3f}), Lean fp16 {fp16['peak_total'] / 2**30:.2f} GiB "
          f"(ratio {fp16['peak_total'] / s_tot:.3f})")
    spread = lambda xs, k: f"{min(x[k] for x in xs):.2f}-{max(x[k] for x in xs):.2f}"  # noqa: E731
    pair_ratios = [le["wall"] / st["wall"] for st, le in zip(stock, lean)]
    print(f"median load wall: stock {s_wall:.2f} s ({spread(stock, 'wall')}), Lean auto {l_wall:.2f} s "
          f"({spread(lean, 'wall')}) (ratio {l_wall / s_wall:.3f}; per pair {[round(r, 3) for r in pair_ratios]}); "
          f"Lean fp16 {fp16['wall']:.2f} s")
    s_cpu, l_cpu = med(stock, "cpu"), med(lean, "cpu")
    cores = len(os.sched_getaffinity(0))
    print(f"median load CPU time (user+sys, all threads): stock {s_cpu:.2f} s, Lean auto {l_cpu:.2f} s "
          f"(ratio {l_cpu / s_cpu:.3f}); on {cores} cores Lean's wall cannot go below {l_cpu / cores:.2f} s "
          f"= {l_cpu / cores / s_wall:.2f} of stock's wall")
    print(f"RESULT peak_rss_ratio={l_peak / s_peak:.3f} peak_rss_fp16_ratio={fp16['peak'] / s_peak:.3f} "
          f"wall_ratio={l_wall / s_wall:.3f} wall_ratio_min={min(pair_ratios):.3f} "
          f"wall_ratio_max={max(pair_ratios):.3f} identical={int(identical)} cpu_ratio={l_cpu / s_cpu:.3f} "
          f"pairs={a.pairs} model={'custom' if a.ckpt else a.model + ('_narrow' if a.smoke and a.model == 'sd15' else '')}"
          + (" smoke=1" if a.smoke else ""), flush=True)


if __name__ == "__main__":
    main()
