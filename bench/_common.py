"""Shared benchmark helpers: choose the host (--host), start it with the pack, alternate contenders, print ratios.

Every benchmark takes `--host VERSION|PATH`: a version of the host matrix (scripts/hosts.py: 0.3.64, 0.33.0) means
that provisioned host with its own python (the benchmark re-runs itself under it); a path means that ComfyUI.
Without it, the host is found as the tests find it (COMFYUI_PATH, the ComfyUI the pack sits in, ~/ComfyUI)."""
import os
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lean_testlib import harness  # noqa: E402


def host_from_argv(argv=None):
    """Apply and remove `--host VERSION|PATH` from argv (sys.argv by default), then print which host runs."""
    argv = sys.argv if argv is None else argv
    if "--host" in argv:
        i = argv.index("--host")
        if i + 1 >= len(argv):
            sys.exit("--host needs a host version (" + ", ".join(harness._hosts_module().HOSTS) + ") or a path")
        value = argv[i + 1]
        del argv[i:i + 2]
        hosts = harness._hosts_module()
        if value in hosts.HOSTS:
            if not hosts.provisioned(value):
                sys.exit(f"ComfyUI {value} is not provisioned: python scripts/hosts.py provision {value}")
            path, py = hosts.host_dir(value), str(hosts.venv_python(value))
        elif hosts.is_comfyui(value):
            path = pathlib.Path(value).resolve()
            py = hosts.python_for(path)
        else:
            sys.exit(f"--host {value}: neither a host of the matrix ({', '.join(hosts.HOSTS)}) nor a ComfyUI folder")
        os.environ["COMFYUI_PATH"] = str(path)
        if os.path.abspath(py) != os.path.abspath(sys.executable):  # not realpath: a venv python is a link
            os.execv(py, [py, *argv])  # the host's own environment (its packages, its import stand-in)
    path, _ = harness.find_host()
    if path:
        print(f"bench host: ComfyUI {harness.host_version(path)} at {path} (python {sys.executable})", file=sys.stderr,
              flush=True)
    return path


# --smoke runs on the SD1.5 fixture's narrow variant (lean_testlib.sd15.NARROW: SD1.5's keys and blocks at 320
# channels, detected as SD1.5 by the host; its LoRAs with SD1.5's module names): the smallest model that still takes
# every code path.  Kept in the environment so that a benchmark's child processes see it too.
NARROW_ENV = "LEAN_BENCH_SD15_NARROW"


def smoke_on_narrow(smoke):
    """Call with the benchmark's --smoke flag: from then on (children included) sd15_narrow() says whether to use the
    narrow SD1.5 fixture."""
    if smoke:
        os.environ[NARROW_ENV] = "1"


def sd15_narrow():
    return os.environ.get(NARROW_ENV) == "1"


def smoke():
    """True in a --smoke run and its children (set by smoke_on_narrow): the benchmarks skip their warm-up runs there;
    a warm-up runs the code the timed runs run, and only the timings (which a smoke run does not check) need it."""
    return sd15_narrow()


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


def remove_file(path):
    """`--remove-file` of the benchmarks whose full-size file is made on demand: delete it, say what was done."""
    if path.exists():
        path.unlink()
        print(f"removed {path}")
    else:
        print(f"nothing to remove ({path} does not exist)")
