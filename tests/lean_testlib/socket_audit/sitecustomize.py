"""Socket audit for tier-2 hosts: put this folder first on the host's PYTHONPATH (``ComfyHost.start(...,
audit_sockets=True)`` does) and every ``socket.connect`` / ``socket.getaddrinfo`` of the process is appended as
one JSON line to ``$LEAN_SOCKET_AUDIT_LOG``, with whether a frame of this repo (any path listed in
``$LEAN_SOCKET_AUDIT_CODE``, os.pathsep-separated) is on the stack.

It only records; ``lean_testlib.socket_audit.violations`` decides what is allowed.  It never blocks a connect,
so the host behaves exactly as without it.  Test-only: never shipped with the pack.
"""
import json
import os
import sys
import threading

_LOG = os.environ.get("LEAN_SOCKET_AUDIT_LOG")
_CODE = tuple(p for p in os.environ.get("LEAN_SOCKET_AUDIT_CODE", "").split(os.pathsep) if p)
_STATE = threading.local()
_LOCK = threading.Lock()


def _frames():
    f = sys._getframe(2)
    out = []
    while f is not None:
        out.append((f.f_code.co_filename, f.f_lineno, f.f_code.co_name))
        f = f.f_back
    return out


def _record(rec):
    line = (json.dumps(rec, default=repr) + "\n").encode()
    with _LOCK:
        fd = os.open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _hook(event, args):
    if event != "socket.connect" and event != "socket.getaddrinfo":
        return
    if getattr(_STATE, "busy", False):
        return
    _STATE.busy = True
    try:
        if event == "socket.connect":
            sock, address = args[0], args[1]
            try:
                family = int(sock.family)
            except Exception:
                family = -1
        else:
            address, family = [args[0], args[1]], -2  # (host, port) being resolved
        if isinstance(address, bytes):
            address = address.decode(errors="replace")
        if isinstance(address, tuple):
            address = list(address)
        frames = _frames()
        lean = [f"{fn}:{ln} {name}" for fn, ln, name in frames if any(c in fn for c in _CODE)]
        _record({"event": event, "family": family, "address": address, "lean": bool(lean),
                 "lean_frames": lean[:6], "top": [f"{fn}:{ln} {name}" for fn, ln, name in frames[:4]],
                 "pid": os.getpid(), "thread": threading.current_thread().name})
    except Exception as e:  # never break the host
        try:
            _record({"event": "audit_error", "error": repr(e)})
        except Exception:
            pass
    finally:
        _STATE.busy = False


if _LOG:
    sys.addaudithook(_hook)
