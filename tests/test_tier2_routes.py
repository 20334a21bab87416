"""Tier 2: every /lean/... HTTP route only reads inside the registered folders.

The routes are listed twice, independently: from the host's own aiohttp router (a test-only module adds
GET /lean_test/routes) and by grepping nodes/ for `routes.get("/lean/...")`; both lists must agree, and every
route must have attack cases here.  For each route: path traversal (../, absolute paths, NUL bytes), symlinks
pointing out of the folder, and huge requests are refused without leaking the outside file, the server keeps
answering, and 50 concurrent requests are each answered correctly.
"""
import concurrent.futures
import hashlib
import os
import re
import urllib.parse

import pytest

import json

from lean_testlib import REPO, bad_inputs, harness, report, route_lister_node

pytestmark = pytest.mark.tier2

SECRET = "SECRET-OUTSIDE-THE-MODEL-FOLDERS"
ROUTE_DECL = re.compile(r"routes\.(get|post|put|patch|delete)\(\s*[\"'](/lean/[^\"']*)[\"']")


def declared_routes():
    found = set()
    for path in sorted((REPO / "nodes").glob("*.py")):
        for method, route in ROUTE_DECL.findall(path.read_text()):
            found.add((method.upper(), route))
    return found


def _route_files(base):
    secret = base / "secret_outside.txt"
    secret.write_text(SECRET + "\n")
    wc = base / "models" / "wildcards"
    (wc / "colors.txt").write_text("red\ngreen\nblue\n")
    (wc / "cycle_a.txt").write_text("x __cycle_b__\n")
    (wc / "cycle_b.txt").write_text("y __cycle_a__\n")
    (wc / "escape.txt").symlink_to(secret)                       # symlink pointing out of the folder
    (wc / "escape_dir").symlink_to(base, target_is_directory=True)
    os.mkfifo(wc / "fifo.txt")                                   # a pipe named like a wildcard: opening it would block
    (wc / "sub").mkdir()
    (wc / "sub" / "animals.txt").write_text("cat\ndog\n")
    (base / "input" / "prompts.txt").write_text("a cat\na dog\n")
    (base / "input" / "escape.txt").symlink_to(secret)
    loras = base / "models" / "loras"
    bad_inputs.write_safetensors(loras / "good.safetensors", {"w": [1.0]}, metadata={
        "ss_tag_frequency": json.dumps({"set": {"trigger_a": 5, "trigger_b": 2}})})
    bad_inputs.write_safetensors(loras / "header_is_list.safetensors", {}, header_override=[1, 2])
    bad_inputs.write_safetensors(loras / "metadata_not_dict.safetensors", {}, header_override={"__metadata__": "x"})
    (loras / "zero.safetensors").write_bytes(b"")
    (loras / "escape.safetensors").symlink_to(secret)           # a "LoRA" that is a link to a text file outside
    (loras / "huge_header.safetensors").write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    route_lister_node.install(base)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A host of its own: its loras/ holds broken files and links out of the folder, and it lists its routes."""
    with harness.own_host(tmp_path_factory, "routes_base", setup=_route_files) as h:
        yield h


def get(host, route, timeout=60, **query):
    q = urllib.parse.urlencode(query)
    return host.request(f"{route}?{q}" if q else route, timeout=timeout)


def router_lean_routes(host):
    status, routes = host.request("/lean_test/routes")
    assert status == 200, routes
    return {(m, p) for m, p in routes if p.startswith("/lean/") and m != "HEAD"}


# ------------------------------------------------------------------------------------------ route tables
# Each entry: (query, expected status, check(json) -> bool or None, what).  Every route needs a table, a
# good-request builder for the concurrency check (i -> (query, check)), and nothing in any answer may contain
# the outside file's content.

def _err(*words):
    return lambda d: isinstance(d, dict) and "error" in d and all(w.lower() in d["error"].lower() for w in words)


PREVIEW = "/lean/prompt_batch/preview"
ATTACKS = {
    PREVIEW: [
        ({"text": "__../secret_outside__"}, 400, _err("secret_outside"), "wildcard name with ../"),
        ({"text": "__/etc/passwd__"}, 400, _err("passwd"), "absolute wildcard name"),
        ({"text": "__escape__"}, 400, _err("escape", "outside"), "wildcard file symlinked outside the folder"),
        ({"text": "__escape_dir/secret_outside__"}, 400, _err("secret_outside"), "wildcard via a symlinked dir"),
        ({"text": "__col\x00ors__"}, 400, _err("wildcard"), "NUL byte in a wildcard name"),
        ({"text": "__cycle_a__"}, 400, _err("cycle"), "wildcard cycle"),
        ({"text_file": "../secret_outside.txt"}, 400, _err("text_file"), "text_file with ../"),
        ({"text_file": str(REPO / "README.md")}, 400, _err("text_file"), "absolute text_file"),
        ({"text_file": "escape.txt"}, 400, _err("text_file"), "text_file symlinked outside the input folder"),
        ({"text_file": "prompts.txt\x00.png"}, 400, _err("text_file"), "NUL byte in text_file"),
        ({"mode": "../../etc"}, 400, _err("mode"), "unknown mode"),
        ({"count": "lots"}, 400, None, "count not a number"),
        ({"text": "{a|b}" * 64, "mode": "combinatorial", "count": "16"}, 200,
         lambda d: d.get("over_cap") is True and d["count"] == 10 ** 15 and d.get("at_least") is True,
         "2^64 combinations counted (saturating at 10^15), not enumerated"),
        ({"text": "x" * 200_000}, (400, 414, 431), None, "a 200 kB query string"),
    ],
}


LORA_NAMES = {"good.safetensors", "header_is_list.safetensors", "metadata_not_dict.safetensors", "zero.safetensors",
              "escape.safetensors", "huge_header.safetensors"}


def _loras_ok(d):
    items = {it["name"]: it for it in (d or {}).get("loras", [])} if isinstance(d, dict) else {}
    return (set(items) == LORA_NAMES and items["good.safetensors"]["triggers"] == ["trigger_a", "trigger_b"]
            and all(items[n]["triggers"] == [] for n in LORA_NAMES - {"good.safetensors"}))


LORAS = "/lean/loras"
ATTACKS[LORAS] = [
    ({}, 200, _loras_ok, "listing with malformed files and a link to a text file outside (no 500, no leak)"),
    ({"name": "../../secret_outside.txt"}, 200, _loras_ok, "a ../ query parameter is ignored"),
    ({"path": "/etc/passwd"}, 200, _loras_ok, "an absolute path parameter is ignored"),
    ({"name": "a\x00b"}, 200, _loras_ok, "a NUL byte parameter is ignored"),
    ({"x": "y" * 200_000}, (400, 414, 431), None, "a 200 kB query string"),
]


WILDCARDS_INSIDE = {"colors": "red\ngreen\nblue\n", "cycle_a": "x __cycle_b__\n", "cycle_b": "y __cycle_a__\n",
                    "sub/animals": "cat\ndog\n"}


def _manifest_ok(d):
    """Exactly the wildcard files inside the folder, each with the sha256 of its content (computed here by hashlib
    from the text this test wrote); no link out of the folder, no pipe, no hash of the outside file."""
    if not isinstance(d, dict) or not isinstance(d.get("pack"), str) or d.get("wildcards_left_out") != 0:
        return False
    want = {n: hashlib.sha256(t.encode()).hexdigest() for n, t in WILDCARDS_INSIDE.items()}
    secret_hash = hashlib.sha256((SECRET + "\n").encode()).hexdigest()
    return d.get("wildcards") == want and secret_hash not in json.dumps(d)


MANIFEST = "/lean/distributed/manifest"
ATTACKS[MANIFEST] = [
    ({}, 200, _manifest_ok, "manifest beside a link out of the folder, a linked folder and a pipe (no leak, no hang)"),
    ({"root": "/etc"}, 200, _manifest_ok, "a folder query parameter is ignored"),
    ({"name": "../secret_outside"}, 200, _manifest_ok, "a ../ query parameter is ignored"),
    ({"x": "y" * 200_000}, (400, 414, 431), None, "a 200 kB query string"),
]


def good_request(route, i):
    if route == MANIFEST:
        return {}, _manifest_ok
    if route == LORAS:
        return {}, _loras_ok
    if route == PREVIEW:
        text = "\n".join(f"prompt {j} __colors__" for j in range(i + 1))
        return {"text": text, "mode": "lines"}, lambda d: d.get("count") == i + 1
    raise KeyError(route)


# ------------------------------------------------------------------------------------------ tests

def test_router_and_source_agree(host):
    declared = declared_routes()
    served = router_lean_routes(host)
    assert served == declared, f"router only: {served - declared}; source only: {declared - served}"


def test_every_route_has_attack_cases(host):
    missing = {p for _, p in router_lean_routes(host)} - set(ATTACKS)
    assert not missing, f"routes without cases in tests/test_tier2_routes.py: {missing}"


def test_attacks_refused(host, request):
    routes = sorted(p for _, p in router_lean_routes(host))
    assert routes, "the host's router lists no /lean/ route"
    failures, n = [], 0
    for route in routes:
        for query, want, check, what in ATTACKS[route]:
            n += 1
            status, data = get(host, route, **query)
            wants = want if isinstance(want, tuple) else (want,)
            text = str(data)
            if status not in wants:
                failures.append(f"{route} {what}: status {status} (want {want}): {text[:300]}")
            elif check is not None and not check(data):
                failures.append(f"{route} {what}: unexpected answer {text[:300]}")
            if SECRET in text:
                failures.append(f"{route} {what}: LEAKED the outside file: {text[:300]}")
            good, ok = good_request(route, 0)
            status, data = get(host, route, **good)
            if status != 200 or not ok(data):
                failures.append(f"{route} after '{what}': a good request got {status} {str(data)[:200]}")
    report.result(request.config, f"RESULT route_attacks={n} refused={n - len(failures)} routes={len(routes)}")
    assert not failures, "\n".join(failures)
    assert host.alive()


def test_fifty_concurrent_requests_per_route(host, request):
    routes = sorted(p for _, p in router_lean_routes(host))
    assert routes, "the host's router lists no /lean/ route"
    problems = []
    for route in routes:
        def one(i):
            query, ok = good_request(route, i)
            status, data = get(host, route, timeout=120, **query)
            return i, status == 200 and ok(data), status, str(data)[:200]

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(50)))
        wrong = [r for r in results if not r[1]]
        report.result(request.config, f"RESULT route={route} concurrent=50 correct={50 - len(wrong)}")
        problems += [(route,) + w for w in wrong[:5]]
    assert not problems, problems
