"""Windows semantics for the pack's own code, on Linux (test-only; never shipped with the pack).

``install(code_prefixes)`` makes Python answer the pack's code the way Windows' Python would where it matters:

* ``mmap.mmap`` has Windows' signature ``mmap(fileno, length, tagname=None, access=ACCESS_DEFAULT, offset=0)``
  (``flags=``/``prot=`` -> TypeError), its objects have no ``madvise``, and the module has no ``MAP_*``,
  ``MADV_*`` or ``PROT_*``;
* ``os`` has no ``pread``/``preadv``/``pwrite``/``pwritev``/``fork``/... (POSIX-only functions), ``signal`` only
  Windows' signals (no ``SIGKILL``, ``SIGBUS``, ``SIGHUP``, ``alarm`` ...);
* ``import resource``/``fcntl``/``termios``/``pwd``/``grp``/``pty``/``tty``/``posix`` fails;
* ``open("/proc/...")`` and ``os.open("/proc/...")`` raise FileNotFoundError;
* a file the pack's code has mapped (``mmap.mmap`` on a file, in any process running in this mode) stays locked
  the way Windows locks a file with a mapped section while the mapping lives -- for EVERY caller, in every process
  of the mode (the test process plays the user's file manager or downloader): truncating it (``os.truncate``,
  ``os.ftruncate``, ``open(..., "w")``, ``os.open(..., O_TRUNC)``) raises PermissionError [WinError 1224],
  deleting or renaming it [WinError 32], replacing it by a rename onto its name [WinError 5].  Writing into it
  without truncating (``"r+b"``) stays allowed, as on Windows.  Mappings are listed in the folder
  ``$LEAN_WINDOWS_SEMANTICS_MAPS`` (one small file per mapping, removed when the mapping is closed or collected;
  entries of dead processes are ignored), which the harness hands to the hosts it starts.

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
import errno
import io
import itertools
import json
import os
import sys
import tempfile
import weakref

ENV = "LEAN_WINDOWS_SEMANTICS"
CODE_ENV = "LEAN_WINDOWS_SEMANTICS_CODE"
MAPS_ENV = "LEAN_WINDOWS_SEMANTICS_MAPS"
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
            obj = real.__new__(cls, fileno, length, access=access, offset=offset)
            if fileno != -1:  # a file's mapped section: Windows locks the file while it lives
                token = _register_mapping(os.fstat(fileno))
                obj._lean_unlock = weakref.finalize(obj, _unregister_mapping, token)
            return obj

        def close(self):
            super().close()
            unlock = getattr(self, "_lean_unlock", None)
            if unlock is not None:
                unlock()

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


# ------------------------------------------------------------------ files locked by a mapped section

_COUNTER = itertools.count()
WIN_MESSAGES = {
    5: "Access is denied",
    32: "The process cannot access the file because it is being used by another process",
    1224: "The requested operation cannot be performed on a file with a user-mapped section open",
}


def maps_dir():
    """The folder listing live mappings (created on first use; handed to child processes through the env)."""
    d = os.environ.get(MAPS_ENV)
    if not d:
        d = tempfile.mkdtemp(prefix="lean_win_maps_")
        os.environ[MAPS_ENV] = d
    os.makedirs(d, exist_ok=True)
    return d


def _register_mapping(st):
    path = os.path.join(maps_dir(), f"{os.getpid()}-{next(_COUNTER)}.json")
    with _REAL["open"](path, "w") as f:
        json.dump({"pid": os.getpid(), "dev": st.st_dev, "ino": st.st_ino}, f)
    return path


def _unregister_mapping(token):
    try:
        _REAL["unlink"](token)
    except FileNotFoundError:
        pass


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mapped_ids():
    """(dev, inode) of every file with a live mapping made by the pack's code, in any process of the mode."""
    d = os.environ.get(MAPS_ENV)
    out = set()
    if not d or not os.path.isdir(d):
        return out
    for name in os.listdir(d):
        try:
            with _REAL["open"](os.path.join(d, name)) as f:
                e = json.load(f)
        except (OSError, ValueError):
            continue
        if _alive(e["pid"]):
            out.add((e["dev"], e["ino"]))
    return out


def is_mapped(path, follow_symlinks=True):
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks) if not isinstance(path, int) else os.fstat(path)
    except (OSError, TypeError, ValueError):
        return False
    return (st.st_dev, st.st_ino) in mapped_ids()


class WindowsPermissionError(PermissionError):
    """PermissionError as Windows' Python raises and prints it: errno EACCES, ``.winerror``, and
    ``[WinError n] message: 'file'`` (``-> 'file2'``) as its text."""

    def __str__(self):
        text = f"[WinError {self.winerror}] {self.strerror}"
        if self.filename is not None:
            text += f": {self.filename!r}"
        if self.filename2 is not None:
            text += f" -> {self.filename2!r}"
        return text


def windows_error(winerror, path, path2=None):
    e = WindowsPermissionError(errno.EACCES, WIN_MESSAGES[winerror],
                               path if isinstance(path, int) else os.fsdecode(path), None,
                               None if path2 is None else os.fsdecode(path2))
    e.winerror = winerror
    return e


_REAL = {"open": builtins.open, "unlink": os.unlink}


def _truncating_mode(mode):
    return isinstance(mode, str) and "w" in mode


def _install_mapped_file_locks():
    real = {n: getattr(os, n) for n in ("truncate", "ftruncate", "remove", "unlink", "rename", "replace", "open")}
    real_io_open = io.open
    real_builtin_open = builtins.open  # may already be the /proc guard

    def truncate(path, length):
        if is_mapped(path):
            raise windows_error(1224, path)
        return real["truncate"](path, length)

    def ftruncate(fd, length):
        if is_mapped(fd):
            raise windows_error(1224, fd)
        return real["ftruncate"](fd, length)

    def _deleter(name):
        def delete(path, *, dir_fd=None):
            if dir_fd is None and is_mapped(path, follow_symlinks=False):
                raise windows_error(32, path)
            return real[name](path, dir_fd=dir_fd)
        delete.__name__ = name
        return delete

    def _mover(name):
        def move(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
            if src_dir_fd is None and is_mapped(src, follow_symlinks=False):
                raise windows_error(32, src, dst)
            if dst_dir_fd is None and is_mapped(dst, follow_symlinks=False):
                raise windows_error(5, src, dst)
            return real[name](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        move.__name__ = name
        return move

    def os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & os.O_TRUNC and dir_fd is None and is_mapped(path):
            raise windows_error(1224, path)
        return real["open"](path, flags, mode, dir_fd=dir_fd)

    def _opener(inner):
        def open_(file, mode="r", *a, **kw):
            if _truncating_mode(mode) and not isinstance(file, int) and is_mapped(file):
                raise windows_error(1224, file)
            return inner(file, mode, *a, **kw)
        return open_

    os.truncate, os.ftruncate = truncate, ftruncate
    os.remove, os.unlink = _deleter("remove"), _deleter("unlink")
    os.rename, os.replace = _mover("rename"), _mover("replace")
    os.open = os_open
    io.open = _opener(real_io_open)
    builtins.open = _opener(real_builtin_open)


def install(code_prefixes):
    """Install once; ``code_prefixes``: file path prefixes of the pack's code (see is_pack_file)."""
    _STATE["prefixes"] = tuple(code_prefixes)
    if _STATE["installed"]:
        return
    _STATE["installed"] = True
    _install_mmap()
    _install_os_signal()
    maps_dir()  # before any host starts: the hosts inherit the folder
    _install_mapped_file_locks()  # first: the /proc guard below must see its real caller's frame
    _install_imports_and_proc()


def enabled():
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes")


def installed():
    return _STATE["installed"]
