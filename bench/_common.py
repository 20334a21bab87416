"""Shared benchmark helpers: find the host, start it with the pack, alternate contenders, print ratios."""
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lean_testlib import harness  # noqa: E402


def host_or_exit():
    path, why = harness.find_host()
    if path is None:
        print(f"no ComfyUI host found ({why}); set COMFYUI_PATH")
        print("RESULT skipped=1")
        sys.exit(0)
    return path


def start_host(**kw):
    base = pathlib.Path(tempfile.mkdtemp(prefix="lean-bench-"))
    return harness.ComfyHost.start(host_or_exit(), base, **kw)


def add_host_to_path():
    """Put the host on sys.path for in-process use of comfy.* (benchmarks only; never in the pack)."""
    host = host_or_exit()
    if harness.needs_torchvision_shim():
        sys.path.insert(0, str(harness.SHIMS))
    sys.path.insert(0, str(host))
    return host


def ratio(a, b):
    return a / b if b else float("inf")


def result(**figures):
    print("RESULT " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()),
          flush=True)
