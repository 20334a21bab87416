"""Reading the socket audit that ``sitecustomize.py`` (this folder) writes inside a host.

    host = ComfyHost.start(path, base, audit_sockets=True)
    recs = socket_audit.read(host.socket_audit_log)
    bad = socket_audit.violations(recs, allowed_hosts={"192.168.1.5"})   # [] when offline-clean

A record is a violation when a frame of this repo is on the stack and the address is neither loopback
(127.0.0.0/8, ::1, "localhost"), a Unix socket, nor one of ``allowed_hosts`` (the user's configured base_url
host and what it resolved to).
"""
import ipaddress
import json
import pathlib
import socket

DIR = pathlib.Path(__file__).resolve().parent
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def read(path):
    p = pathlib.Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def is_loopback(host):
    host = str(host).strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


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
