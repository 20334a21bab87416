"""Socket audit for tier-2 hosts: put this folder first on the host's PYTHONPATH (``ComfyHost.start(...,
audit_sockets=True)`` does) and every ``socket.connect`` / ``socket.getaddrinfo`` of the process is appended as
one JSON line to ``$LEAN_SOCKET_AUDIT_LOG``, with whether a frame of this repo (any path listed in
``$LEAN_SOCKET_AUDIT_CODE``, os.pathsep-separated) is on the stack.

By default it only records; ``lean_testlib.socket_audit.violations`` decides what is allowed, and the host behaves
exactly as without it.  With ``LEAN_SOCKET_AUDIT_REFUSE=1`` it also REFUSES: a connect or getaddrinfo to anything
but loopback (127.0.0.0/8, ::1, "localhost", a Unix socket) raises ``ConnectionRefusedError`` before the socket call
runs, whoever makes it, and is recorded with ``"refused": true`` -- so a test that names 192.0.2.1 cannot send a
packet even if the code under test were wrong.  Test-only: never shipped with the pack.
"""
import json
import os
import sys
import threading

_LOG = os.environ.get("LEAN_SOCKET_AUDIT_LOG")
_CODE = tuple(p for p in os.environ.get("LEAN_SOCKET_AUDIT_CODE", "").split(os.pathsep) if p)
_REFUSE = os.environ.get("LEAN_SOCKET_AUDIT_REFUSE", "") == "1"
_STATE = threading.local()
_LOCK = threading.Lock()
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")  # what /etc/hosts maps


def is_local_target(family, host):
    """True for a Unix socket, no host (a local bind), a loopback address or name; decided from the text."""
    import ipaddress
    import socket
    if family == int(getattr(socket, "AF_UNIX", 1)):
        return True
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if isinstance(host, int):
        return False
    h = str(host).strip("[]").lower()
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h.split("%")[0]).is_loopback
    except ValueError:
        return False


def refusal(event, family, address):
    """A ConnectionRefusedError for a non-loopback target, else None."""
    if event == "socket.connect":
        host = address[0] if isinstance(address, (tuple, list)) and address else (
            None if isinstance(address, (str, bytes)) else address)
        if isinstance(address, (str, bytes)):  # AF_UNIX path
            return None
    else:
        host = address[0] if isinstance(address, (tuple, list)) else address
    if is_local_target(family, host):
        return None
    return ConnectionRefusedError(111, f"refused by the Lean socket audit (LEAN_SOCKET_AUDIT_REFUSE=1): {event} to "
                                       f"{host!r} is not loopback")


def _frames():
    f = sys._getframe(2)
    out = []
    while f is not None:
        out.append((f.f_code.co_filename, f.f_lineno, f.f_code.co_name))
        f = f.f_back
    return out


def _record(rec):
    if not _LOG:
        return
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
        refuse = refusal(event, family, address) if _REFUSE else None
        _record({"event": event, "family": family, "address": address, "lean": bool(lean),
                 "lean_frames": lean[:6], "top": [f"{fn}:{ln} {name}" for fn, ln, name in frames[:4]],
                 "pid": os.getpid(), "thread": threading.current_thread().name, "refused": refuse is not None})
    except Exception as e:  # never break the host (but in refuse mode, fail closed)
        refuse = ConnectionRefusedError(111, f"refused: the Lean socket audit failed ({e!r})") if _REFUSE else None
        try:
            _record({"event": "audit_error", "error": repr(e)})
        except Exception:
            pass
    finally:
        _STATE.busy = False
    if refuse is not None:
        raise refuse


if _LOG or _REFUSE:
    sys.addaudithook(_hook)
