"""How long ComfyUI takes to import Lean Nodes, read from the host's own "Import times for custom nodes" block.

Starts the host (fresh --base-directory with only this pack) RUNS times, alternating with a host that has a tiny
reference pack (an empty V1 pack) so the ratio shows what the pack costs over the minimum.  The host prints one
decimal; the precise figure comes from timing `import` of the pack in a child process with the host's modules
already imported (what ComfyUI does).
Prints `RESULT import_s=<host's figure> import_precise_s=<s> vs_empty=<ratio>|n/a`.  Target: import_s < 0.1.
vs_empty is n/a when the host printed 0.0 s for the empty pack (a ratio of two figures rounded to 0.0 says
nothing).  The order alternates (Lean first in odd runs, the empty pack first in even ones); figures are medians.
--smoke: one run (checks that the benchmark still runs).

    flock /tmp/lean-heavy.lock python bench/import_time.py [--host VERSION|PATH] [--runs 3] [--smoke]
"""
import argparse
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import REPO, harness, host_or_exit, result  # noqa: E402

RUNS = 3
EMPTY_PACK = 'NODE_CLASS_MAPPINGS = {}\nNODE_DISPLAY_NAME_MAPPINGS = {}\n'


def host_import_line(host_path, pack_dir_name, setup):
    base = pathlib.Path(tempfile.mkdtemp(prefix="lean-import-"))
    harness.make_base_dir(base, link_pack=False)
    setup(base / "custom_nodes" / pack_dir_name)
    h = harness.ComfyHost.start(host_path, base, verbose="INFO")
    try:
        log = re.sub(r"\x1b\[[0-9;]*m", "", h.log())  # 0.33.0 colours its log lines and prefixes "[INFO]"
    finally:
        h.stop()
        shutil.rmtree(base, ignore_errors=True)
    m = re.search(r"^(?:\[\w+\])?\s*([\d.]+) seconds(?: \(IMPORT FAILED\))?: .*/" + re.escape(pack_dir_name) + r"\s*$", log, re.M)
    if not m:
        raise SystemExit(f"the host printed no import time for {pack_dir_name}:\n{log[-3000:]}")
    if "IMPORT FAILED" in m.group(0):
        raise SystemExit(f"the host failed to import {pack_dir_name}:\n{log[-3000:]}")
    return float(m.group(1))


PRECISE = r'''
import importlib.util, sys, time, os
sys.argv = ["main.py", "--cpu"]
import comfy.options; comfy.options.enable_args_parsing()
sys.path.insert(0, {host!r})
{shim}
import folder_paths, utils.extra_config, comfy.utils, execution, server, nodes, comfy.model_management  # main.py's order
t = time.perf_counter()
spec = importlib.util.spec_from_file_location({name!r}, os.path.join({pack!r}, "__init__.py"), submodule_search_locations=[{pack!r}])
m = importlib.util.module_from_spec(spec); sys.modules[{name!r}] = m; spec.loader.exec_module(m)
print(time.perf_counter() - t, len(m.NODE_CLASS_MAPPINGS))
'''


def precise_import(host_path, pack):
    shim = f"sys.path.insert(0, {str(harness.SHIMS)!r})" if harness.needs_torchvision_shim() else ""
    code = PRECISE.format(host=str(host_path), shim=shim, name="/custom_nodes/comfyui-lean", pack=str(pack))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(host_path))
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    secs, count = out.stdout.split()[-2:]
    return float(secs), int(count)


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--smoke", action="store_true", help="one run: does the benchmark still run")
    a = ap.parse_args()
    if a.smoke:
        a.runs = 1
    host = host_or_exit()
    lean, empty, precise = [], [], []
    for i in range(a.runs):
        for who in (("lean", "empty") if i % 2 == 0 else ("empty", "lean")):
            if who == "lean":
                lean.append(host_import_line(host, "comfyui-lean",
                                             lambda d: d.symlink_to(REPO, target_is_directory=True)))
            else:
                empty.append(host_import_line(host, "lean-empty-pack",
                                              lambda d: (d.mkdir(), (d / "__init__.py").write_text(EMPTY_PACK))))
        p, count = precise_import(host, REPO)
        precise.append(p)
        print(f"run {i + 1}: host says lean {lean[-1]:.1f}s, empty pack {empty[-1]:.1f}s; "
              f"precise import {p * 1000:.1f} ms for {count} nodes", flush=True)
    med = statistics.median
    # the host prints one decimal: with the empty pack at 0.0 s there is no ratio to tell
    vs_empty = round(med(lean) / med(empty), 3) if med(empty) else "n/a"
    print(f"median of {a.runs}: host figure {med(lean):.1f}s (empty pack {med(empty):.1f}s; target < 0.1), "
          f"precise {med(precise) * 1000:.1f} ms, ratio vs empty pack {vs_empty}")
    figures = dict(import_s=med(lean), import_precise_s=round(med(precise), 4), vs_empty=vs_empty, runs=a.runs)
    if a.smoke:
        figures["smoke"] = 1
    result(**figures)


if __name__ == "__main__":
    main()
