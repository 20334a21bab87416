#!/bin/sh
# Run a command (default: python3 -m pytest -q tests) inside a fresh network namespace whose only
# interface is loopback, to prove the pack and its tests need no network.  Needs root (or user namespaces):
#     tests/lean_testlib/socket_audit/run_offline.sh python -m pytest -q tests
# Prints "OFFLINE NAMESPACE: only loopback (...)" after checking that no other interface exists and that a
# connect to a public address fails at once; exits 3 when no namespace can be made here.
cd "$(dirname "$0")/../../.." || exit 1
PY=${PYTHON:-python3}
if ! unshare -n true 2>/dev/null; then
  echo "OFFLINE NAMESPACE UNAVAILABLE: unshare -n is not permitted here (run as root)"
  exit 3
fi
[ "$#" -gt 0 ] || set -- "$PY" -m pytest -q tests
exec unshare -n sh -c '
  ip link set lo up || exit 1
  ifaces=$(ip -o link show | cut -d: -f2 | tr -d " " | tr "\n" " ")
  [ "$ifaces" = "lo " ] || { echo "network namespace has more than loopback: $ifaces"; exit 1; }
  '"$PY"' -c "
import socket, sys
s = socket.socket(); s.settimeout(2)
try:
    s.connect((\"192.0.2.1\", 53))
except OSError as e:
    print(\"OFFLINE NAMESPACE: only loopback (interfaces: $ifaces);  192.0.2.1:53 -> \" + type(e).__name__ + \": \" + str(e))
    sys.exit(0)
print(\"network reachable inside the namespace\"); sys.exit(1)
" || exit 1
  export LEAN_IN_NETNS=1
  exec "$@"
' sh "$@"
