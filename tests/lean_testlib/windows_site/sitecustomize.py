"""Windows semantics in a tier-2 host process: the harness puts this folder first on the HOST's PYTHONPATH when
LEAN_WINDOWS_SEMANTICS=1 (tests only; never shipped).  Installs tests/lean_testlib/windows_semantics.py for the
pack's code (paths in $LEAN_WINDOWS_SEMANTICS_CODE), then runs the next sitecustomize on sys.path, if any (the
socket audit's, or the system's), so it shadows nothing."""
import importlib.util
import os
import runpy
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _install():
    spec = importlib.util.spec_from_file_location(
        "lean_windows_semantics", os.path.join(os.path.dirname(_HERE), "windows_semantics.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    prefixes = [p for p in os.environ.get(mod.CODE_ENV, "").split(os.pathsep) if p] or [mod.HOST_DIR_FORM]
    mod.install(prefixes)
    sys.stderr.write(f"[lean test] Windows semantics installed for the pack's code under {prefixes}\n")


def _chain():
    for entry in sys.path:
        try:
            if os.path.realpath(entry or ".") == _HERE:
                continue
        except OSError:
            continue
        cand = os.path.join(entry or ".", "sitecustomize.py")
        if os.path.isfile(cand):
            runpy.run_path(cand, run_name="sitecustomize")
            return


if os.environ.get("LEAN_WINDOWS_SEMANTICS", "").strip().lower() in ("1", "true", "yes"):
    _install()
_chain()
