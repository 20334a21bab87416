"""Tier 1: sharing Prompt Batch out over ComfyUI-Distributed participants (core/distributed.py), and what
nodes/_host.py reads of the prompt ComfyUI-Distributed writes for each participant.  The real thing runs in
tests/test_tier2_prompt_batch_distributed.py (a master and two workers)."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from lean_nodes.core import distributed as D
from lean_nodes.nodes import _host


@settings(max_examples=300, derandomize=True, database=None)
@given(st.integers(0, 5000), st.integers(1, 64))
def test_shares_are_contiguous_in_order_and_differ_by_at_most_one(n, parts):
    bounds = [D.share(n, parts, k) for k in range(parts)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (a, b), (c, _) in zip(bounds, bounds[1:]):
        assert b == c                       # contiguous, in participant order
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)   # the master (participant 0) never has fewer


def test_share_examples_and_bad_index():
    assert [D.share(10, 3, k) for k in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [D.share(10, 2, k) for k in range(2)] == [(0, 5), (5, 10)]
    with pytest.raises(ValueError):
        D.share(10, 3, 3)


def test_slices_text_names_each_participant():
    assert D.slices_text(10, ["master", "a", "b"], {"a": "GPU 1"}) == \
        "master: prompts 1-4, worker 'GPU 1' (id a): prompts 5-7, worker 'b' (id b): prompts 8-10"


def test_config_workers_builds_addresses_as_comfyui_distributed_does():
    cfg = {"workers": [{"id": "1", "name": "local", "port": 8189, "enabled": True, "type": "local"},
                       {"id": "2", "host": "192.0.2.1", "port": 8190},
                       {"id": "3", "host": "https://gpu.example.test/", "type": "cloud"},
                       {"id": "4", "host": "box", "port": 443},
                       {"name": "no id"}, "junk"]}
    got = D.config_workers(cfg)
    assert got == {"1": {"name": "local", "url": "http://127.0.0.1:8189", "enabled": True},
                   "2": {"name": "2", "url": "http://192.0.2.1:8190", "enabled": False},
                   "3": {"name": "3", "url": "https://gpu.example.test", "enabled": False},
                   "4": {"name": "4", "url": "https://box", "enabled": False}}
    assert D.config_workers({"workers": "x"}) == {} and D.config_workers(None) == {}


def _history(job, status):
    prompt = {"9": {"class_type": "DistributedCollector", "inputs": {"multi_job_id": job}}}
    return {"pid": {"prompt": [0, "pid", prompt, {}, []], "status": status}}


def test_job_in_history():
    err = {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {}], ["execution_error", {"node_type": "LeanPromptBatch", "node_id": "pb",
                                                      "exception_type": "WildcardNotFound",
                                                      "exception_message": "unknown wildcard __x__"}]]}
    assert D.job_in_history(_history("J", err), "J", "DistributedCollector") == \
        ("error", "LeanPromptBatch #pb: WildcardNotFound: unknown wildcard __x__")
    assert D.job_in_history(_history("J", {"status_str": "success", "completed": True}), "J",
                            "DistributedCollector") == ("success", None)
    assert D.job_in_history(_history("other", err), "J", "DistributedCollector") == (None, None)
    assert D.job_in_history({"bad": {"prompt": None}}, "J", "DistributedCollector") == (None, None)


def test_diagnose_asks_only_configured_workers():
    asked = []

    def asker(url, path):
        asked.append(url + path)
        if url.endswith(":2"):
            raise ConnectionRefusedError("refused")
        return _history("J", {"status_str": "success", "completed": True}) if path.startswith("/history") else {}

    layout = {"participants": ["master", "a", "b", "ghost"], "job": "J"}
    workers = {"a": {"name": "A", "url": "http://127.0.0.1:1"}, "b": {"name": "B", "url": "http://127.0.0.1:2"}}
    lines = D.diagnose(layout, workers, "DistributedCollector", asker)
    assert lines[0] == "worker 'A' (id a, http://127.0.0.1:1): its run finished (its images were sent)"
    assert lines[1].startswith("worker 'B' (id b, http://127.0.0.1:2) does not answer")
    assert lines[2] == "worker id ghost: not in ComfyUI-Distributed's config, so not asked"
    assert all(a.startswith(("http://127.0.0.1:1", "http://127.0.0.1:2")) for a in asked)


def _collector(**inputs):
    return {"5": {"class_type": "KSampler", "inputs": {}},
            "9": {"class_type": "DistributedCollector", "inputs": {"images": ["6", 0], "load_balance": False,
                                                                   **inputs}}}


def test_distributed_layout_reads_what_comfyui_distributed_wrote():
    ids = json.dumps(["a", "b"])
    assert _host.distributed_layout(_collector()) is None                      # plain /prompt: no job
    assert _host.distributed_layout({}) is None and _host.distributed_layout(None) is None
    master = _host.distributed_layout(_collector(multi_job_id="J", is_worker=False, enabled_worker_ids=ids))
    assert master == {"participants": ["master", "a", "b"], "me": 0, "job": "J", "delegate_only": False,
                      "load_balance": False}
    w = _host.distributed_layout(_collector(multi_job_id="J", is_worker=True, worker_id="b", enabled_worker_ids=ids))
    assert w["me"] == 2 and w["participants"] == ["master", "a", "b"]
    with pytest.raises(ValueError, match="not in the Distributed Collector's list"):
        _host.distributed_layout(_collector(multi_job_id="J", is_worker=True, worker_id="c", enabled_worker_ids=ids))
    with pytest.raises(ValueError, match="not a JSON list"):
        _host.distributed_layout(_collector(multi_job_id="J", enabled_worker_ids="[oops"))


def test_doctor_check_distributed_against_fake_workers():
    from lean_nodes.core import doctor
    info = {"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["a.safetensors", "sub/b.ckpt"], {}]}}}}
    answers = {
        "http://127.0.0.1:1": {"/system_stats": {}, "/lean/distributed/manifest":
                               {"pack": "0.1.0", "wildcards": {"colors": "h1", "places": "h2"}},
                               "/object_info/CheckpointLoaderSimple": info},
        "http://127.0.0.1:2": {"/system_stats": {}, "/lean/distributed/manifest":
                               {"pack": "0.0.9", "wildcards": {"colors": "other"}},
                               "/object_info/CheckpointLoaderSimple": {"CheckpointLoaderSimple": {"input": {
                                   "required": {"ckpt_name": ["COMBO", {"options": ["sub/b.ckpt"]}]}}}}},
    }

    def asker(url, path):
        if url not in answers:
            raise ConnectionRefusedError("refused")
        return answers[url][path]

    workers = {"1": {"name": "one", "url": "http://127.0.0.1:1", "enabled": True},
               "2": {"name": "two", "url": "http://127.0.0.1:2", "enabled": True},
               "3": {"name": "off", "url": "http://127.0.0.1:3", "enabled": True},
               "4": {"name": "disabled", "url": "http://127.0.0.1:4", "enabled": False}}
    needs = {"files": [("CheckpointLoaderSimple", "a.safetensors"), ("CheckpointLoaderSimple", "sub\\b.ckpt")],
             "wildcards": ["colors", "places"]}
    out = doctor.check_distributed(workers, {"pack": "0.1.0", "wildcards": {"colors": "h1", "places": "h2"}},
                                   needs, asker)
    rows = {r["id"]: r for r in out["workers"]}
    assert rows["1"]["answers"] and rows["1"]["problems"] == [] and rows["1"]["pack"] == "0.1.0"
    two = " | ".join(rows["2"]["problems"])
    assert "runs Lean Nodes 0.0.9, this machine 0.1.0" in two
    assert "wildcard __colors__ differs" in two and "has no wildcard __places__" in two
    assert "has no a.safetensors" in two and "b.ckpt" not in two
    assert "does not answer" in rows["3"]["problems"][0]
    assert rows["4"] == {"id": "4", "name": "disabled", "url": "http://127.0.0.1:4", "enabled": False}
    assert len(out["problems"]) == len(rows["2"]["problems"]) + 1
    text = "\n".join(doctor.render_distributed({**out, "config": "cfg.json"}))
    assert "worker one (http://127.0.0.1:1): answers, Lean Nodes 0.1.0, OK" in text
    assert "worker off (http://127.0.0.1:3): does NOT answer" in text and "disabled, not checked" in text


def test_wildcard_hashes_lists_what_prompt_batch_reads_within_a_budget(tmp_path):
    import hashlib

    from lean_nodes.core import doctor
    root, other = tmp_path / "wc", tmp_path / "wc2"
    (root / "sub").mkdir(parents=True)
    other.mkdir()
    (root / "a.txt").write_bytes(b"red\n")
    (root / "sub" / "b.txt").write_bytes(b"cat\n")
    (root / "bad..name%.txt").write_bytes(b"x\n")      # a name Prompt Batch's rule refuses: never listed
    (root / "notes.md").write_bytes(b"not a wildcard")
    (other / "a.txt").write_bytes(b"blue\n")              # the first folder wins, as in Prompt Batch
    (other / "c.txt").write_bytes(b"green\n")
    h = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    assert doctor.wildcard_hashes([str(root), str(other)]) == (
        {"a": h(b"red\n"), "sub/b": h(b"cat\n"), "c": h(b"green\n")}, 0)
    listed, left_out = doctor.wildcard_hashes([str(root), str(other)], limit=2)
    assert len(listed) == 2 and left_out == 1
    # a worker whose manifest was cut says so instead of "has no wildcard"
    out = doctor.check_distributed(
        {"1": {"name": "one", "url": "http://127.0.0.1:1", "enabled": True}},
        {"pack": "0.1.0", "wildcards": {"c": "h"}}, {"files": [], "wildcards": ["c"]},
        lambda url, path: {"/system_stats": {}, "/lean/distributed/manifest":
                           {"pack": "0.1.0", "wildcards": listed, "wildcards_left_out": left_out}}[path])
    assert out["problems"] == ["worker 'one' (id 1, http://127.0.0.1:1) lists only its first 2 wildcard files, "
                               "not __c__; make sure its wildcards/c.txt equals this machine's"]


def test_wildcards_used_follows_files_once():
    files = {"a": "x __b__ __c__", "b": "__a__ y", "c": "plain"}
    reads = []

    def read(name):
        reads.append(name)
        return files.get(name)
    assert __import__("lean_nodes.core.doctor", fromlist=["_"]).wildcards_used(
        ["p __a__", "__missing__ q"], read) == ["a", "b", "c", "missing"]
    assert sorted(reads) == ["a", "b", "c", "missing"]


def test_ask_refuses_a_redirect_and_never_reaches_its_target():
    """A configured worker that answers 302 to another address: ask() raises naming the target, which gets nothing."""
    import http.server
    import threading
    import urllib.error
    hits = []

    class Target(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    target = http.server.HTTPServer(("127.0.0.1", 0), Target)

    class Worker(Target):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{target.server_port}/system_stats")
            self.end_headers()

    worker = http.server.HTTPServer(("127.0.0.1", 0), Worker)
    for srv in (target, worker):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(urllib.error.HTTPError, match="redirect to .* refused"):
            D.ask(f"http://127.0.0.1:{worker.server_port}", "/system_stats")
        assert hits == []
    finally:
        for srv in (target, worker):
            srv.shutdown()
            srv.server_close()
