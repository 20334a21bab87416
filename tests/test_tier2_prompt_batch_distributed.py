"""Tier 2: Prompt Batch shared out over ComfyUI-Distributed (a master and two local workers on loopback ports).

ComfyUI-Distributed 1.4.4 is installed from ../shared/peers into each of three ComfyUI processes
(lean_testlib.distributed); the master's config names the two workers.  The reference is the one-machine run: the
same workflow queued on the master with plain /prompt (ComfyUI-Distributed then runs nothing elsewhere: the
collector passes the images through and Prompt Batch keeps every prompt).  Images are compared as the PNG files
SaveImage writes on the master, byte value by byte value.

The checkpoint is the SD1.5 fixture's narrow variant (lean_testlib.sd15.NARROW: SD1.5's keys and blocks at 320
channels, detected as SD1.5 by the host), and the LoRAs are its kohya LoRAs: what is checked is which machine renders
which prompt with which LoRAs, and three processes each holding the full-size UNet in fp32 (3.3 GB) spent most of
this module's time loading and moving it.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from lean_nodes.core import workflow
from lean_testlib import REPO, distributed, graphs, harness, lora as kohya, prereq, sd15, shipped, socket_audit

# CI runs this module on its default host only (marker one_host, .ci/run): three ComfyUI processes for ~6 min; it
# passes on 0.3.64 as well when run there by hand (python -m pytest tests/test_tier2_prompt_batch_distributed.py).
pytestmark = [pytest.mark.tier2, pytest.mark.one_host]

N = 10
LONG = ", ".join(["word"] * 45)          # 2 chunks of 77 tokens
LONGER = ", ".join(["thing"] * 90)       # 3 chunks
LINES = [
    "a __colors__ cube on a table",
    "a {small|large} house, " + LONG,
    "x",
    "(a green sphere:1.3) in a (dark:0.6) room",
    "a __colors__ boat, " + LONGER,
    "a cat",
    "{red|blue} sky over __places__",
    "a dog, " + LONG,
    "portrait of a __colors__ robot",
    "a tree",
]
TEXT = "\n".join(LINES)
# the first 6 lines with a different LoRA set on most of them (none, one, two, text encoder at another strength,
# UNet only, lbw=, a schedule): over master + 2 workers the shares are 1-2, 3-4, 5-6, each holding other sets than
# the share before it and shorter prompts than the longest (3 chunks, prompt 5), so a share pads to the whole batch's
# length.  The tags come last: the text each line encodes is that of LINES (and its image without tags, reference)
TAGS = [" <lora:pd_a:0.9>", "", " <lora:pd_b:0.7:0.4>", " <lora:pd_a:0.5> <lora:pd_c:-0.6:lbw=MIDD>",
        " <lora:pd_c:0.8:0>", " <lora:pd_b:1.0:sched=0:1,0.5:0.3>"]
TAGGED = "\n".join(line + tag for line, tag in zip(LINES, TAGS))


def _setup(base):
    wc = base / "models" / "wildcards"
    (wc / "colors.txt").write_text("red\ngreen\nblue\nyellow\n")
    (wc / "places.txt").write_text("the sea\nthe mountains\n")
    for name, seed in (("pd_a", 0), ("pd_b", 1), ("pd_c", 2)):  # the per-image LoRA tests' cached files
        harness.link_model(base, "loras", kohya.sd15_lora(seed=seed, narrow=True), name + ".safetensors")


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    archive = harness.peers_dir() / distributed.PEER
    if not archive.is_file():
        pytest.skip(prereq(f"ComfyUI-Distributed's archive {archive} is missing (../shared/peers)"))
    with distributed.cluster(tmp_path_factory.mktemp("distrib"), sd15.sd15_checkpoint(narrow=True), workers=2,
                             setup=_setup) as c:
        yield c
    for what, i, mx, mean in STATS:  # the measured differences (shown with pytest -s)
        print(f"[distributed vs one machine] {what}: image {i}: max {mx}, mean {mean:.5f}")


def graph(prefix, **kw):
    return graphs.prompt_batch_distributed(TEXT, steps=2, seed=7, batch_seed=3, prefix=prefix, **kw)


def images(host, entry, node="save"):
    files = sorted(host.base / "output" / i.get("subfolder", "") / i["filename"]
                   for i in entry["outputs"].get(node, {}).get("images", []))
    return [np.asarray(Image.open(f).convert("RGB"), dtype=np.int16) for f in files]


@pytest.fixture(scope="module")
def reference(trio):
    """The one-machine run on the master: 10 images and the 10 prompts."""
    entry = trio.master.run(graph("one_machine"))
    imgs = images(trio.master, entry)
    prompts = entry["outputs"]["pv"]["text"]
    assert len(imgs) == N and len(prompts) == N
    for a in range(N):  # the images differ pairwise, so a reordered or shifted batch cannot match
        for b in range(a + 1, N):
            assert np.abs(imgs[a] - imgs[b]).mean() > 1.0, (a, b)
    return imgs, prompts


# Measured on CPU (2 cores, ComfyUI 0.33.0): every image of the 3-way (4+3+3) and the 2-way (5+5) run differs from
# the one-machine image in at most 0.07 % of its 8-bit values, each by one step (max 1, mean 0.00008-0.00065 per
# image with the full-size SD1.5 fixture, 0.00008-0.00024 with the narrow one), the same values in both runs: a batch
# of 10 is sampled with other float rounding than a batch of 3-5.
MAX_LSB = 1          # no channel value of any image differs by more than one step of 255
MAX_MEAN = 0.002     # mean |difference| per channel value, per image (3x the largest measured)
STATS = []           # (what, image, max, mean) of every comparison, printed at the end


def _same(got, ref, what):
    assert len(got) == len(ref), f"{what}: {len(got)} images, expected {len(ref)}"
    for i, (g, r) in enumerate(zip(got, ref)):
        d = np.abs(g - r)
        STATS.append((what, i, int(d.max()), float(d.mean())))
        assert d.max() <= MAX_LSB and d.mean() <= MAX_MEAN, \
            f"{what}: image {i} differs from the one-machine image {i}: max {d.max()} of 255, mean {d.mean():.4f}"


def _log_since(host, mark):
    return host.log()[mark:]


def test_the_unwired_input_keeps_todays_whole_batch(trio, reference):
    """participant not wired: today's Prompt Batch (every prompt, batch_index 0..N-1 on the latent output)."""
    entry = trio.master.run(graph("unwired", participant=False))
    _same(images(trio.master, entry), reference[0], "participant unwired")
    assert entry["outputs"]["pv"]["text"] == reference[1]


def test_three_participants_give_the_one_machine_images_in_prompt_order(trio, reference):
    marks = {k: len(h.log()) for k, h in [("master", trio.master), *trio.workers.items()]}
    entry, data = trio.queue(graph("three"))
    assert entry["status"]["status_str"] == "success", trio.master.error_text(entry)
    assert data["worker_count"] == 2
    _same(images(trio.master, entry), reference[0], "master + 2 workers")
    assert entry["outputs"]["pv"]["text"] == reference[1], "the master's prompts output is not all N in order"
    assert [p for p, line in zip(reference[1], LINES) if "{" not in line and "__" not in line] == \
        [line for line in LINES if "{" not in line and "__" not in line]
    # each participant encoded and sampled only its own share: 4 + 3 + 3
    for who, share in (("master", "1-4"), ("w1", "5-7"), ("w2", "8-10")):
        host = trio.master if who == "master" else trio.workers[who]
        assert f"(this participant: prompts {share})" in _log_since(host, marks[who]), who


def test_one_worker_disabled(trio, reference):
    trio.set_enabled(["w1"])
    try:
        marks = {"w2": len(trio.workers["w2"].log())}
        entry, data = trio.queue(graph("two"))
    finally:
        trio.set_enabled(["w1", "w2"])
    assert entry["status"]["status_str"] == "success", trio.master.error_text(entry)
    assert data["worker_count"] == 1
    _same(images(trio.master, entry), reference[0], "master + 1 worker")
    assert entry["outputs"]["pv"]["text"] == reference[1]
    assert "LeanPromptBatch" not in _log_since(trio.workers["w2"], marks["w2"]), "the disabled worker ran"


def test_per_image_loras_follow_their_prompts_across_participants(trio, reference):
    """Issue 23 with participant wired: every participant reads the tags of all N prompts and keeps its share of
    them, so image i gets prompt i's LoRAs on whichever machine renders it (text-encoder sets padded as the whole
    batch).  The distributed images equal the one-machine run of the same tagged batch (the module's image
    tolerance); each LoRA set moves its image far beyond it (against the untagged reference), so a set given to
    another image fails."""
    n = len(TAGS)
    one = trio.master.run(graphs.prompt_batch_distributed(TAGGED, steps=2, seed=7, batch_seed=3, prefix="pi_one",
                                                          per_image_model=True))
    ref = images(trio.master, one)
    assert len(ref) == n and one["outputs"]["pv"]["text"] == [p + t for p, t in zip(reference[1], TAGS)]
    for i, tag in enumerate(TAGS):  # image i's noise depends on i alone: the untagged image i is reference's
        moved = float(np.abs(ref[i] - reference[0][i]).mean())
        assert (moved > 50 * MAX_MEAN) == bool(tag), f"image {i} ({tag or 'no tag'}): the LoRAs moved it {moved:.4f}"
    marks = {k: len(h.log()) for k, h in [("master", trio.master), *trio.workers.items()]}
    entry, data = trio.queue(graphs.prompt_batch_distributed(TAGGED, steps=2, seed=7, batch_seed=3,
                                                             prefix="pi_three", per_image_model=True))
    assert entry["status"]["status_str"] == "success", trio.master.error_text(entry)
    assert data["worker_count"] == 2
    _same(images(trio.master, entry), ref, "per-image LoRAs, master + 2 workers")
    # each participant mapped only its share, numbered as in the whole batch
    for who, share, first in (("master", "1-2", "1: pd_a"), ("w1", "3-4", "3: pd_b"), ("w2", "5-6", "5: pd_c")):
        host = trio.master if who == "master" else trio.workers[who]
        log = _log_since(host, marks[who])
        assert f"(this participant: prompts {share})" in log and f"LeanPromptBatch: {first}" in log, who


def _doctor(trio, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(graph("doctor")))
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "lean.py"), "doctor", "--json", str(wf),
                        "--distributed", str(trio.config_path), "--url", trio.master.url],
                       capture_output=True, text=True, timeout=300)
    report = json.loads(r.stdout)
    return r.returncode, report["distributed"]


SHIPPED = shipped.WORKFLOWS / "lean_prompt_batch_distributed.json"


def test_the_example_workflow_converts_and_runs_distributed(trio):
    """example_workflows/lean_prompt_batch_distributed.json: its API copy is the conversion with the master's
    /object_info (ComfyUI-Distributed installed), and queued through ComfyUI-Distributed (64x64, 1 step) it makes
    its 12 images on the master, with the 12 prompts."""
    ui = shipped.load(SHIPPED)
    api = workflow.ui_to_api(ui, trio.master.object_info())
    copy = shipped.API_DIR / SHIPPED.name
    assert json.loads(copy.read_text()) == json.loads(json.dumps(api)), \
        f"{copy} differs from a fresh conversion: run python scripts/make_workflows.py with ComfyUI-Distributed"
    small = shipped.small(api)
    for node in small.values():  # the fixture under its own name: the hosts have it loaded already (RAM)
        if node["class_type"] == "CheckpointLoaderSimple":
            assert node["inputs"]["ckpt_name"] == shipped.CKPT
            node["inputs"]["ckpt_name"] = distributed.CKPT
    entry, data = trio.queue(small)
    assert entry["status"]["status_str"] == "success", trio.master.error_text(entry)
    assert data["worker_count"] == 2
    saved = [i for out in entry["outputs"].values() for i in out.get("images", []) if i.get("type") == "output"]
    assert len(saved) == 12, saved


def test_the_example_workflow_loads_in_the_editor(trio):
    """Dropped on the master's editor (ComfyUI-Distributed installed): no missing node, every node built."""
    import collections

    from lean_testlib import browser
    why = browser.available()
    if why is not None:
        pytest.skip(prereq(f"no browser: {why}"))
    with browser.Browser() as b:
        page = b.editor(trio.master.url)
        browser.drop_workflow(page, SHIPPED)  # waits until its previews and widgets have settled
        dialog = browser.missing_nodes_dialog(page)
        if os.environ.get("LEAN_SCREENSHOTS") and not dialog:  # for scripts/make_thumbnails.py
            out = pathlib.Path(os.environ["LEAN_SCREENSHOTS"])
            out.mkdir(parents=True, exist_ok=True)
            browser.graph_screenshot(page, out / f"{SHIPPED.stem}.png")
        assert not dialog, dialog
        assert not browser.unregistered_types(page) and not browser.broken_nodes(page)
        got = collections.Counter(browser.node_types(page))
        assert got == collections.Counter(n["type"] for n in shipped.load(SHIPPED)["nodes"]), got
        assert b.lean_errors == [], b.lean_errors


def test_doctor_checks_each_worker(trio, tmp_path):
    code, dist = _doctor(trio, tmp_path)
    assert [(w["id"], w["answers"], w.get("pack"), w["problems"]) for w in dist["workers"]] == \
        [("w1", True, "0.1.0", []), ("w2", True, "0.1.0", [])], dist
    assert dist["problems"] == []
    w1, w2 = trio.workers["w1"].base, trio.workers["w2"].base
    places = w1 / "models" / "wildcards" / "places.txt"
    ckpt = w2 / "models" / "checkpoints" / distributed.CKPT
    saved = places.read_text()
    places.unlink()
    target = ckpt.resolve()
    ckpt.unlink()
    try:
        code, dist = _doctor(trio, tmp_path)
    finally:
        places.write_text(saved)
        ckpt.symlink_to(target)
    assert code == 1
    w1p, w2p = ({w["id"]: " | ".join(w["problems"]) for w in dist["workers"]}[k] for k in ("w1", "w2"))
    assert "has no wildcard __places__" in w1p and "lean_sd15" not in w1p, w1p
    assert f"has no {distributed.CKPT} (for CheckpointLoaderSimple)" in w2p and "wildcard" not in w2p, w2p


def test_a_worker_whose_run_fails_is_named_with_its_error(trio):
    colors = trio.workers["w1"].base / "models" / "wildcards" / "colors.txt"
    saved = colors.read_text()
    colors.unlink()  # w1 lacks a wildcard file the workflow needs
    try:
        entry, _ = trio.queue(graph("w1_fails"))
    finally:
        colors.write_text(saved)
    assert entry["status"]["status_str"] == "error"
    text = trio.master.error_text(entry)
    assert "LeanPromptBatchCheck" in text and "gathered 7 image(s), but Prompt Batch has 10" in text, text
    assert "worker 'Worker w1' (id w1): prompts 5-7" in text, text
    assert "its run failed: LeanPromptBatch" in text and "unknown wildcard __colors__" in text, text
    assert "save" not in entry.get("outputs", {}), "a short batch was saved"


def test_a_worker_killed_mid_run_is_named(trio, tmp_path):
    w2 = trio.workers["w2"]
    data = trio.submit(graph("killed"))
    t0 = time.time()
    while time.time() - t0 < 120:  # kill w2 while it runs its share
        q = w2.get("/queue")
        if q.get("queue_running"):
            break
        time.sleep(0.05)
    else:
        pytest.fail("w2 never started its share")
    w2.proc.kill()
    w2.proc.wait(10)
    entry = trio.master.wait(data["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "error"
    text = trio.master.error_text(entry)
    assert "gathered 7 image(s), but Prompt Batch has 10" in text, text
    assert "worker 'Worker w2' (id w2): prompts 8-10" in text, text
    assert f"worker 'Worker w2' (id w2, http://127.0.0.1:{w2.port}) does not answer" in text, text
    assert "worker 'Worker w1' (id w1, " in text and "its run finished" in text, text
    assert "save" not in entry.get("outputs", {}), "a short batch was saved"
    code, dist = _doctor(trio, tmp_path)  # the doctor says so too
    assert code == 1 and [w["answers"] for w in dist["workers"]] == [True, False]
    assert "does not answer" in dist["workers"][1]["problems"][0]


# ComfyUI-Distributed's own /distributed/network_info (its panel asks it when the editor opens) looks up this
# machine's name and opens a UDP socket towards 8.8.8.8 to learn its LAN address (no packet is sent by a UDP
# connect; the audit hook refuses it here anyway).  Not worker traffic, and not this pack's.
PEER_NETWORK_INFO = "get_network_ips"


def test_every_connection_stayed_on_loopback(trio):
    """Master and workers ran with the socket audit hook: every connect and lookup of this pack, and all of
    ComfyUI-Distributed's worker traffic (dispatch, images, probes), went to loopback (the hook refused any other)."""
    seen_lean = False
    for name, host in [("master", trio.master), *trio.workers.items()]:
        records = socket_audit.read(host.socket_audit_log)
        others = [r for r in records if (not socket_audit.is_local(r) or r.get("event") == "audit_error")
                  and (r.get("lean") or not any(PEER_NETWORK_INFO in f for f in r.get("top", [])))]
        assert not others, f"{name}: non-loopback sockets: {others[:5]}"
        seen_lean |= any(r.get("lean") and r.get("event") == "socket.connect" for r in records)
    assert seen_lean, "the pack's check never asked a worker (the audit would have nothing to say)"
