"""The host's Python modules in this process (for benchmarks and quick checks, not the server).

    host = inproc.load_host()            # puts ComfyUI on sys.path, returns its path
    import nodes, comfy.sd               # the host's own modules
    pack = inproc.load_pack()            # this repo as package `lean_nodes` (__init__ not run)
"""
import sys
import types

from . import REPO
from .harness import SHIMS, find_host, needs_torchvision_shim


def load_host():
    path, why = find_host()
    if path is None:
        raise RuntimeError(f"no ComfyUI host: {why}")
    if needs_torchvision_shim() and str(SHIMS) not in sys.path:
        sys.path.insert(0, str(SHIMS))
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import comfy.options  # noqa: F401  (argument parsing stays off: the host's defaults)
    import comfy.cli_args
    import torch
    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True  # what the server gets from --cpu
    return path


def load_pack(name="lean_nodes"):
    """Register the repo as package `name` without running __init__ (like tests/conftest.py)."""
    if name not in sys.modules:
        mod = types.ModuleType(name)
        mod.__path__ = [str(REPO)]
        mod.__file__ = str(REPO / "__init__.py")
        sys.modules[name] = mod
    return sys.modules[name]


def load_checkpoint(path):
    import comfy.sd
    import folder_paths
    out = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True,
                                                embedding_directory=folder_paths.get_folder_paths("embeddings"))
    return out[:3]


def run_json(module, *args, timeout=900):
    """Run `python -m lean_testlib.<module> *args` with this interpreter (tests/ on PYTHONPATH, the host found as the
    tests find it) and return the JSON of its last `RESULT_JSON ` line; an AssertionError with its output tail when
    it fails or prints none."""
    import json
    import os
    import subprocess
    from .harness import require_host
    require_host()
    tests_dir = str(REPO / "tests")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-m", f"lean_testlib.{module}", *args], cwd=tests_dir, env=env,
                       capture_output=True, text=True, timeout=timeout)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT_JSON ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT_JSON "):])
