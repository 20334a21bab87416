"""Windows semantics for the pack's own code, on Linux (test-only; never shipped with the pack).

``install(code_prefixes)`` makes Python answer the pack's code the way Windows' Python would where it matters:

* ``mmap.mmap`` has Windows' signature ``mmap(fileno, length, tagname=None, access=ACCESS_DEFAULT, offset=0)``
  (``flags=``/``prot=`` -> TypeError), its objects have no ``madvise``, and the module has no ``MAP_*``,
  ``MADV_*`` or ``PROT_*``;
* ``os`` has no ``pread``/``preadv``/``pwrite``/``pwritev``/``fork``/... (POSIX-only functions), ``signal`` only
  Windows' signals (no ``SIGKILL``, ``SIGBUS``, ``SIGHUP``, ``alarm`` ...);
* ``import resource``/``fcntl``/``termios``/``pwd``/``grp``/``pty``/``tty``/``posix`` fails;
* ``open("/proc/...")`` and ``os.open("/proc/...")`` raise FileNotFoundError.

Which code: a frame whose file starts with one of ``code_prefixes`` (or contains one, for the
``/custom_nodes/comfyui-lean/`` form the host loads the pack under) and is not under ``tests/``.  Everything
else -- ComfyUI, torch, aiohttp, the standard library, the tests themselves -- sees the real Linux modules, so
the host keeps working: the restriction is decided per caller (the frame that looks the name up, imports the
module or calls ``mmap.mmap``/``open``), not per process.  Attribute hiding uses module ``__getattr__`` (PEP
562): the names are removed from the module dicts and handed back to any caller outside the pack.

Limits (documented, not hidden): code that reached a name before ``install`` (``from os import pread`` at import
time of a non-pack module) keeps it; ``importlib.import_module("resource")`` from the pack is not intercepted when
the module is already imported (the static check in tests/test_windows_semantics.py covers both);
``sys.platform``/``os.name`` stay Linux's (the pack tests features, not platform names).

Enabled by ``LEAN_WINDOWS_SEMANTICS=1``: tests/conftest.py installs it in the test process, and the tier-2 harness
puts ``tests/lean_testlib/windows_site`` (a ``sitecustomize``) first on the host's PYTHONPATH.
"""
import builtins
import os
import sys

ENV = "LEAN_WINDOWS_SEMANTICS"
CODE_ENV = "LEAN_WINDOWS_SEMANTICS_CODE"
HOST_DIR_FORM = os.sep + os.path.join("custom_nodes", "comfyui-lean") + os.sep

# Windows' signal module has only these signals (CPython on win32); the rest, and alarm/setitimer/pthread_*, are
# POSIX-only.
WINDOWS_SIGNALS = {"SIGABRT", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM", "SIGBREAK", "SIG_DFL", "SIG_IGN"}
POSIX_ONLY_SIGNAL_FUNCS = ("alarm", "setitimer", "getitimer", "pause", "pthread_kill", "pthread_sigmask",
                           "sigpending", "sigwait", "siginterrupt", "sigtimedwait", "sigwaitinfo", "ITIMER_REAL",
                           "ITIMER_VIRTUAL", "ITIMER_PROF")
POSIX_ONLY_OS = ("pread", "preadv", "pwrite", "pwritev", "fork", "forkpty", "getuid", "geteuid", "getgid",
                 "getegid", "getpgid", "killpg", "setsid", "setpgid", "sync", "posix_fadvise", "posix_fallocate",
                 "sched_getaffinity", "sched_setaffinity", "getloadavg", "O_DIRECT", "O_NOATIME", "O_CLOEXEC",
                 "POSIX_FADV_DONTNEED", "POSIX_FADV_WILLNEED", "POSIX_FADV_SEQUENTIAL", "RWF_NOWAIT", "mkfifo",
                 "sendfile", "wait3", "wait4", "WNOHANG", "statvfs")
BLOCKED_MODULES = {"resource", "fcntl", "termios", "pwd", "grp", "pty", "tty", "posix", "syslog", "_posixshmem"}

_STATE = {"installed": False, "prefixes": ()}


def default_prefixes(repo):
    repo = os.path.realpath(str(repo))
    return tuple(os.path.join(repo, d) + os.sep for d in ("core", "nodes", "scripts")) + \
        (os.path.join(repo, "__init__.py"), HOST_DIR_FORM)


def is_pack_file(filename):
    if not filename or filename.startswith("<"):
        return False
    if (os.sep + "tests" + os.sep) in filename:
        return False
    for p in _STATE["prefixes"]:
        if p == HOST_DIR_FORM:
            if p in filename:
                return True
        elif filename.startswith(p):
            return True
    return False


def _caller_is_pack(depth):
    try:
        f = sys._getframe(depth + 1)
    except ValueError:
        return False
    return is_pack_file(f.f_code.co_filename)


def _hide(module, names, replacements=None):
    """Remove ``names`` from ``module``'s dict; a module ``__getattr__`` gives them back to non-pack callers and
    raises AttributeError (Windows' message) for the pack.  ``replacements``: name -> what the pack gets instead."""
    replacements = replacements or {}
    hidden = {}
    for n in list(names):
        if n in module.__dict__:
            hidden[n] = module.__dict__.pop(n)
    for n in replacements:
        if n in module.__dict__:
            hidden[n] = module.__dict__.pop(n)
    previous = module.__dict__.get("__getattr__")
    modname = module.__name__

    def __getattr__(name):
        if name in hidden:
            pack = is_pack_file(sys._getframe(1).f_code.co_filename)
            if not pack:
                return hidden[name]
            if name in replacements:
                return replacements[name]
            raise AttributeError(f"module '{modname}' has no attribute '{name}' (Windows semantics: "
                                 f"{ENV}=1)")
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module '{modname}' has no attribute '{name}'")

    module.__getattr__ = __getattr__
    return hidden


def _install_mmap():
    import mmap
    real = mmap.mmap

    class _NoAttr:
        def __init__(self, name):
            self.name = name

        def __get__(self, obj, owner=None):
            raise AttributeError(f"'mmap.mmap' object has no attribute '{self.name}' (Windows semantics)")

    class mmap_windows(real):  # noqa: N801  (Windows' name is mmap.mmap)
        """Windows' mmap.mmap(fileno, length, tagname=None, access=ACCESS_DEFAULT, offset=0)."""

        def __new__(cls, fileno, length, tagname=None, access=mmap.ACCESS_DEFAULT, offset=0):
            if tagname is not None and not isinstance(tagname, str):
                raise TypeError("tagname must be a str or None")
            return real.__new__(cls, fileno, length, access=access, offset=offset)

        madvise = _NoAttr("madvise")

    mmap_windows.__name__ = "mmap"
    mmap_windows.__qualname__ = "mmap"
    names = [n for n in dir(mmap) if n.startswith(("MAP_", "MADV_", "PROT_"))]
    _hide(mmap, names, {"mmap": mmap_windows})


def _install_os_signal():
    import signal
    _hide(os, [n for n in POSIX_ONLY_OS if hasattr(os, n)])
    _hide(signal, [n for n in dir(signal) if (n.startswith("SIG") and n not in WINDOWS_SIGNALS)
                   or n in POSIX_ONLY_SIGNAL_FUNCS])


def _install_imports_and_proc():
    real_import = builtins.__import__
    real_open = builtins.open
    real_os_open = os.open

    def win_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.partition(".")[0] in BLOCKED_MODULES and _caller_is_pack(1):
            raise ModuleNotFoundError(f"No module named '{name}' (Windows semantics: {ENV}=1)", name=name)
        return real_import(name, globals, locals, fromlist, level)

    def _proc(path):
        try:
            p = os.fspath(path)
        except TypeError:
            return False
        if isinstance(p, bytes):
            p = p.decode(errors="replace")
        return isinstance(p, str) and (p == "/proc" or p.startswith("/proc/"))

    def win_open(file, *a, **kw):
        if _proc(file) and _caller_is_pack(1):
            raise FileNotFoundError(2, "No such file or directory (Windows semantics)", os.fspath(file))
        return real_open(file, *a, **kw)

    def win_os_open(path, *a, **kw):
        if _proc(path) and _caller_is_pack(1):
            raise FileNotFoundError(2, "No such file or directory (Windows semantics)", os.fspath(path))
        return real_os_open(path, *a, **kw)

    builtins.__import__ = win_import
    builtins.open = win_open
    os.open = win_os_open


def install(code_prefixes):
    """Install once; ``code_prefixes``: file path prefixes of the pack's code (see is_pack_file)."""
    _STATE["prefixes"] = tuple(code_prefixes)
    if _STATE["installed"]:
        return
    _STATE["installed"] = True
    _install_mmap()
    _install_os_signal()
    _install_imports_and_proc()


def enabled():
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes")


def installed():
    return _STATE["installed"]
