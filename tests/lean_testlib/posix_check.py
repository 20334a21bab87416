"""Static check: every POSIX-only call in the pack sits behind a platform test (tier 1, no import of the pack).

POSIX-only: ``os.pread``/``preadv``/``fork``/... (windows_semantics.POSIX_ONLY_OS), ``mmap.MAP_*``/``MADV_*``/``PROT_*``,
``.madvise(...)``, ``mmap.mmap(..., flags=/prot=)``, POSIX signals (``signal.SIGKILL``, ``signal.alarm`` ...),
``import resource``/``fcntl``/... (windows_semantics.BLOCKED_MODULES), ``"/proc/..."`` paths and ``libc.so``
names.  Behind a platform test means one of, around it:

* an ``if``/conditional expression whose test uses ``hasattr``/``getattr``, ``sys.platform``, ``os.name`` or
  ``platform.system()`` (a feature test is the preferred kind: Windows semantics mode answers it);
* an earlier ``if <such a test>: return/raise/continue`` in the same block;
* a ``try`` whose handler catches what the construct raises on Windows (AttributeError for a missing name,
  ImportError for a module, OSError for a path), or ``Exception``.
"""
import ast
import pathlib

from .windows_semantics import BLOCKED_MODULES, POSIX_ONLY_OS, POSIX_ONLY_SIGNAL_FUNCS, WINDOWS_SIGNALS

PLATFORM_NAMES = {"hasattr", "getattr"}
RAISES = {"attr": {"AttributeError"}, "import": {"ImportError", "ModuleNotFoundError"},
          "path": {"OSError", "FileNotFoundError", "IOError", "PermissionError"}, "call": {"TypeError"}}


def _is_platform_test(test):
    for n in ast.walk(test):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in PLATFORM_NAMES:
            return True
        if isinstance(n, ast.Attribute):
            base = n.value.id if isinstance(n.value, ast.Name) else None
            if (base, n.attr) in {("sys", "platform"), ("os", "name"), ("platform", "system")}:
                return True
    return False


def _handler_names(handler):
    t = handler.type
    if t is None:
        return {"Exception"}
    elts = t.elts if isinstance(t, ast.Tuple) else [t]
    return {e.id if isinstance(e, ast.Name) else getattr(e, "attr", "") for e in elts}


def _findings(tree):
    """(node, kind, text) for every POSIX-only construct in ``tree``."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            base, attr = n.value.id, n.attr
            if base == "os" and attr in POSIX_ONLY_OS:
                out.append((n, "attr", f"os.{attr}"))
            elif base == "mmap" and attr.startswith(("MAP_", "MADV_", "PROT_")):
                out.append((n, "attr", f"mmap.{attr}"))
            elif base == "signal" and ((attr.startswith("SIG") and attr not in WINDOWS_SIGNALS)
                                       or attr in POSIX_ONLY_SIGNAL_FUNCS):
                out.append((n, "attr", f"signal.{attr}"))
        if isinstance(n, ast.Attribute) and n.attr == "madvise":
            out.append((n, "attr", ".madvise"))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "mmap" \
                and any(k.arg in ("flags", "prot") for k in n.keywords):
            out.append((n, "call", "mmap.mmap(flags=/prot=)"))
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.name.partition(".")[0] in BLOCKED_MODULES:
                    out.append((n, "import", f"import {a.name}"))
        if isinstance(n, ast.ImportFrom) and (n.module or "").partition(".")[0] in BLOCKED_MODULES and not n.level:
            out.append((n, "import", f"from {n.module} import"))
        if isinstance(n, ast.ImportFrom) and n.module in ("os", "mmap", "signal"):
            for a in n.names:
                if a.name in POSIX_ONLY_OS or a.name.startswith(("MAP_", "MADV_", "PROT_")):
                    out.append((n, "attr", f"from {n.module} import {a.name}"))
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and (
                n.value.startswith("/proc/") or n.value == "/proc" or "libc.so" in n.value):
            out.append((n, "path", repr(n.value)))
        if isinstance(n, ast.JoinedStr) and n.values and isinstance(n.values[0], ast.Constant) \
                and str(n.values[0].value).startswith("/proc"):
            out.append((n, "path", "f'/proc...'"))
    return out


def _parents(tree):
    par = {}
    for p in ast.walk(tree):
        for c in ast.iter_child_nodes(p):
            par[c] = p
    return par


def _exits(body):
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break))


def _guarded(node, kind, par):
    child, p = node, par.get(node)
    while p is not None:
        if isinstance(p, (ast.If, ast.IfExp, ast.While)) and child is not p.test and _is_platform_test(p.test):
            return True
        if isinstance(p, ast.Try) and child in p.body:
            for h in p.handlers:
                if _handler_names(h) & (RAISES[kind] | {"Exception", "BaseException"}):
                    return True
        for field in ("body", "orelse", "finalbody"):
            block = getattr(p, field, None)
            if isinstance(block, list) and child in block:
                for prev in block[:block.index(child)]:
                    if isinstance(prev, ast.If) and _is_platform_test(prev.test) and _exits(prev.body):
                        return True
        child, p = p, par.get(p)
    return False


def unguarded(source, filename="<source>"):
    """['file:line: construct'] for each POSIX-only construct of ``source`` without a platform test."""
    tree = ast.parse(source, filename)
    par = _parents(tree)
    return [f"{filename}:{n.lineno}: {text}" for n, kind, text in _findings(tree) if not _guarded(n, kind, par)]


def pack_files(repo):
    repo = pathlib.Path(repo)
    files = [repo / "__init__.py"]
    for d in ("core", "nodes", "scripts"):
        files += sorted((repo / d).rglob("*.py"))
    return files


def check_pack(repo):
    out = []
    for f in pack_files(repo):
        out += unguarded(f.read_text(encoding="utf-8"), str(f.relative_to(repo)))
    return out
