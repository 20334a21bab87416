#!/usr/bin/env python3
"""The host matrix: the ComfyUI versions Lean Nodes is tested in, and how to provision each one from scratch.

    python scripts/hosts.py list                     the matrix, and which hosts are provisioned here
    python scripts/hosts.py provision [VERSION|all]  unpack, verify, make its environment (reused when done)
    python scripts/hosts.py path VERSION             the provisioned ComfyUI folder
    python scripts/hosts.py python VERSION           the provisioned environment's python

Archives are read from $LEAN_HOSTS_DIR, else ../shared/hosts beside this checkout (source snapshots of ComfyUI as
published; see that folder's README).  Hosts are unpacked into a cache outside git ($LEAN_CACHE/hosts, default
~/.cache/lean-nodes/hosts/<version>/ComfyUI), each with its own virtual environment (venv/, made with
--system-site-packages so the one torch of this machine is shared; the two hosts pin conflicting packages).
Its requirements are installed without torch, torchvision, torchaudio and spandrel (the host owns torch; the
registry's torchvision wheels do not load beside the CPU torch).  Where torchvision or torchaudio cannot be
imported in that environment, an import stand-in (tests/host_shims/lean_standin.py) is put on that environment's
path only: any submodule imports, anything really used fails loudly.  No host code is ever committed.
"""
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile

REPO = pathlib.Path(__file__).resolve().parents[1]

# One entry per host in the matrix: what it is, where it comes from, and what it needs.
HOSTS = {
    "0.3.64": {
        "archive": "comfyui-0.3.64.tar.gz",
        "sha256": "e09020dd5710d2fca5661c536260b604b28b9d1eb5b5898a02178a2a2eca232e",
        "source": "https://github.com/Comfy-Org/ComfyUI",
        "commit": "a125cd84b054a57729b5eecab930ca9408719832",
        "date": "2025-10",
        "frontend": "1.27.10",
    },
    "0.33.0": {
        "archive": "comfyui-0.33.0.tar.gz",
        "sha256": "339bb9d8d5b79b0764d0e3b2adb35334ce9df57a07c0016b86dd5989b0e72708",
        "source": "https://github.com/Comfy-Org/ComfyUI",
        "commit": "783545f689a0af730065994b46b382ae24844c99",
        "date": "2026-08-22",
        "frontend": "1.49.6",
    },
}
DEFAULT = "0.33.0"  # what `lean.py serve` uses when no ComfyUI of the user's own is found
# Never installed into a host environment: the host owns torch; spandrel pulls torchvision (a CUDA build here).
EXCLUDED = ("torch", "torchvision", "torchaudio", "spandrel")
STANDIN = REPO / "tests" / "host_shims" / "lean_standin.py"
STANDIN_MODULES = ("torchvision", "torchaudio")
LAYOUT = 4  # bump when what provision() makes changes, so provisioned hosts are rebuilt


class HostError(RuntimeError):
    pass


def archives_dir():
    env = os.environ.get("LEAN_HOSTS_DIR")
    return pathlib.Path(env) if env else REPO.parent / "shared" / "hosts"


def cache_root():
    return pathlib.Path(os.environ.get("LEAN_CACHE", pathlib.Path.home() / ".cache" / "lean-nodes")) / "hosts"


def host_dir(version):
    return cache_root() / version / "ComfyUI"


def venv_python(version):
    root = cache_root() / version / "venv"
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _marker(version):
    return cache_root() / version / "provisioned.json"


def _spec(version):
    if version not in HOSTS:
        raise HostError(f"unknown host {version!r}: the matrix has {', '.join(HOSTS)}")
    return HOSTS[version]


def how_to_get(version):
    s = _spec(version)
    return (f"get it with: git clone {s['source']} ComfyUI && git -C ComfyUI checkout {s['commit']} && "
            f"tar -czf {s['archive']} ComfyUI  (then put {s['archive']} in {archives_dir()} or in the folder "
            f"named by LEAN_HOSTS_DIR; its sha256 must be {s['sha256']})")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provisioned(version):
    """The marker of a finished provisioning that matches the matrix, else None."""
    try:
        m = json.loads(_marker(version).read_text())
    except (OSError, ValueError):
        return None
    if m.get("sha256") != _spec(version)["sha256"] or m.get("layout") != LAYOUT:
        return None
    if not (host_dir(version) / "main.py").is_file() or not venv_python(version).exists():
        return None
    return m


def host_requirements(comfy_dir):
    """The host's requirements.txt lines minus the EXCLUDED packages."""
    keep = []
    for line in (pathlib.Path(comfy_dir) / "requirements.txt").read_text().splitlines():
        s = line.strip()
        name = re.split(r"[\s<>=~!;\[]", s, maxsplit=1)[0].lower() if s and not s.startswith("#") else ""
        if name and name not in EXCLUDED:
            keep.append(s)
    return keep


def _log(msg):
    print(f"[lean hosts] {msg}", file=sys.stderr, flush=True)


def _run(cmd):
    """Run a command; its output is shown without pip's notes about this machine's unused local index."""
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = "".join(l for l in r.stdout.splitlines(True) if not l.startswith("WARNING: Location '"))
    if out.strip():
        print(out, end="", file=sys.stderr, flush=True)
    if r.returncode != 0:
        raise HostError(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}")
    return r


def _site_packages(python):
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return pathlib.Path(out)


def _importable(python, module, env=None):
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, env=env).returncode == 0


def install_standin(python):
    """Put the import stand-in on this environment's path only, for the modules that do not import there.
    Returns the modules it stands in for (empty when the real packages load)."""
    site = _site_packages(python)
    pth = site / "lean_standin.pth"
    for old in (pth, site / "lean_standin.py"):
        if old.exists():
            old.unlink()
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    missing = [m for m in STANDIN_MODULES if not _importable(python, m, env)]
    if missing:
        shutil.copyfile(STANDIN, site / "lean_standin.py")
        pth.write_text(f"import lean_standin; lean_standin.install({missing!r})\n")
        for m in missing:
            if not _importable(python, f"{m}.ops.deep.sub", env):
                raise HostError(f"the import stand-in for {m} does not import in {python}")
    return missing


def provision(version, quiet=False):
    """Make host `version` ready to run; returns its marker dict.  A finished provisioning is reused."""
    spec = _spec(version)
    done = provisioned(version)
    if done:
        if not quiet:
            _log(f"ComfyUI {version}: reusing {host_dir(version)}")
        return done
    archive = archives_dir() / spec["archive"]
    if not archive.is_file():
        raise HostError(f"ComfyUI {version}: no archive {archive} (looked in {archives_dir()}; set LEAN_HOSTS_DIR "
                        f"to the folder that holds {spec['archive']}); {how_to_get(version)}")
    got = sha256_of(archive)
    if got != spec["sha256"]:
        raise HostError(f"ComfyUI {version}: {archive} has sha256 {got}, the matrix expects {spec['sha256']}; "
                        f"{how_to_get(version)}")
    root = cache_root() / version
    if _marker(version).exists():
        _marker(version).unlink()
    _log(f"ComfyUI {version}: unpacking {archive} into {root}")
    shutil.rmtree(root / "ComfyUI", ignore_errors=True)
    tmp = root / "unpack.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(archive) as tf:
        if sys.version_info >= (3, 12):
            tf.extractall(tmp, filter="data")
        else:
            for m in tf.getmembers():
                if m.name.startswith(("/", "..")) or ".." in pathlib.PurePosixPath(m.name).parts:
                    raise HostError(f"{archive}: unsafe member {m.name}")
            tf.extractall(tmp)
    if not (tmp / "ComfyUI" / "main.py").is_file():
        raise HostError(f"{archive} does not unpack to ComfyUI/main.py")
    (tmp / "ComfyUI").rename(root / "ComfyUI")
    shutil.rmtree(tmp, ignore_errors=True)

    venv = root / "venv"
    if not venv_python(version).exists():
        _log(f"ComfyUI {version}: making its environment {venv} (--system-site-packages: shares this torch)")
        _run([sys.executable, "-m", "venv", "--system-site-packages", venv])
    py = venv_python(version)
    if not _importable(py, "torch"):
        raise HostError(f"torch does not import in {py}: install torch first (e.g. pip install torch==2.13.0, "
                        "a CPU build); the host owns torch and provisioning never installs it")
    reqs = host_requirements(root / "ComfyUI")
    req_file = root / "requirements.lean.txt"
    req_file.write_text("\n".join(reqs) + "\n")
    _log(f"ComfyUI {version}: installing its requirements without {', '.join(EXCLUDED)}")
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", req_file])
    standin = install_standin(py)
    # The host's own tree gets its bytecode now, as pip writes it for every installed package and as a user's first
    # start writes it: where PYTHONDONTWRITEBYTECODE is set (the development machine's environment sets it) every
    # host process would compile its ~640 modules again (~2.4 s of each ComfyUI 0.33.0 start on a 2-core machine).
    # A file that does not compile is compiled (and fails) at import as before.
    r = subprocess.run([str(py), "-m", "compileall", "-q", "-j", "0", str(root / "ComfyUI")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode:
        _log(f"ComfyUI {version}: compileall left some files to compile at import:\n{r.stdout[-2000:]}")
    if standin:
        _log(f"ComfyUI {version}: {', '.join(standin)} do not import beside this torch; "
             f"the import stand-in is on {venv}'s path only")
    marker = {"version": version, "sha256": spec["sha256"], "layout": LAYOUT, "comfyui": str(root / "ComfyUI"),
              "python": str(py), "standin": standin, "frontend": spec["frontend"]}
    _marker(version).write_text(json.dumps(marker, indent=1))
    _log(f"ComfyUI {version}: ready at {root / 'ComfyUI'} (python {py})")
    return marker


def user_host_candidates():
    """Where a user's own ComfyUI is looked for, in order: COMFYUI_PATH, the ComfyUI this pack sits in
    (ComfyUI/custom_nodes/<pack>), ~/ComfyUI."""
    env = os.environ.get("COMFYUI_PATH")
    found = [("COMFYUI_PATH", pathlib.Path(env))] if env else []
    if REPO.parent.name == "custom_nodes":
        found.append(("the ComfyUI this pack sits in", REPO.parent.parent))
    found.append(("~/ComfyUI", pathlib.Path.home() / "ComfyUI"))
    return found


def is_comfyui(path):
    return (pathlib.Path(path) / "main.py").is_file() and (pathlib.Path(path) / "comfy").is_dir()


def find_user_host():
    """(path, None) for the first usable ComfyUI of user_host_candidates(), else (None, why)."""
    tried = [] if os.environ.get("COMFYUI_PATH") else ["COMFYUI_PATH is not set"]
    for label, p in user_host_candidates():
        if is_comfyui(p):
            return p.resolve(), None
        tried.append(f"{label}={p} has no main.py")
    return None, "; ".join(tried)


def provisioned_version(comfy_dir):
    """The matrix version whose provisioned folder `comfy_dir` is, else None."""
    try:
        d = pathlib.Path(comfy_dir).resolve()
    except OSError:
        return None
    for v in HOSTS:
        if provisioned(v) and host_dir(v).resolve() == d:
            return v
    return None


def python_for(comfy_dir, default=sys.executable):
    """The python to run a host with: $LEAN_HOST_PYTHON, else a provisioned host's own environment, else
    `default`."""
    if os.environ.get("LEAN_HOST_PYTHON"):
        return os.environ["LEAN_HOST_PYTHON"]
    v = provisioned_version(comfy_dir)
    return str(venv_python(v)) if v else default


def version_of(comfy_dir):
    try:
        txt = (pathlib.Path(comfy_dir) / "comfyui_version.py").read_text()
        return txt.split("__version__")[1].split('"')[1]
    except (OSError, IndexError):
        return "unknown"


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="hosts.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    pr = sub.add_parser("provision")
    pr.add_argument("version", nargs="?", default="all")
    for name in ("path", "python"):
        sp = sub.add_parser(name)
        sp.add_argument("version")
    a = p.parse_args(argv)
    try:
        if a.cmd == "list":
            for v, s in HOSTS.items():
                state = f"provisioned at {host_dir(v)}" if provisioned(v) else "not provisioned"
                print(f"{v}\t{s['archive']}\tfrontend {s['frontend']}\t{state}{'  (default)' if v == DEFAULT else ''}")
        elif a.cmd == "provision":
            for v in (list(HOSTS) if a.version == "all" else [a.version]):
                provision(v)
        else:
            if not provisioned(a.version):
                raise HostError(f"ComfyUI {a.version} is not provisioned: python scripts/hosts.py provision {a.version}")
            print(host_dir(a.version) if a.cmd == "path" else venv_python(a.version))
    except HostError as e:
        print(f"hosts.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
