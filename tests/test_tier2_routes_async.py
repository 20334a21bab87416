"""Tier 2: /lean/... route handlers never block the event loop on disk.

A test-only module (lean_testlib/slow_listing_node.py) makes the next LoRA folder listing sleep SLOW seconds, as a
slow disk would.  While GET /lean/loras waits on it, 50 concurrent requests to another route (the prompt batch
preview, which reads a wildcard file) must all be answered -- each answer arriving before the slow listing's.  The
check is an ordering of events, not a timing threshold: with the listing inside the event loop (the old handler)
nothing else can be answered until it returns.
"""
import concurrent.futures
import threading
import time
import urllib.parse

import pytest

from lean_testlib import harness, slow_listing_node

pytestmark = pytest.mark.tier2

SLOW = 6.0


def _setup(base):
    (base / "models" / "wildcards" / "colors.txt").write_text("red\ngreen\nblue\n")
    slow_listing_node.install(base)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A host of its own: an empty loras/ and the slow-listing test module."""
    with harness.own_host(tmp_path_factory, "routes_async_base", setup=_setup) as h:
        yield h


def test_a_slow_lora_listing_does_not_stall_other_routes(host):
    preview = "/lean/prompt_batch/preview?" + urllib.parse.urlencode({"text": "a __colors__ cat", "mode": "combinatorial",
                                                                      "count": 16})
    assert host.get(preview)["count"] == 3
    assert host.get("/lean/loras") == {"loras": []}
    status, _ = host.request("/lean_test/slow_loras", {"seconds": SLOW}, method="POST")
    assert status == 200
    done = {}

    def slow():
        t0 = time.monotonic()
        done["listing"] = host.get("/lean/loras", timeout=120)
        done["listing_at"] = time.monotonic()
        done["listing_took"] = done["listing_at"] - t0

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)  # the listing request is in the server, sleeping in the slow listing

    def one(_):
        out = host.get(preview, timeout=120)
        return out, time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        answers = list(ex.map(one, range(50)))
    t.join(120)
    assert done.get("listing") == {"loras": []}, done
    assert done["listing_took"] >= SLOW * 0.9, done  # the listing really was slow (the sleep happened)
    assert all(a["count"] == 3 for a, _ in answers), answers[:3]
    late = [at for _, at in answers if at >= done["listing_at"]]
    assert not late, (f"{len(late)} of 50 preview answers came only after the slow /lean/loras listing returned: the "
                      f"listing blocked the event loop")
    _, data = host.request("/lean_test/slow_loras", {"seconds": 0}, method="POST")
    assert data["slow_calls"] == 1
