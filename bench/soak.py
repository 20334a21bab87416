"""Soak: one ComfyUI host, 200 queued prompts mixing every Lean node it has (fixtures, 64x64, 1 step).

    flock /tmp/lean-heavy.lock python bench/soak.py [--host VERSION|PATH] [--prompts 200] [--block 20] [--smoke]

Prompts are queued in blocks of 20 (each block queued at once, then waited for) and the host process is
measured from /proc after every block: RSS (VmRSS), open file descriptors (/proc/<pid>/fd), memory mappings
(/proc/<pid>/maps; file-backed ones must not grow, anonymous ones are the allocator's) and how many distinct .gguf files are mapped (the LLM cache: at most LEAN_LLM_MAX_MODELS,
1 by default; the LLM prompts alternate n_ctx so the model is replaced all the time).  Inputs vary with the
prompt number so every node really runs (no execution-cache hits, except the checkpoint loader's).

Targets (issue 9): all succeed; RSS after prompt 200 within 5 % of RSS after prompt 20; fds and mappings do not
grow; the LLM cache stays bounded.  Ends with
    RESULT prompts=200 ok=<n> rss_growth=<ratio> fd_growth=<n>
and exits 1 when a target is missed.  --smoke: one prompt of each workload in one block; only "every prompt
succeeds" is checked (the growth targets need the long run).
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from lean_testlib import harness, route_lister_node, workloads  # noqa: E402


def fd_targets(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return sorted(out)


def open_fds(pid, reads=3, gap=0.3):
    """Open fds, the least of a few reads: the soak's own HTTP requests leave a socket open on the host's side
    for a moment after each answer, which is not a leak.  A leaked fd stays in every read."""
    counts = []
    for i in range(reads):
        if i:
            time.sleep(gap)
        counts.append(len(fd_targets(pid)))
    return min(counts)


def proc_figures(pid):
    with open(f"/proc/{pid}/status") as f:
        status = {l.split(":")[0]: l.split()[1:] for l in f}
    rss = int(status["VmRSS"][0]) * 1024
    anon = int(status["RssAnon"][0]) * 1024
    file_rss = int(status["RssFile"][0]) * 1024
    fds = open_fds(pid)
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read().splitlines()
    files = [l.split(None, 5)[5] for l in maps if len(l.split(None, 5)) == 6 and l.split(None, 5)[5].startswith("/")]
    gguf = {f for f in files if f.endswith(".gguf")}
    return {"rss": rss, "anon": anon, "file_rss": file_rss, "fds": fds, "maps": len(maps), "file_maps": len(files), "gguf": len(gguf)}


def llm_available():
    try:
        import llama_cpp  # noqa: F401
        return True
    except ImportError:
        return False


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the base dir")
    ap.add_argument("--kinds", default="", help="comma list of workloads to run (llm,canny,sd); default all")
    ap.add_argument("--without", default="", help="comma list of Lean nodes to leave out (the stock node is used "
                                                  "where there is one), e.g. LeanCheckpointLoader, for A/B checks")
    ap.add_argument("--smoke", action="store_true", help="one prompt per workload: does the soak still run")
    args = ap.parse_args()
    path, why = harness.find_host()
    if path is None:
        print(f"no ComfyUI host found ({why}); set COMFYUI_PATH")
        print("RESULT skipped=1")
        return 0
    llm = llm_available()
    base = pathlib.Path(tempfile.mkdtemp(prefix="lean-soak-"))
    workloads.prepare(base, llm=llm)
    route_lister_node.install(base)  # test-only GET /lean_test/malloc: freed heap glibc keeps, per sample
    max_models = int(os.environ.get("LEAN_LLM_MAX_MODELS", "1"))
    t0 = time.time()
    host = harness.ComfyHost.start(path, base, verbose="INFO")
    print(f"host up in {time.time() - t0:.1f} s (pid {host.proc.pid}); base {base}")
    ok, failed, samples, gguf_max = 0, [], {}, 0
    try:
        nodes = set(host.object_info()) - set(filter(None, args.without.split(",")))
        kinds = workloads.kinds(nodes, llm=llm)
        if args.kinds:
            kinds = [k for k in kinds if k in args.kinds.split(",")]
        if args.smoke:
            args.prompts = args.block = len(kinds)
        covered = sorted(workloads.lean_nodes_covered(kinds, nodes))
        lean = sorted(n for n in nodes if n.startswith("Lean"))
        print(f"workloads {kinds}; Lean nodes exercised {covered} of {lean}"
              + ("" if llm else "; llama-cpp-python missing: no LLM prompts"))
        i = 0
        t_run = time.time()
        while i < args.prompts:
            ids = []
            for _ in range(min(args.block, args.prompts - i)):
                kind = kinds[i % len(kinds)]
                kw = {"n_ctx": (512, 768)[(i // len(kinds)) % 2]} if kind == "llm" else {}
                try:
                    ids.append((i, kind, host.submit(workloads.prompt(kind, i, nodes, **kw))))
                except harness.PromptFailed as e:
                    failed.append((i, kind, str(e)[:300]))
                i += 1
            for n, kind, pid in ids:
                entry = host.wait(pid, timeout=900)
                if entry["status"].get("status_str") == "success":
                    ok += 1
                else:
                    failed.append((n, kind, host.error_text(entry)[:300]))
                gguf_max = max(gguf_max, proc_figures(host.proc.pid)["gguf"])
            fig = proc_figures(host.proc.pid)
            fig["fd_targets"] = fd_targets(host.proc.pid)
            try:
                fig["heap_free"] = host.get("/lean_test/malloc").get("fordblks")
            except Exception:
                fig["heap_free"] = None
            samples[i] = fig
            print(f"after prompt {i:4d}: RSS {fig['rss'] / 2**20:8.1f} MiB (anon {fig['anon'] / 2**20:7.1f}, file {fig['file_rss'] / 2**20:7.1f})  fds {fig['fds']:4d}  maps {fig['maps']:5d} (files {fig['file_maps']:4d})  "
                  f"gguf mapped {fig['gguf']}  glibc free heap {(fig['heap_free'] or 0) / 2**20:6.1f} MiB  ok {ok}  failed {len(failed)}  {time.time() - t_run:6.1f} s", flush=True)
    finally:
        host.stop()
    log = host.log()
    print(f"loads during the run (host log): checkpoint {log.count('[Lean Checkpoint] ' + workloads.SD15)}, "
          f"LLM {log.count('[Lean LLM] loaded')}")
    for f in failed[:10]:
        print("FAILED prompt", *f)
    first = samples.get(args.block) or samples[min(samples)]
    last = samples[max(samples)]
    rss_growth = last["rss"] / first["rss"]
    fd_growth = last["fds"] - first["fds"]
    maps_growth = last["maps"] - first["maps"]
    file_maps_growth = last["file_maps"] - first["file_maps"]
    print(f"SOAK rss_after_{args.block}={first['rss'] / 2**20:.1f}MiB rss_after_{max(samples)}={last['rss'] / 2**20:.1f}MiB "
          f"maps_growth={maps_growth} file_maps_growth={file_maps_growth} gguf_mapped_max={gguf_max} (limit {max_models}) "
          f"wall={time.time() - t0:.0f}s")
    if first.get("heap_free") is not None and last.get("heap_free") is not None:
        print(f"SOAK glibc free heap (address space it keeps; trimmed parts are not resident) after {args.block}: "
              f"{first['heap_free'] / 2**20:.1f} MiB, after {max(samples)}: {last['heap_free'] / 2**20:.1f} MiB")
    if fd_growth:
        import collections
        diff = collections.Counter(last["fd_targets"]) - collections.Counter(first["fd_targets"])
        print(f"SOAK fds open after {max(samples)} but not after {args.block}: {sorted(diff.elements())}")
    misses = []
    if ok != args.prompts:
        misses.append(f"{args.prompts - ok} prompt(s) failed")
    if args.smoke:
        pass  # the growth targets need the long run
    elif abs(rss_growth - 1) > 0.05:
        misses.append(f"RSS grew {rss_growth:.3f}x (limit 1.05)")
    if fd_growth > 0:
        misses.append(f"{fd_growth} more open fds")
    if file_maps_growth > 0:
        misses.append(f"{file_maps_growth} more file mappings")
    if gguf_max > max_models:
        misses.append(f"{gguf_max} GGUF files mapped at once (LLM cache limit {max_models})")
    for m in misses:
        print("TARGET MISSED:", m)
    if args.keep:
        print("base dir kept:", base)
    else:
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    print(f"RESULT prompts={args.prompts} ok={ok} rss_growth={rss_growth:.3f} fd_growth={fd_growth}"
          + (" smoke=1" if args.smoke else ""), flush=True)
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
