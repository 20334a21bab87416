"""Benchmark: stock UNETLoader vs LeanDiffusionModelLoader on the full-size Flux-dev-shaped float8_e4m3fn file
(lean_testlib.flux_full: 19 double + 38 single blocks, hidden 3072, 780 tensors, 11.9 GB).

Each contender runs in a fresh process under the host's python (ComfyUI's modules imported in-process with
--cpu), alternating (stock first in even pairs, Lean first in odd ones), with the page cache warmed by one full
read of the file before each run.  A worker loads the model (wall time of the loader call), then runs one
sampling step at 256x256 (KSampler euler/simple, cfg 1, a seeded random Flux conditioning [1, 256, 4096] with
pooled [1, 768] and guidance 3.5 instead of a text encoder) and saves the latent: finite output -> sampled=1.

Peak RSS: the parent samples the worker's RSS with psutil (works on Windows too) and takes the larger of that
and the worker's own high-water mark (VmHWM on Linux, peak_wset on Windows) where it can read one; the peak is
over the whole process (import, load, sampling step), so weights a loader leaves mapped count once the step
has touched them.  Every worker runs under a watchdog that kills it when the machine's available memory falls
below --min-available-gb or its private memory (RSS without the clean file pages of a mapped model, which the
kernel can drop) passes --max-private-gb, and says in which phase (import / load / sample) and at
what RSS it stopped.

    flock /tmp/lean-heavy.lock python bench/flux_load.py --host 0.33.0 [--model flux|zimage] [--pairs 1]
        [--file PATH] [--smoke]

--model zimage: the full-size Z-Image-shaped bf16 file instead (lean_testlib.flux_full.zimage_full: Z-Image
Turbo's 30 layers and 2 + 2 refiners at dim 3840, 453 tensors, 6.15 B parameters, 12.3 GB) and a seeded random
Qwen3-4B-shaped conditioning [1, 64, 2560] (ComfyUI 0.33.0 and later: 0.3.64 has no Z-Image).  Both contenders run
with --bf16-unet: on a GPU ComfyUI keeps a bf16 diffusion model in bf16, on the CPU it would build it in fp32 (24.6 GB,
more than this 24 GB machine) unless told so.  The file is made on demand and removed with
`python bench/flux_load.py --remove-file`.

--smoke: the tiny fixture (lean_testlib.flux_tiny, bf16, one double + one single block; with --model zimage
lean_testlib.families.zimage_tiny, one layer) instead of the full-size file, 64x64, one pair (checks that the
benchmark still runs; the figures mean nothing).

Ends with: RESULT peak_rss_ratio=<lean/stock> lean_peak_vs_file=<lean peak / file bytes> wall_ratio=<load wall
lean/stock> total_wall_ratio=<load+step> sampled=0|1 identical=0|1 [stock_stopped=<phase> bound=upper]
(when stock was stopped, its figures are what it had reached: the ratios are then upper bounds.)
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
GiB = 1 << 30
PHASE = "PHASE "
FIGURES = "FIGURES "


# ------------------------------------------------------------------ worker (one load + one step per process)

def _hwm():
    """This process's peak resident set so far (bytes), or None where the platform does not say."""
    import psutil
    mi = psutil.Process().memory_info()
    if getattr(mi, "peak_wset", None):  # Windows
        return int(mi.peak_wset)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _phase(name):
    print(PHASE + name, flush=True)


def worker(kind, path, out, size=256, steps=1, weight_dtype="default", model_kind="flux"):
    _phase("import")
    import _common
    _common.add_host_to_path()
    import comfy.options
    comfy.options.enable_args_parsing()
    # Z-Image: keep the bf16 weights as a GPU user's ComfyUI does (on the CPU it would build them in fp32, twice the
    # file, unless told --bf16-unet); both contenders get the same flags
    sys.argv = [sys.argv[0], "--cpu"] + (["--bf16-unet"] if model_kind == "zimage" else [])
    import psutil
    import torch
    import folder_paths
    import nodes as host_nodes  # the host's nodes.py
    folder_paths.add_model_folder_path("diffusion_models", str(pathlib.Path(path).parent))
    name = pathlib.Path(path).name
    proc = psutil.Process()
    rss0 = proc.memory_info().rss

    _phase("load")
    t0 = time.perf_counter()
    if kind == "stock":
        model = host_nodes.UNETLoader().load_unet(name, weight_dtype)[0]
        report = ""
    else:
        from lean_testlib import inproc
        inproc.load_pack()  # the repo as package `lean_nodes`, the way the host sees it
        from lean_nodes.nodes.diffusion_model import LeanDiffusionModelLoader
        out_ = LeanDiffusionModelLoader().load(name, weight_dtype, "mmap")
        model, report = out_["result"]
    load_wall = time.perf_counter() - t0
    held = proc.memory_info().rss
    load_hwm = _hwm()
    dtypes = {}
    for p in model.model.diffusion_model.parameters():
        dtypes[str(p.dtype)] = dtypes.get(str(p.dtype), 0) + p.numel()

    _phase("sample")
    g = torch.Generator().manual_seed(1)
    if model_kind == "zimage":  # a Qwen3-4B-shaped conditioning of 64 tokens (Z-Image has no pooled output)
        positive = [[torch.randn((1, 64, 2560), generator=g), {}]]
    else:
        cond = torch.randn((1, 256, 4096), generator=g)
        pooled = torch.randn((1, 768), generator=g)
        positive = [[cond, {"pooled_output": pooled, "guidance": 3.5}]]
    latent = {"samples": torch.zeros((1, 16, size // 8, size // 8))}
    t1 = time.perf_counter()
    samples = host_nodes.common_ksampler(model, 7, steps, 1.0, "euler", "simple", positive, positive, latent)[0]["samples"]
    sample_wall = time.perf_counter() - t1
    torch.save(samples.cpu(), out)
    finite = bool(torch.isfinite(samples).all()) and float(samples.float().std()) > 0
    _phase("done")
    print(FIGURES + json.dumps({"kind": kind, "load_wall": load_wall, "sample_wall": sample_wall, "rss0": rss0,
                                "held": held, "load_hwm": load_hwm, "hwm": _hwm(), "finite": finite,
                                "dtypes": dtypes, "report": report}), flush=True)


# ------------------------------------------------------------------ watchdog

def private_bytes(mi):
    """The part of a psutil memory_info that no file backs (what the kernel cannot drop): Windows' private
    bytes, on Linux RSS minus its file-backed (shared) pages, else RSS."""
    if getattr(mi, "private", None) is not None:
        return mi.private
    if getattr(mi, "shared", None) is not None:
        return mi.rss - mi.shared
    return mi.rss


def watch(cmd, max_private, min_available, poll=0.05, env=None):
    """Run ``cmd`` and sample its RSS (psutil) until it ends; kill it when its private memory (private_bytes:
    RSS without the clean file pages of a mapped model, which the kernel can drop) exceeds ``max_private`` bytes
    or the machine's available memory falls below ``min_available`` bytes.  The child names its phases with
    ``PHASE <name>`` lines on stdout and may end with ``FIGURES {json}``.

    Returns {"rc", "stopped" (None or the phase it was killed in), "why", "rss_at_stop", "in_phase_s" (seconds
    it had spent in that phase), "peak" (sampled),
    "phase" (last phase), "phases" ({phase: peak sampled RSS in it}), "figures" (dict or None), "stdout", "stderr"}."""
    import psutil
    err = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    state = {"phase": "start", "lines": [], "since": time.perf_counter()}

    def read():
        for line in p.stdout:
            state["lines"].append(line)
            if line.startswith(PHASE):
                state["phase"], state["since"] = line[len(PHASE):].strip(), time.perf_counter()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    child = psutil.Process(p.pid)
    peak, phases, stopped, why, at_stop, in_phase = 0, {}, None, "", 0, None
    while p.poll() is None:
        try:
            mi = child.memory_info()
        except psutil.Error:
            break
        rss, private = mi.rss, private_bytes(mi)
        phase = state["phase"]
        peak = max(peak, rss)
        phases[phase] = max(phases.get(phase, 0), rss)
        avail = psutil.virtual_memory().available
        if private > max_private or avail < min_available:
            why = (f"private memory {private / GiB:.2f} GiB > limit {max_private / GiB:.2f} GiB (RSS "
                   f"{rss / GiB:.2f} GiB)" if private > max_private else
                   f"available memory {avail / GiB:.2f} GiB < {min_available / GiB:.2f} GiB (RSS {rss / GiB:.2f} GiB)")
            stopped, at_stop, in_phase = phase, rss, time.perf_counter() - state["since"]
            p.kill()
            break
        time.sleep(poll)
    rc = p.wait()
    reader.join(timeout=10)
    err.seek(0)
    stderr = err.read()
    err.close()
    figures = None
    for line in state["lines"]:
        if line.startswith(FIGURES):
            figures = json.loads(line[len(FIGURES):])
    return {"rc": rc, "stopped": stopped, "why": why, "rss_at_stop": at_stop, "peak": peak, "in_phase_s": in_phase,
            "phase": state["phase"], "phases": phases, "figures": figures, "stdout": "".join(state["lines"]),
            "stderr": stderr}


def peak_of(run):
    """The run's peak RSS: the sampled one, or the worker's own high-water mark where larger."""
    fig = run.get("figures") or {}
    return max([run["peak"]] + [v for v in (fig.get("hwm"), fig.get("load_hwm")) if v])


# ------------------------------------------------------------------ result

def result_line(stock, lean, file_bytes, identical=None):
    """The RESULT line from one stock and one Lean figure set (dicts with peak, load_wall, total_wall, sampled,
    stopped).  A stopped stock run gives lower bounds for its figures, so the ratios are upper bounds."""
    f = {"peak_rss_ratio": lean["peak"] / stock["peak"] if stock["peak"] else float("inf"),
         "lean_peak_vs_file": lean["peak"] / file_bytes}
    if lean.get("load_wall") is not None and stock.get("load_wall") is not None:
        f["wall_ratio"] = lean["load_wall"] / stock["load_wall"]
    if lean.get("total_wall") is not None and stock.get("total_wall") is not None:
        f["total_wall_ratio"] = lean["total_wall"] / stock["total_wall"]
    f["sampled"] = int(bool(lean.get("sampled")))
    if identical is not None:
        f["identical"] = int(bool(identical))
    if stock.get("stopped"):
        f["stock_stopped"] = stock["stopped"]
        f["bound"] = "upper"  # ratios against what stock had reached before it was stopped
    if lean.get("stopped"):
        f["lean_stopped"] = lean["stopped"]
    return "RESULT " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in f.items())


def summarize(run):
    """Figures of one watched worker run: peak, load_wall, total_wall (load + step), sampled, stopped."""
    fig = run.get("figures") or {}
    load = fig.get("load_wall")
    if load is None and run["stopped"] == "load":
        load = run["in_phase_s"]  # stopped while loading: the time it had taken so far (a lower bound)
    return {"peak": peak_of(run), "load_wall": load,
            "total_wall": load + fig["sample_wall"] if load is not None and "sample_wall" in fig else None,
            "sampled": bool(fig.get("finite")), "stopped": run["stopped"]}


# ------------------------------------------------------------------ driver

def parse_args(argv=None):
    import psutil
    total = psutil.virtual_memory().total / GiB
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1, help="alternating stock/Lean pairs (default 1)")
    ap.add_argument("--model", choices=["flux", "zimage"], default="flux",
                    help="flux: the full-size Flux-dev-shaped fp8 fixture (lean_testlib.flux_full); zimage: the "
                         "full-size Z-Image-shaped bf16 one (flux_full.zimage_full, 12.3 GB)")
    ap.add_argument("--file", default=None, help="diffusion model file (default: the --model fixture)")
    ap.add_argument("--size", type=int, default=256, help="image side of the sampling step (default 256)")
    ap.add_argument("--steps", type=int, default=1, help="sampling steps (default 1)")
    ap.add_argument("--weight-dtype", default="default", help="weight_dtype for both loaders (default: default)")
    ap.add_argument("--max-private-gb", type=float, default=round(total - 1.5, 1),
                    help="watchdog: kill a worker whose private memory (RSS without file-backed pages, which the "
                         "kernel can drop) passes this (GiB; default total RAM - 1.5)")
    ap.add_argument("--min-available-gb", type=float, default=1.5,
                    help="watchdog: kill a worker when available memory falls below this (GiB; default 1.5)")
    ap.add_argument("--smoke", action="store_true",
                    help="the tiny fixture of --model, 64x64, one pair: does the benchmark still run")
    ap.add_argument("--remove-file", action="store_true",
                    help="delete the full-size Z-Image benchmark file (12.3 GB, made on demand by --model zimage) and "
                         "exit")
    ap.add_argument("--worker", choices=["stock", "lean"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.smoke and not a.worker:
        a.pairs, a.size, a.steps = 1, 64, 1
    if a.pairs < 1 or a.steps < 1 or a.size < 16 or a.size % 16:
        ap.error("--pairs and --steps must be >= 1, --size a multiple of 16")
    return a


def warm(path):
    t = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass
    return time.perf_counter() - t


def report(kind, run, s, w, work="step", digits=1):
    """Print one contender's run (or exit when its worker failed): load and `work` time, peak RSS, what the load
    held, the load report.  `w`: the warm-up read's seconds."""
    fig = run["figures"] or {}
    phases = " ".join(f"{k} {v / GiB:.2f}" for k, v in run["phases"].items())
    if run["stopped"]:
        print(f"  {kind:5s}: STOPPED by the watchdog in phase '{run['stopped']}' at RSS "
              f"{run['rss_at_stop'] / GiB:.2f} GiB ({run['why']}); sampled peak per phase (GiB): {phases}", flush=True)
    elif run["rc"] != 0 or not fig:
        sys.exit(f"{kind} worker failed (rc {run['rc']}, phase {run['phase']}):\n{run['stdout'][-3000:]}\n"
                 f"{run['stderr'][-5000:]}")
    else:
        print(f"  {kind:5s}: load {fig['load_wall']:6.2f} s, {work} {fig['sample_wall']:6.{digits}f} s; peak RSS "
              f"{s['peak'] / GiB:5.2f} GiB (sampled {run['peak'] / GiB:.2f}, worker HWM "
              f"{(fig.get('hwm') or 0) / GiB:.2f}; load HWM {(fig.get('load_hwm') or 0) / GiB:.2f}); held after load "
              f"{fig['held'] / GiB:5.2f} GiB (before {fig['rss0'] / GiB:.2f}); per phase (GiB): {phases}; "
              f"weights {fig['dtypes']}; finite={fig['finite']} (warm-up read {w:.1f} s)", flush=True)
        if fig.get("report"):
            print("    " + fig["report"].replace("\n", "\n    "), flush=True)


def run_one(kind, path, a, tmp, i):
    out = os.path.join(tmp, f"{kind}_{i}.pt")
    w = warm(path)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--file", str(path), "--out", out,
           "--size", str(a.size), "--steps", str(a.steps), "--weight-dtype", a.weight_dtype, "--model", a.model]
    run = watch(cmd, a.max_private_gb * GiB, a.min_available_gb * GiB)
    s = summarize(run)
    s["latent"] = out if run["figures"] else None
    report(kind, run, s, w)
    return s


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    a = parse_args()
    if a.worker:
        return worker(a.worker, a.file, a.out, a.size, a.steps, a.weight_dtype, a.model)
    sys.path.insert(0, str(TESTS))
    from lean_testlib import flux_full, harness
    if a.remove_file:
        return _common.remove_file(flux_full.zimage_full_path())
    host, why = harness.find_host()
    if host is None:
        print(f"no ComfyUI host found ({why}); set COMFYUI_PATH")
        print("RESULT skipped=1")
        return
    if a.file:
        path = pathlib.Path(a.file)
    elif a.smoke:
        from lean_testlib import families, flux_tiny
        path = families.zimage_tiny() if a.model == "zimage" else flux_tiny.flux_tiny()
    else:
        path = flux_full.zimage_full() if a.model == "zimage" else flux_full.flux_full()
    size = path.stat().st_size
    print(f"file {path} ({size / 1e9:.2f} GB), ComfyUI {harness.host_version(host)}, {a.pairs} pair(s), CPU, "
          f"{a.size}x{a.size}, {a.steps} step(s); watchdog: private memory > {a.max_private_gb} GiB or available < "
          f"{a.min_available_gb} GiB", flush=True)
    tmp = tempfile.mkdtemp(prefix="lean-bench-flux-")
    runs = {"stock": [], "lean": []}
    for i in range(a.pairs):
        for kind in (("stock", "lean") if i % 2 == 0 else ("lean", "stock")):
            runs[kind].append(run_one(kind, path, a, tmp, i))

    import torch
    lats = [torch.load(r["latent"]) for r in runs["stock"] + runs["lean"] if r["latent"]]
    identical = None
    if len(lats) >= 2 and all(r["latent"] for r in runs["stock"] + runs["lean"]):
        identical = all(torch.equal(lats[0], x) for x in lats[1:])

    def med(kind):
        rs = runs[kind]
        out = {"stopped": next((r["stopped"] for r in rs if r["stopped"]), None),
               "sampled": all(r["sampled"] for r in rs)}
        for k in ("peak", "load_wall", "total_wall"):
            vals = [r[k] for r in rs if r[k] is not None]
            out[k] = statistics.median(vals) if vals else None
        return out

    stock, lean = med("stock"), med("lean")
    print(f"median peak RSS: stock {stock['peak'] / GiB:.2f} GiB{' (stopped: a lower bound)' if stock['stopped'] else ''}, "
          f"Lean {lean['peak'] / GiB:.2f} GiB; file {size / GiB:.2f} GiB; latents identical: {identical}", flush=True)
    print(result_line(stock, lean, size, identical) + (" smoke=1" if a.smoke else ""), flush=True)


if __name__ == "__main__":
    main()
