"""Reading the socket audit that ``sitecustomize.py`` (this folder) writes inside a host.

    host = ComfyHost.start(path, base, audit_sockets=True)
    recs = socket_audit.read(host.socket_audit_log)
    bad = socket_audit.violations(recs, allowed_hosts={"192.168.1.5"})   # [] when offline-clean

A record is a violation when a frame of this repo is on the stack and the address is neither loopback
(127.0.0.0/8, ::1, "localhost"), a Unix socket, nor one of ``allowed_hosts`` (the user's configured base_url
host and what it resolved to).
"""
import json
import pathlib
import socket

DIR = pathlib.Path(__file__).resolve().parent


def read(path):
    p = pathlib.Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def is_loopback(host):
    """The rule of the hook itself (sitecustomize.is_local_target), for a host name or address."""
    return _site().is_local_target(-1, str(host))


def target(rec):
    """(host or unix path, port or None) of a record."""
    a = rec.get("address")
    if isinstance(a, list) and a:
        return str(a[0]), (a[1] if len(a) > 1 else None)
    return str(a), None


def is_local(rec):
    if rec.get("family") == int(getattr(socket, "AF_UNIX", 1)):
        return True
    host, _ = target(rec)
    return host == "None" or is_loopback(host)   # getaddrinfo(None, port) only resolves a local bind address


def violations(records, allowed_hosts=()):
    allowed = {str(h).strip("[]").lower() for h in allowed_hosts}
    bad = []
    for r in records:
        if r.get("event") == "audit_error":
            bad.append(r)
            continue
        if not r.get("lean") or is_local(r):
            continue
        host, _ = target(r)
        if host.strip("[]").lower() in allowed:
            continue
        bad.append(r)
    return bad


def _site():
    """sitecustomize.py of this folder as a module (its refusal rule), loaded by path."""
    import importlib.util
    import sys
    name = "lean_socket_audit_site"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DIR / "sitecustomize.py")
        mod = importlib.util.module_from_spec(spec)
        import os
        saved = {k: os.environ.pop(k, None) for k in ("LEAN_SOCKET_AUDIT_LOG", "LEAN_SOCKET_AUDIT_REFUSE")}
        try:
            spec.loader.exec_module(mod)  # with neither variable set it installs no hook of its own
        finally:
            os.environ.update({k: v for k, v in saved.items() if v is not None})
        sys.modules[name] = mod
    return sys.modules[name]


_IN_PROCESS = {"installed": False, "active": 0, "refused": [], "events": []}


def _in_process_hook(event, args):
    if not _IN_PROCESS["active"] or event not in ("socket.connect", "socket.getaddrinfo"):
        return
    if event == "socket.connect":
        try:
            family = int(args[0].family)
        except Exception:
            family = -1
        address = args[1]
    else:
        family, address = -2, [args[0], args[1]]
    _IN_PROCESS["events"].append((event, address))
    err = _site().refusal(event, family, address)
    if err is not None:
        _IN_PROCESS["refused"].append((event, address))
        raise err


class refuse_non_loopback:
    """In this process, while active: every connect/getaddrinfo to a non-loopback target raises
    ConnectionRefusedError before the socket call runs (the rule of LEAN_SOCKET_AUDIT_REFUSE=1).  ``.refused``
    lists what was refused, ``.events`` every socket event.  An audit hook cannot be removed, so the hook stays installed and does nothing when
    no block is active."""

    def __enter__(self):
        import sys
        _site()
        if not _IN_PROCESS["installed"]:
            sys.addaudithook(_in_process_hook)
            _IN_PROCESS["installed"] = True
        self.start = len(_IN_PROCESS["refused"])
        self.start_events = len(_IN_PROCESS["events"])
        _IN_PROCESS["active"] += 1
        return self

    @property
    def refused(self):
        return _IN_PROCESS["refused"][self.start:]

    @property
    def events(self):
        """Every connect/getaddrinfo of this process since the block began: (event, address)."""
        return _IN_PROCESS["events"][self.start_events:]

    def __exit__(self, *exc):
        _IN_PROCESS["active"] -= 1
