"""Tier 2: a llama.cpp model kept loaded (keep_loaded=True) and ComfyUI 0.33's RAM-pressure cache.

The host frees RAM by evicting cached node outputs (comfy_execution.caching.RAMPressureCache.ram_release): after
every node with its --cache-ram thresholds, and whenever it calls comfy.memory_management.extra_ram_release before
pinning or loading weights.  A loader's model goes when its output is evicted; the LLM loader's model must too.
The host here runs with thresholds of 1 GB (--cache-ram 1 1), far below what this machine has free, so nothing is
evicted unless the test asks the host's own release function for more than is available."""
import json
import pathlib

import pytest

from lean_testlib import graphs, harness, host_caps_node, prereq, tiny_gguf

pytestmark = pytest.mark.tier2

pytest.importorskip("llama_cpp", reason=prereq("llama-cpp-python not installed"))

FREED = "[Lean LLM] freed tiny.gguf: ComfyUI's node cache let go of the loader's output"


@pytest.fixture(scope="module")
def ram_host(tmp_path_factory):
    path = harness.require_host()
    # read from the host's own source, not from the pack
    if "class RAMPressureCache" not in (pathlib.Path(path) / "comfy_execution" / "caching.py").read_text():
        pytest.skip(f"ComfyUI {harness.host_version(path)} has no RAM-pressure cache (its classic cache frees a kept "
                    "LLM when the loader leaves the workflow; POST /free and an image model needing room free it too)")

    def setup(base):
        host_caps_node.install(base)
        harness.link_model(base, "llm", tiny_gguf.tiny_model("chatml"), "tiny.gguf")

    with harness.own_host(tmp_path_factory, "ram_base", setup=setup, extra_args=["--cache-ram", "1", "1"]) as h:
        yield h


def cached_nodes(entry):
    return {n for kind, msg in entry["status"]["messages"] if kind == "execution_cached" for n in msg["nodes"]}


def release(h, name, over_available):
    h.run({"r": {"class_type": "TestRamRelease_lean", "inputs": {"name": name, "over_available": over_available}}})
    return json.loads((h.base / "output" / "probe" / f"{name}.json").read_text())


def llm(seed):
    return graphs.llm_preview(loader=graphs.llm_loader(model="tiny.gguf"), idea="a lantern", seed=seed,
                              max_tokens=4, keep_loaded=True)


def test_kept_llm_freed_only_under_ram_pressure(ram_host):
    h = ram_host
    assert "Using RAM pressure cache" in h.log()
    h.run(llm(1))
    loads = h.log().count("[Lean LLM] loaded tiny.gguf")
    assert loads == 1
    # no pressure: the host's release with a target below what is available frees nothing, the LLM stays
    calm = release(h, "calm", -(256 << 20))
    assert calm["hooked"], calm  # the RAM-pressure cache's release is what the host's function runs
    assert calm["freed"] == 0 and "LeanLLM" in calm["before"] and "LeanLLM" in calm["after"], calm
    assert FREED not in h.log()
    entry = h.run(llm(2))
    assert "l" in cached_nodes(entry), "without RAM pressure the loader's output (and its model) should be kept"
    assert h.log().count("[Lean LLM] loaded tiny.gguf") == loads
    # pressure: the same host function asked for more RAM than is available evicts the earlier prompt's outputs
    hot = release(h, "pressure", 1 << 40)
    assert "LeanLLM" in hot["before"] and "LeanLLM" not in hot["after"], hot
    assert h.log().count(FREED) == 1, h.log_tail(40)
    entry = h.run(llm(3))
    assert "l" not in cached_nodes(entry)
    assert h.log().count("[Lean LLM] loaded tiny.gguf") == loads + 1
    assert entry["outputs"]["p"]["lean_llm"][0]["tokens"] >= 1
