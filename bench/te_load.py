"""Benchmark: stock CLIPLoader vs LeanTextEncoderLoader (Load Text Encoder (mmap)) on a full-size Qwen3-4B-shaped bf16
text encoder (Z-Image's and Flux.2 Klein's; lean_testlib.families.qwen3_4b_full: 36 layers, width 2560, 32 heads,
FFN 9728, 4.02 B parameters, 8.04 GB), type lumina2 (Z-Image).

Each contender runs in a fresh process under the host's python (ComfyUI's modules imported in-process with
--cpu), alternating (stock first in even pairs, Lean first in odd ones), with the page cache warmed by one full
read of the file before each run.  A worker loads the encoder (wall time of the loader call), then encodes one
prompt with the host's CLIPTextEncode and saves the conditioning: identical=1 when every run's conditioning is the
same, bit for bit.  Peak RSS is over the whole worker process (import, load, encode), sampled by the parent
(psutil) and the worker's own high-water mark, under the memory watchdog of bench/flux_load.py (its helpers).

    flock /tmp/lean-heavy.lock python bench/te_load.py --host 0.33.0 [--pairs 2] [--file PATH] [--smoke]
    python bench/te_load.py --remove-file      # deletes the 8 GB benchmark file (made on demand by the first run)

--smoke: the tiny Qwen3-4B fixture (28 layers of one head; the host builds it through tests' tiny_te_node hook,
installed here in-process), one pair (checks that the benchmark still runs; the figures mean nothing); on a host
without Qwen3-4B (0.3.64) SD1.5's CLIP-L file (type stable_diffusion).  Without --smoke such a host prints
RESULT skipped=1.

Ends with: RESULT peak_rss_ratio=<lean/stock> lean_peak_vs_file=<lean peak / file bytes> wall_ratio=<load wall
lean/stock> total_wall_ratio=<load+encode> identical=0|1 [stock_stopped=<phase> bound=upper]
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
GiB = 1 << 30
PROMPT = ("a lighthouse on a rocky coast at dusk, waves breaking on the rocks, warm light in the windows, "
          "seagulls, a small boat")
TYPE = "lumina2"


def worker(kind, path, out, smoke=False, typ=TYPE):
    from flux_load import FIGURES, _hwm, _phase
    _phase("import")
    import _common
    _common.add_host_to_path()
    import comfy.options
    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu"]
    import psutil
    import torch
    import folder_paths
    import nodes as host_nodes  # the host's nodes.py
    if smoke:  # the tiny fixture needs the test-only hook that tells the host its layer count
        from lean_testlib import tiny_te_node
        tiny_te_node._install()
    folder_paths.add_model_folder_path("text_encoders", str(pathlib.Path(path).parent))
    name = pathlib.Path(path).name
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    torch.set_grad_enabled(False)

    _phase("load")
    t0 = time.perf_counter()
    if kind == "stock":
        clip = host_nodes.CLIPLoader().load_clip(name, typ, "default")[0]
        report = ""
    else:
        from lean_testlib import inproc
        inproc.load_pack()
        from lean_nodes.nodes.text_encoder import LeanTextEncoderLoader
        clip, report = LeanTextEncoderLoader().load(name, typ, "default", "mmap", "default")["result"]
    load_wall = time.perf_counter() - t0
    held = proc.memory_info().rss
    load_hwm = _hwm()
    dtypes = {}
    for p in clip.cond_stage_model.parameters():
        dtypes[str(p.dtype)] = dtypes.get(str(p.dtype), 0) + p.numel()

    _phase("sample")  # the encode: flux_load's watchdog and summary call the work after the load "sample"
    t1 = time.perf_counter()
    cond = host_nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
    sample_wall = time.perf_counter() - t1
    c = cond[0][0]
    torch.save(c.cpu(), out)
    finite = bool(torch.isfinite(c).all()) and float(c.float().std()) > 0
    _phase("done")
    print(FIGURES + json.dumps({"kind": kind, "load_wall": load_wall, "sample_wall": sample_wall, "rss0": rss0,
                                "held": held, "load_hwm": load_hwm, "hwm": _hwm(), "finite": finite,
                                "dtypes": dtypes, "report": report}), flush=True)


def parse_args(argv=None):
    import psutil
    total = psutil.virtual_memory().total / GiB
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2, help="alternating stock/Lean pairs (default 2)")
    ap.add_argument("--file", default=None, help="text-encoder file (default: the qwen3_4b_full fixture)")
    ap.add_argument("--max-private-gb", type=float, default=round(total - 1.5, 1),
                    help="watchdog: kill a worker whose private memory passes this (GiB; default total RAM - 1.5)")
    ap.add_argument("--min-available-gb", type=float, default=1.5,
                    help="watchdog: kill a worker when available memory falls below this (GiB; default 1.5)")
    ap.add_argument("--smoke", action="store_true", help="tiny Qwen3-4B fixture, one pair: does the benchmark run")
    ap.add_argument("--remove-file", action="store_true", help="delete the full-size benchmark file and exit")
    ap.add_argument("--type", default=TYPE, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=["stock", "lean"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.smoke and not a.worker:
        a.pairs = 1
    if a.pairs < 1:
        ap.error("--pairs must be >= 1")
    return a


def run_one(kind, path, a, tmp, i):
    from flux_load import report, summarize, warm, watch
    out = os.path.join(tmp, f"{kind}_{i}.pt")
    w = warm(path)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--file", str(path), "--out", out,
           "--type", a.type]
    if a.smoke:
        cmd.append("--smoke")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO / "bench")]))
    run = watch(cmd, a.max_private_gb * GiB, a.min_available_gb * GiB, env=env)
    s = summarize(run)
    s["cond"] = out if run["figures"] else None
    report(kind, run, s, w, work="encode", digits=2)
    return s


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    a = parse_args()
    if a.worker:
        return worker(a.worker, a.file, a.out, a.smoke, a.type)
    sys.path.insert(0, str(TESTS))
    from lean_testlib import families, harness
    if a.remove_file:
        return _common.remove_file(families.qwen3_4b_full_path())
    from flux_load import result_line
    host, why = harness.find_host()
    if host is None:
        print(f"no ComfyUI host found ({why}); set COMFYUI_PATH")
        print("RESULT skipped=1")
        return
    knows_qwen3 = (pathlib.Path(host) / "comfy" / "text_encoders" / "z_image.py").exists()  # 0.3.64 does not
    if a.file:
        path = pathlib.Path(a.file)
    elif a.smoke and not knows_qwen3:  # the benchmark still runs: SD1.5's CLIP-L, the encoder every host knows
        path, a.type = families.sd15_clip_l(), "stable_diffusion"
        print(f"ComfyUI {harness.host_version(host)} has no Qwen3-4B text encoder (Z-Image): smoke on SD1.5's CLIP-L")
    elif not knows_qwen3:
        print(f"ComfyUI {harness.host_version(host)} has no Qwen3-4B text encoder (Z-Image); run on 0.33.0")
        print("RESULT skipped=1")
        return
    elif a.smoke:
        path = families.qwen3_4b_tiny()
    else:
        t = time.perf_counter()
        path = families.qwen3_4b_full()
        print(f"benchmark file ready in {time.perf_counter() - t:.0f} s (python bench/te_load.py --remove-file "
              f"deletes it)", flush=True)
    size = path.stat().st_size
    print(f"file {path} ({size / 1e9:.2f} GB), ComfyUI {harness.host_version(host)}, {a.pairs} pair(s), CPU, type "
          f"{a.type}; watchdog: private memory > {a.max_private_gb} GiB or available < {a.min_available_gb} GiB",
          flush=True)
    tmp = tempfile.mkdtemp(prefix="lean-bench-te-")
    runs = {"stock": [], "lean": []}
    for i in range(a.pairs):
        for kind in (("stock", "lean") if i % 2 == 0 else ("lean", "stock")):
            runs[kind].append(run_one(kind, path, a, tmp, i))

    import torch
    conds = [r["cond"] for r in runs["stock"] + runs["lean"]]
    identical = None
    if len(conds) >= 2 and all(conds):
        loaded = [torch.load(c) for c in conds]
        identical = all(torch.equal(loaded[0], x) for x in loaded[1:])

    def med(kind):
        rs = runs[kind]
        out = {"stopped": next((r["stopped"] for r in rs if r["stopped"]), None),
               "sampled": all(r["sampled"] for r in rs)}
        for k in ("peak", "load_wall", "total_wall"):
            vals = [r[k] for r in rs if r[k] is not None]
            out[k] = statistics.median(vals) if vals else None
        return out

    line = result_line(med("stock"), med("lean"), size, identical)
    print(line.replace(" sampled=", " encoded=") + (" smoke=1" if a.smoke else ""), flush=True)


if __name__ == "__main__":
    main()
