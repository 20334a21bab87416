"""Benchmark: LeanCanny against the raw cv2.Canny limit, ComfyUI core `Canny` and a controlnet_aux-style loop.

    flock /tmp/lean-heavy.lock python bench/canny.py [--host VERSION|PATH] [--images 16] [--size 1024] [--rounds 7]
        [--core-rounds 3] [--smoke]

All contenders get the same batch (procedural photos, float32 IMAGE [16, 1024, 1024, 3]; the raw loop
gets the same pixels as uint8) and run in one process: every contender (the stock node included) gets one
uncounted warm-up run, then round-robin with a rotating order.  Each figure is the median of its rounds
(spread printed); throughput = images / second.  The stock node takes tens of seconds per batch, so it is
timed in only --core-rounds of the rounds (default 3), in the same rotation.
--smoke: 2 images of 256x256, one round (checks that the benchmark still runs; the figures mean nothing).

Contenders:
  lean        LeanCanny's node function (float IMAGE in -> IMAGE + MASK + thresholds out)
  raw         [cv2.Canny(u8[i], lo, hi) for i]: uint8 already made, no tensors out (the limit)
  floor       the least work a node with float IMAGE in and float MASK out must add to raw: one pass
              float -> uint8 (no clamping), cv2.Canny, one pass uint8 -> float32 MASK (fresh memory)
  core        ComfyUI's stock `Canny` node (kornia) on CPU, imported from the host (COMFYUI_PATH or ~/ComfyUI)
  aux@512     a per-image loop in the style of comfyui_controlnet_aux's CannyEdgePreprocessor at its
              default resolution 512 (truncating *255 -> uint8, resize to 512, cv2.Canny, HWC3,
              back to float, torch.stack); it computes a 512x512 map, a quarter of the pixels
  aux@native  the same loop at the input size (like for like with lean)
  lean@512    LeanCanny with resolution=512 (like for like with aux@512)

Ends with `RESULT vs_raw=<lean/raw throughput> vs_core=<lean/core throughput> floor_vs_raw=<floor/raw>
vs_floor=<lean/floor>`.
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lean_testlib import harness, inproc  # noqa: E402
from lean_testlib.images import photo_like  # noqa: E402


def load_pack():
    """The repo as package `lean_nodes` (how ComfyUI sees it, without the host's `nodes` clash)."""
    inproc.load_pack()
    from lean_nodes.core import canny as core
    return core


def load_host_canny():
    """(Canny node class, None) from the host's comfy_extras.nodes_canny, or (None, why)."""
    host, why = harness.find_host()
    if host is None:
        return None, f"no ComfyUI host ({why})"
    sys.path.insert(0, str(host))
    if harness.needs_torchvision_shim():
        sys.path.insert(0, str(harness.SHIMS))
    try:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True            # as the host runs here: --cpu
        from comfy_extras.nodes_canny import Canny
        return Canny, None
    except Exception as e:
        return None, f"cannot import comfy_extras.nodes_canny from {host}: {type(e).__name__}: {e}"


def aux_style_loop(images, low, high, resolution):
    """A per-image loop written after comfyui_controlnet_aux's description: uint8 by truncation, resize the
    short side to `resolution` (INTER_AREA down, INTER_CUBIC up), pad to 64, cv2.Canny, crop, HWC3,
    float32 / 255, torch.stack.  resolution=None keeps the input size."""
    import cv2
    out = []
    for image in images:
        np_image = np.asarray(image.cpu() * 255.0, dtype=np.uint8)
        h, w = np_image.shape[:2]
        if resolution:
            k = resolution / min(h, w)
            nh, nw = int(np.round(h * k)), int(np.round(w * k))
            np_image = cv2.resize(np_image, (nw, nh), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
        h2, w2 = np_image.shape[:2]
        ph, pw = -h2 % 64, -w2 % 64
        padded = np.pad(np_image, [[0, ph], [0, pw], [0, 0]], mode="edge")
        edges = cv2.Canny(padded, low, high)[:h2, :w2]
        edges = np.concatenate([edges[..., None]] * 3, axis=2)              # HWC3
        out.append(torch.from_numpy(edges.astype(np.float32) / 255.0))
    return torch.stack(out, dim=0)


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--core-rounds", type=int, default=3,
                    help="rounds the stock node is timed in (after its warm-up, like the others); it takes tens of "
                         "seconds per batch")
    ap.add_argument("--low", type=int, default=100)
    ap.add_argument("--high", type=int, default=200)
    ap.add_argument("--smoke", action="store_true", help="2 images of 256x256, one round: does the benchmark run")
    args = ap.parse_args()
    if args.smoke:
        args.images, args.size, args.rounds, args.core_rounds = 2, 256, 1, 1

    import cv2
    core = load_pack()
    from lean_nodes.nodes.canny import LeanCanny
    HostCanny, why = load_host_canny()
    try:
        import comfy.utils  # noqa: F401  (the node's ProgressBar / interrupt hooks need the host)
        node = LeanCanny()

        def lean(x, resolution=0):
            return node.detect(x, args.low, args.high, "off", 0.33, 0, "3", False, resolution, False)
        lean_label = "LeanCanny.detect"
    except ImportError:
        def lean(x, resolution=0):
            return core.canny_batch(x, args.low, args.high, resolution=resolution)
        lean_label = "core.canny_batch (host not importable)"

    def lean512(x):
        return lean(x, 512)

    n, s = args.images, args.size
    u8 = np.stack([photo_like(s, s, seed=i) for i in range(n)])
    x = torch.from_numpy(u8.astype(np.float32) / np.float32(255))
    print(f"{n} images {s}x{s}, thresholds {args.low}/{args.high}; torch threads {torch.get_num_threads()}, "
          f"cv2 threads {cv2.getNumThreads()}, cv2 {cv2.__version__}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"lean contender: {lean_label}")

    # correctness first: the lean output is the raw output
    _, mask, _, _ = core.canny_batch(x[:2], args.low, args.high)
    assert all(np.array_equal((mask[i].numpy() * 255).astype(np.uint8), cv2.Canny(u8[i], args.low, args.high))
               for i in range(2)), "lean != raw cv2.Canny"

    def floor():
        """The least any node must do beyond the raw loop: read each float image once into uint8 (one SIMD
        pass, no clamping), cv2.Canny, write the float32 MASK into fresh memory (one pass).  No checks,
        no IMAGE output, no thresholds text."""
        mask = np.empty((n, s, s), np.float32)
        for i in range(n):
            img = cv2.convertScaleAbs(xf[i].reshape(s, s * 3), alpha=255.0).reshape(s, s, 3)
            cv2.multiply(cv2.Canny(img, args.low, args.high), 1.0 / 255.0, dst=mask[i], dtype=cv2.CV_32F)
        return mask

    xf = x.numpy()
    assert np.array_equal(floor()[:2], mask.numpy()), "floor != lean on these (in-range) images"
    contenders = {
        "lean": lambda: lean(x),
        "raw": lambda: [cv2.Canny(u8[i], args.low, args.high) for i in range(n)],
        "floor": floor,
        "lean@512": lambda: lean512(x),
        "aux@512": lambda: aux_style_loop(x, args.low, args.high, 512),
        "aux@native": lambda: aux_style_loop(x, args.low, args.high, None),
    }
    if HostCanny is not None:
        # the stock node's thresholds are gradient magnitudes in 0.01..0.99; its own defaults
        contenders["core"] = lambda: HostCanny.execute(x, 0.4, 0.8)
        print("core contender: comfy_extras.nodes_canny.Canny.execute(image, 0.4, 0.8) on CPU (kornia)")
    else:
        print(f"core contender: NOT RUN: {why}")

    times = {k: [] for k in contenders}
    for f in contenders.values():                               # warm-up: every contender alike, not counted
        f()
    names = list(contenders)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            if k == "core" and len(times["core"]) >= args.core_rounds:
                continue
            t0 = time.perf_counter()
            out = contenders[k]()
            times[k].append(time.perf_counter() - t0)
            del out

    best = {k: statistics.median(v) for k, v in times.items() if v}   # median of the rounds
    thr = {k: n / t for k, t in best.items()}
    print(f"\n{'contender':<12}{'median s':>10}{'images/s':>10}{'lean / it':>11}  rounds  (min-max s)")
    for k in names:
        if k in best:
            print(f"{k:<12}{best[k]:>10.3f}{thr[k]:>10.1f}{thr['lean'] / thr[k]:>11.2f}  {len(times[k]):>6}  "
                  f"({min(times[k]):.3f}-{max(times[k]):.3f})")

    # where lean's time goes beyond the raw loop (float IMAGE in, float MASK/IMAGE out)
    from lean_nodes.core.canny import to_uint8
    scratch = {}
    t0 = time.perf_counter()
    for i in range(n):
        to_uint8(x[i], scratch)
    t_in = time.perf_counter() - t0
    print(f"\nlean breakdown: float->uint8 {t_in:.3f}s, raw Canny {best['raw']:.3f}s, "
          f"the rest (MASK/IMAGE out, loop) {max(0.0, best['lean'] - best['raw'] - t_in):.3f}s")

    vs_raw = thr["lean"] / thr["raw"]
    vs_core = f"{thr['lean'] / thr['core']:.2f}" if "core" in thr else "NA"
    print(f"floor (float in -> uint8, Canny, float MASK out, nothing else): {thr['floor'] / thr['raw']:.2f} of raw; "
          f"lean reaches {thr['lean'] / thr['floor']:.2f} of the floor")
    print(f"RESULT vs_raw={vs_raw:.2f} vs_core={vs_core} floor_vs_raw={thr['floor'] / thr['raw']:.2f} "
          f"vs_floor={thr['lean'] / thr['floor']:.2f} images={n} size={s}" + (" smoke=1" if args.smoke else ""))


if __name__ == "__main__":
    main()
