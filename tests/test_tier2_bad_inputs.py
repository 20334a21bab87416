"""Tier 2: the bad-input catalogue (lean_testlib.bad_inputs.CASES) sent to a real ComfyUI over HTTP.

Every case must come back as a validation error from /prompt or an execution error in /history that names
what was wrong; the host must then run a good prompt; and nothing may appear or change outside the host's
output/ and temp/ folders (whole base dir, this repo and the fixture cache are snapshotted before and after).
The evil pickles' marker file must never appear.  Result line (terminal summary, stdout, $LEAN_RESULTS_FILE):
    RESULT bad_inputs=<n> handled=<n> crashes=0 files_written_outside=0
"""
import os
import pathlib

import pytest

from lean_testlib import REPO, bad_inputs, declared_nodes, bad_source_node, cache_dir, harness, report, sd15

pytestmark = pytest.mark.tier2

NO_LLAMA_SHIM = pathlib.Path(bad_inputs.__file__).resolve().parent / "no_llama_cpp"
HOST_WRITES = {"comfyui.log", "socket_audit.jsonl"}   # the host's own log (not a user file)


def _start(tmp_path_factory, name, env=None):
    path = harness.require_host()
    base = tmp_path_factory.mktemp(name)
    harness.make_base_dir(base)
    marker = tmp_path_factory.mktemp(name + "_marker") / "UNPICKLED_CODE_RAN"
    # the narrow SD1.5 under the SD1.5 name (every key and block, 320 channels; detected as SD1.5): what is checked is
    # how bad input is refused and that the host still runs, and ~40 cases load the checkpoint
    files = bad_inputs.make_bad_files(base, marker, narrow=True)
    harness.link_model(base, "checkpoints", sd15.sd15_checkpoint(narrow=True), bad_inputs.SD15)
    bad_source_node.install(base)
    host = harness.ComfyHost.start(path, base, env=env)
    return host, marker, files


def _allowed(rel):
    top = rel.split(os.sep, 1)[0]
    return top in ("output", "temp") or rel in HOST_WRITES


def _snapshots(host):
    return {"base": bad_inputs.snapshot(host.base),
            "repo": bad_inputs.snapshot(REPO, skip={".pytest_cache", ".git"}),
            "cache": bad_inputs.snapshot(cache_dir())}


def _written(before, after):
    out = [("base", k, p) for k, p in bad_inputs.diff(before["base"], after["base"], _allowed)]
    out += [("repo", k, p) for k, p in bad_inputs.diff(before["repo"], after["repo"])]
    # other engineers' tier-1 runs may generate new fixtures concurrently: a new lean_* fixture is not ours,
    # but a changed or deleted one, or any other new file, is.
    out += [("cache", k, p) for k, p in bad_inputs.diff(before["cache"], after["cache"])
            if not (k == "new" and bad_inputs.FIXTURE_NAME.match(p))]
    return out


def run_catalogue(host, cases, marker, llm_ok=True):
    nodes = set(host.object_info())
    results, skipped = [], []
    before = _snapshots(host)
    for i, case in enumerate(cases):
        if case.node not in nodes or any(n not in nodes for n in case.needs):
            skipped.append(case.id)
            continue
        try:
            out = bad_inputs.run_case(host, case)
        except Exception as e:  # the host died or hung
            out = bad_inputs.Outcome(False, "crash", "", f"{type(e).__name__}: {e}")
        crash = not host.alive()
        if not crash:
            try:
                host.run(bad_inputs.good_prompt(i, nodes, llm_ok), timeout=300)
            except Exception as e:
                crash = True
                out.why += f" | the next good prompt failed: {str(e)[:500]}"
        results.append((case, out, crash))
        if crash:
            break
    written = _written(before, _snapshots(host))
    return results, skipped, written


def _summarise(request, results, skipped, written, marker, label):
    handled = sum(1 for _, o, _ in results if o.handled)
    crashes = sum(1 for _, _, c in results if c)
    lines = [f"{label}: {c.id:28s} {o.stage:10s} {'ok ' if o.handled else 'BAD'} {o.text[:150]!r}"
             + (f"  <- {o.why}" if o.why else "") for c, o, _ in results]
    line = (f"RESULT bad_inputs={len(results)} handled={handled} crashes={crashes} "
            f"files_written_outside={len(written) + int(marker.exists())}")
    for l in lines:
        print(l)
    if skipped:
        report.result(request.config, f"{label}: skipped {len(skipped)} case(s) for nodes this host lacks: "
                                      f"{', '.join(skipped)}")
    report.result(request.config, f"{label} {line}")
    return handled, crashes, lines


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h, marker, files = _start(tmp_path_factory, "bad_inputs_base")
    yield h, marker
    h.stop()


def test_bad_input_catalogue(host, request):
    h, marker = host
    cases = [c for c in bad_inputs.CASES if c.host == "main"]
    results, skipped, written = run_catalogue(h, cases, marker)
    handled, crashes, lines = _summarise(request, results, skipped, written, marker, "bad inputs")
    assert results, "no case ran: the host has none of the catalogue's nodes"
    assert not marker.exists(), "an evil pickle was unpickled: it wrote " + str(marker)
    assert crashes == 0, "\n".join(lines)
    assert not written, f"files written outside output/ and temp/: {written}"
    assert handled == len(results), "not handled:\n" + "\n".join(l for l in lines if " BAD " in l)
    assert h.alive()


def test_nodes_without_cases_really_take_no_inputs(comfy):
    for node in bad_inputs.NO_INPUT_NODES:
        spec = comfy.object_info(node)["input"]
        assert not spec.get("required") and not spec.get("optional"), (node, spec)


def test_every_declared_node_has_catalogue_cases():
    """A new Lean node without a bad-input case is a gap in the catalogue."""
    covered = {c.node for c in bad_inputs.CASES}
    missing = declared_nodes() - covered - set(bad_inputs.NO_INPUT_NODES)
    assert not missing, f"no bad-input case for {sorted(missing)}: add some to tests/lean_testlib/bad_inputs.py"


def test_missing_llama_cpp(tmp_path_factory, request):
    """A host where `import llama_cpp` fails: the pack still loads every node, and the llama_cpp backend says how
    to install it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NO_LLAMA_SHIM), env.get("PYTHONPATH")]))
    h, marker, _ = _start(tmp_path_factory, "no_llama_cpp_base", env=env)
    try:
        info = h.object_info()
        missing = declared_nodes() - set(info)
        assert not missing, f"without llama_cpp these nodes did not load: {missing}\n{h.log_tail(60)}"
        results, skipped, written = run_catalogue(h, [c for c in bad_inputs.CASES if c.host == "no_llama_cpp"],
                                                  marker, llm_ok=False)
        handled, crashes, lines = _summarise(request, results, skipped, written, marker, "no llama_cpp")
        assert results and crashes == 0 and handled == len(results), "\n".join(lines)
        assert not written, written
        assert "hidden by the Lean test shim" in results[0][1].text, "the shim was not in effect: " + results[0][1].text
    finally:
        h.stop()
