"""Tier 1: bench/flux_load.py's argument parsing, RESULT line and watchdog (a child allocating past a small limit
is killed and the phase it was in is reported), and the full-size Flux fp8 fixture generator on a small layout
(exact key set and shapes from flux_tiny.flux_keys, every tensor F8_E4M3, no NaN byte, deterministic)."""
import hashlib
import importlib.util
import json
import math
import struct
import sys
import textwrap

import pytest

from lean_testlib import REPO, flux_full, flux_tiny

psutil = pytest.importorskip("psutil")
MiB = 1 << 20


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lean_bench_flux_load", REPO / "bench" / "flux_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parse_args_defaults_and_errors(bench):
    a = bench.parse_args([])
    assert (a.pairs, a.size, a.steps, a.weight_dtype, a.min_available_gb) == (1, 256, 1, "default", 1.5)
    assert a.max_private_gb == pytest.approx(psutil.virtual_memory().total / 2 ** 30 - 1.5, abs=0.06)
    a = bench.parse_args(["--pairs", "2", "--max-private-gb", "3", "--file", "x.safetensors"])
    assert (a.pairs, a.max_private_gb, a.file) == (2, 3.0, "x.safetensors")
    for bad in (["--pairs", "0"], ["--size", "250"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_result_line(bench):
    gb = 2 ** 30
    stock = {"peak": 20 * gb, "load_wall": 40.0, "total_wall": 200.0, "sampled": True, "stopped": None}
    lean = {"peak": 12 * gb, "load_wall": 10.0, "total_wall": 150.0, "sampled": True, "stopped": None}
    line = bench.result_line(stock, lean, 11 * gb, identical=True)
    assert line == ("RESULT peak_rss_ratio=0.600 lean_peak_vs_file=1.091 wall_ratio=0.250 total_wall_ratio=0.750 "
                    "sampled=1 identical=1")
    stopped = {"peak": 16 * gb, "load_wall": 20.0, "total_wall": None, "sampled": False, "stopped": "load"}
    line = bench.result_line(stopped, lean, 11 * gb)
    assert line == ("RESULT peak_rss_ratio=0.750 lean_peak_vs_file=1.091 wall_ratio=0.500 sampled=1 "
                    "stock_stopped=load bound=upper")
    lean_stopped = dict(lean, sampled=False, stopped="sample", total_wall=None)
    assert bench.result_line(stock, lean_stopped, 11 * gb).endswith("sampled=0 lean_stopped=sample")


CHILD = textwrap.dedent("""
    import json, sys, time
    print("PHASE import", flush=True)
    time.sleep(0.3)
    print("PHASE {phase}", flush=True)
    hold = []
    for _ in range({steps}):
        hold.append(b"\\x01" * (32 << 20))  # written, so resident
        time.sleep(0.03)
    print("PHASE done", flush=True)
    print("FIGURES " + json.dumps({{"load_wall": 1.5, "sample_wall": 2.0, "finite": True}}), flush=True)
""")


def test_watchdog_kills_a_child_past_its_memory_limit_and_names_the_phase(bench, tmp_path):
    script = tmp_path / "alloc.py"
    script.write_text(CHILD.format(phase="load", steps=64))  # would reach 2 GiB
    run = bench.watch([sys.executable, str(script)], max_private=300 * MiB, min_available=0)
    assert run["stopped"] == "load", (run["stopped"], run["stderr"][-2000:])
    assert run["rc"] != 0 and run["figures"] is None
    assert 300 * MiB < run["rss_at_stop"] < 1800 * MiB, run["rss_at_stop"]  # stopped well before its 2 GiB
    assert "private memory" in run["why"] and run["in_phase_s"] > 0
    assert run["phases"]["load"] >= run["rss_at_stop"] and run["phases"]["import"] < 300 * MiB
    s = bench.summarize(run)
    assert s["stopped"] == "load" and s["load_wall"] == run["in_phase_s"] and not s["sampled"]


def test_watchdog_stops_on_low_available_memory(bench, tmp_path):
    script = tmp_path / "alloc.py"
    script.write_text(CHILD.format(phase="sample", steps=8))
    avail = psutil.virtual_memory().available
    run = bench.watch([sys.executable, str(script)], max_private=1 << 50, min_available=avail * 4)
    assert run["stopped"] is not None and "available memory" in run["why"], run


def test_watchdog_lets_a_child_within_its_limits_finish(bench, tmp_path):
    script = tmp_path / "alloc.py"
    script.write_text(CHILD.format(phase="sample", steps=4))
    run = bench.watch([sys.executable, str(script)], max_private=4096 * MiB, min_available=0)
    assert run["stopped"] is None and run["rc"] == 0, run["stderr"]
    assert run["phase"] == "done" and run["figures"]["finite"] is True
    assert run["peak"] > 100 * MiB  # the sampler saw the 128 MiB it held
    s = bench.summarize(run)
    assert (s["load_wall"], s["total_wall"], s["sampled"]) == (1.5, 3.5, True)


def _header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def test_full_flux_fixture_generator_on_a_small_layout(tmp_path, monkeypatch):
    import numpy as np
    import torch
    from safetensors import safe_open
    monkeypatch.setattr(flux_full, "CHUNK", 1 << 16)  # several pieces per large tensor
    kw = {"hidden_size": 256, "depth": 2, "depth_single": 1, "context_in_dim": 64}
    path = flux_full.flux_full(cache=tmp_path / "a", **kw)
    again = flux_full.flux_full(cache=tmp_path / "b", **kw)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(path) == digest(again)  # deterministic
    expected = flux_tiny.flux_keys(hidden_size=256, depth=2, depth_single=1, context_in_dim=64)
    head, start = _header(path)
    head.pop("__metadata__")
    assert {k: tuple(v["shape"]) for k, v in head.items()} == expected
    assert {v["dtype"] for v in head.values()} == {"F8_E4M3"}
    data = np.fromfile(path, dtype=np.uint8, offset=start)
    assert data.size == sum(math.prod(s) for s in expected.values())
    assert not ((data & 0x7F) == 0x7F).any()  # no e4m3fn NaN byte
    with safe_open(str(path), "pt") as f:
        w = f.get_tensor("double_blocks.1.img_attn.qkv.weight").float()
        scale = f.get_tensor("single_blocks.0.norm.query_norm.scale").float()
        assert f.get_tensor("img_in.bias").dtype == torch.float8_e4m3fn
    assert torch.isfinite(w).all() and 0.5 / 16 < w.std() < 2 / 16  # N(0, 1/fan_in), fan_in 256
    assert (scale - 1).abs().max() < 0.6
    # the full layout is Flux-dev's: 780 tensors, 11.9 B parameters (one byte each)
    full = flux_full.layout()
    assert len(full) == 780 and sum(math.prod(s) for s in full.values()) == 11_901_408_320


def test_full_zimage_fixture_writer_in_bf16_on_a_small_layout(tmp_path, monkeypatch):
    """The bf16 path of the same writer (bench/flux_load.py --model zimage): Z-Image's key names, bf16 bytes that
    safetensors reads back, RMSNorm scales (1-D weights) around 1, matrices N(0, 1/fan_in); the full layout is
    Z-Image Turbo's (30 layers, 2 + 2 refiners at 3840: 453 tensors, 6.15 B parameters)."""
    import torch
    from safetensors import safe_open
    from lean_testlib import families
    monkeypatch.setattr(flux_full, "CHUNK", 1 << 16)
    keys = families.zimage_keys(n_layers=1, dim=256, ffn=512, cap_feat_dim=64, refiners=1)
    path = tmp_path / "z.safetensors"
    total = flux_full.write(path, 0, keys=keys, dtype="BF16", name="zimage_full")
    assert total == 2 * sum(math.prod(s) for s in keys.values())
    head, start = _header(path)
    head.pop("__metadata__")
    assert {k: tuple(v["shape"]) for k, v in head.items()} == keys and {v["dtype"] for v in head.values()} == {"BF16"}
    with safe_open(str(path), "pt") as f:
        w = f.get_tensor("layers.0.attention.qkv.weight")
        norm = f.get_tensor("layers.0.attention_norm1.weight").float()
    assert w.dtype == torch.bfloat16 and torch.isfinite(w.float()).all() and 0.5 / 16 < w.float().std() < 2 / 16
    assert (norm - 1).abs().max() < 0.6 and norm.std() > 0.01
    full = families.zimage_keys(**flux_full.ZIMAGE_FULL)
    assert len(full) == 453 and sum(math.prod(s) for s in full.values()) == 6_154_908_736


def test_private_bytes_leaves_out_file_backed_pages(bench):
    from types import SimpleNamespace as NS
    assert bench.private_bytes(NS(rss=10, private=4)) == 4  # Windows: private bytes
    assert bench.private_bytes(NS(rss=10, shared=7)) == 3  # Linux: RSS minus file-backed pages
    assert bench.private_bytes(NS(rss=10)) == 10
    mi = psutil.Process().memory_info()
    assert 0 < bench.private_bytes(mi) <= mi.rss
