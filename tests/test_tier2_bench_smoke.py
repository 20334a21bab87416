"""Tier 2: every benchmark in bench/ still runs (issue 24).

Each runs as a subprocess, `python bench/<name>.py --smoke --host <the host under test>` (its own host process or
in-process host modules, smallest sizes, one round), and must exit 0 and end with a `RESULT ` line holding the keys
it promises.  Targets are not checked here (the figures of a smoke run mean nothing; speed and memory are measured
by running the benchmarks in their normal mode); this only makes a benchmark that no longer runs fail CI.
"""
import os
import re
import subprocess
import sys

import pytest

from lean_testlib import REPO, harness, prereq

# CI runs these on its default host only (marker one_host, .ci/run): a benchmark that no longer runs fails there; what
# the benchmarks measure is tested on both hosts by the feature tests.
pytestmark = [pytest.mark.tier2, pytest.mark.one_host]

NUM = r"-?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?|inf"
KEYS = {  # the keys each benchmark's RESULT line promises (smoke runs add smoke=1)
    "lora": ["restrength_ratio", "schedule_vs_hooks", "step_overhead", "mem_ratio"],
    "canny": ["vs_raw", "vs_core", "floor_vs_raw", "vs_floor"],
    "ckpt_load": ["peak_rss_ratio", "peak_rss_fp16_ratio", "wall_ratio", "wall_ratio_min", "wall_ratio_max",
                  "identical", "cpu_ratio", "pairs", "model"],
    "import_time": ["import_s", "import_precise_s", "vs_empty", "runs"],
    "prompt_batch": ["encode_ratio", "e2e_ratio", "images"],
    "prompt_batch_distributed": ["identical", "alone_s_per_image", "distributed_s_per_image", "speedup", "images",
                                 "participants", "cores", "max_diff", "mean_diff"],
    "llm": ["tok_ratio", "cached_load_s"],
    "vision": ["tok_ratio", "encode_ratio", "cached_load_s"],
    "flux_load": ["peak_rss_ratio", "lean_peak_vs_file", "wall_ratio", "total_wall_ratio", "sampled", "identical"],
    "te_load": ["peak_rss_ratio", "lean_peak_vs_file", "wall_ratio", "total_wall_ratio", "encoded", "identical"],
    "soak": ["prompts", "ok", "rss_growth", "fd_growth"],
    "lora_per_image": ["wall_ratio", "peak_rss_ratio", "max_abs_diff", "overhead", "pairs"],
    "gguf_lora": ["host", "model", "none_ms", "stock_ms_1", "lean_ms_1", "lean_vs_stock_1"],
    "gpu_dynamic_vram": ["gpu", "host", "dynamic_vram", "identical", "vram_peak_ratio", "ram_peak_ratio",
                         "lora_fp16_maxdiff", "lora_bf16_maxdiff", "llm_freed", "targets"],
}
NOT_NUMBERS = {"model", "gpu", "host", "targets", "vs_empty", "vram_peak_ratio", "llm_freed"}


def host_path():
    path, why = harness.find_host()
    if path is None:
        pytest.skip(prereq(f"no ComfyUI host found ({why})"))
    return path


def run_bench(name, *args, timeout=600):
    cmd = [sys.executable, str(REPO / "bench" / f"{name}.py"), *args, "--host", str(host_path())]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO), env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} ran past {timeout} s:\n{(e.stdout or b'')[-3000:]}")
    return r


def result_of(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return None
    return dict(kv.split("=", 1) for kv in lines[-1].split()[1:])


def test_every_benchmark_has_a_smoke_case():
    scripts = {p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("_")}
    assert scripts == set(KEYS), f"benchmarks without a smoke case here: {sorted(scripts - set(KEYS))}"


@pytest.mark.parametrize("name", list(KEYS))
def test_benchmark_runs_in_smoke_mode(name):
    if name in ("llm", "vision"):
        py = harness.host_python(host_path())
        if subprocess.run([str(py), "-c", "import llama_cpp"], capture_output=True).returncode:
            pytest.skip(prereq(f"llama-cpp-python not installed in the host's python {py}"))
    r = run_bench(name, "--smoke")
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"bench/{name}.py --smoke exited {r.returncode}:\n{out[-6000:]}"
    res = result_of(r.stdout)
    assert res is not None, f"bench/{name}.py --smoke printed no RESULT line:\n{out[-4000:]}"
    missing = [k for k in KEYS[name] if k not in res]
    assert not missing, f"bench/{name}.py RESULT lacks {missing}: {res}"
    assert res.get("smoke") == "1", res
    bad = {k: res[k] for k in KEYS[name] if k not in NOT_NUMBERS and not re.fullmatch(NUM, res[k])}
    assert not bad, f"bench/{name}.py RESULT has figures that are not numbers: {bad}"


def test_gpu_check_without_gpu_fails_saying_so():
    """Not in smoke mode, on a machine whose host torch has no GPU, the GPU check must not pass."""
    py = harness.host_python(host_path())
    has_cuda = subprocess.run([str(py), "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                              capture_output=True, env=harness.host_env(str(py))).returncode == 0
    if has_cuda:
        pytest.skip("this machine has a GPU: the check itself runs (see bench/gpu_dynamic_vram.py)")
    r = run_bench("gpu_dynamic_vram", timeout=300)
    assert r.returncode == 2, f"exit {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}"
    assert "no CUDA GPU" in r.stdout, r.stdout[-3000:]
    res = result_of(r.stdout)
    assert res is not None and res["targets"] == "fail" and "no_gpu" in res.get("error", ""), r.stdout[-2000:]
