"""Benchmark: one Prompt Batch of 12 prompts, the master alone vs the master + 2 local workers (ComfyUI-Distributed).

    flock /tmp/lean-heavy.lock python bench/prompt_batch_distributed.py [--host VERSION|PATH] [--repeats 3] [--smoke]

Three ComfyUI processes on loopback ports of this machine, each with ComfyUI-Distributed 1.4.4 (../shared/peers)
and this pack, the SD1.5 fixture checkpoint (lean_testlib.distributed.cluster).  The same workflow
(graphs.prompt_batch_distributed: Distributed Seed -> Prompt Batch.participant, Prompt Batch's latent -> KSampler ->
VAEDecode -> Distributed Collector -> Prompt Batch Check -> SaveImage) is queued
  alone:        with plain /prompt on the master: ComfyUI-Distributed sends nothing out, the master makes all 12;
  distributed:  with ComfyUI-Distributed's /distributed/queue: the master and each worker make their share (4+4+4).
The contenders alternate after one warm-up run each (models loaded in every process); each figure is the median
wall time (queue to history entry) over --repeats pairs, divided by the number of images.  `identical` is 1 when
every run's saved images equal the first alone run's within what tests/test_tier2_prompt_batch_distributed.py
allows (each 8-bit value within one step, mean difference per image at most 0.002: a batch of 12 and a share of 4
are sampled with other float rounding); `max_diff` and `mean_diff` are the largest seen.  Ends with
    RESULT identical=<0|1> alone_s_per_image=<s> distributed_s_per_image=<s> speedup=<alone/distributed>
           images=<n> participants=3 cores=<os.cpu_count()> max_diff=<0-255> mean_diff=<x>
On a machine with fewer cores than participants x the cores one sampler uses, the three processes share the
cores: the speedup is bounded by the cores (see docs/prompt_batch_distributed.md).
--smoke: 3 prompts (one per participant), 1 step, one pair and no warm-up pair, the SD1.5 fixture's narrow variant
(lean_testlib.sd15.NARROW) (checks that the benchmark runs; the figures mean nothing: the first run of each contender
loads the checkpoint).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

MAX_LSB, MAX_MEAN = 1, 0.002   # as tests/test_tier2_prompt_batch_distributed.py
FILLER = ["sharp focus", "golden hour", "highly detailed", "soft light", "wide angle", "film grain"]


def prompts(n):
    """n prompts of one, two and three 77-token chunks, with wildcards and choices."""
    out = []
    for i in range(n):
        words = [f"a __colors__ {['cube', 'fox', 'house', 'ship'][i % 4]}", "{day|night}"]
        words += FILLER * ((i % 3) * 6)
        out.append(", ".join(words))
    return "\n".join(out)


def setup(base):
    (base / "models" / "wildcards" / "colors.txt").write_text("red\ngreen\nblue\ngold\n")


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=int(os.environ.get("LEAN_BENCH_REPEATS", 3)))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    _common.host_or_exit()
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout stops the three hosts too (finally)
    import numpy as np
    from PIL import Image

    from lean_testlib import distributed, graphs, sd15

    n, steps, repeats = (3, 1, 1) if args.smoke else (12, args.steps, args.repeats)
    text = prompts(n)

    def images(host, entry):
        files = sorted(host.base / "output" / i.get("subfolder", "") / i["filename"]
                       for i in entry["outputs"].get("save", {}).get("images", []))
        return [np.asarray(Image.open(f).convert("RGB")) for f in files]

    # --smoke: the SD1.5 fixture's narrow variant (its keys and blocks at 320 channels): three processes, smallest sizes
    with distributed.cluster(tempfile.mkdtemp(prefix="lean-bench-distrib-"), sd15.sd15_checkpoint(narrow=args.smoke),
                             workers=2, setup=setup, audit=False) as c:
        k = 0

        def run(kind):
            nonlocal k
            k += 1
            g = graphs.prompt_batch_distributed(text, steps=steps, seed=11, batch_seed=5, prefix=f"{kind}_{k}")
            t = time.perf_counter()
            if kind == "alone":
                entry = c.master.run(g, timeout=3600)
            else:
                entry, data = c.queue(g, timeout=3600)
                if entry["status"].get("status_str") != "success":
                    sys.exit(f"distributed run failed: {c.master.error_text(entry)}")
                if data.get("worker_count") != 2:
                    sys.exit(f"ComfyUI-Distributed used {data.get('worker_count')} workers, not 2")
            return time.perf_counter() - t, images(c.master, entry)

        ref = None
        if not args.smoke:
            _, ref = run("alone")   # warm-up: every process loads the checkpoint once
            run("distributed")
        identical = True
        max_diff, mean_diff = 0, 0.0
        times = {"alone": [], "distributed": []}
        for _ in range(repeats):
            for kind in ("alone", "distributed"):
                dt, imgs = run(kind)
                times[kind].append(dt)
                ref = imgs if ref is None else ref   # --smoke: the first alone run is the reference
                identical &= len(imgs) == n
                for a, b in zip(imgs, ref):
                    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
                    max_diff, mean_diff = max(max_diff, int(d.max())), max(mean_diff, float(d.mean()))
                print(f"{kind}: {dt:.2f} s for {n} images", file=sys.stderr, flush=True)
    alone = statistics.median(times["alone"]) / n
    dist = statistics.median(times["distributed"]) / n
    identical &= max_diff <= MAX_LSB and mean_diff <= MAX_MEAN
    fig = dict(identical=int(identical), alone_s_per_image=alone, distributed_s_per_image=dist,
               speedup=_common.ratio(alone, dist), images=n, participants=3, cores=os.cpu_count(),
               max_diff=max_diff, mean_diff=round(mean_diff, 5))
    if args.smoke:
        fig["smoke"] = 1
    _common.result(**fig)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
