"""Tier 2: LeanLLMLoader -> LeanLLMPrompt inside a real ComfyUI, with tiny generated GGUF models in models/llm.
References: raw llama_cpp in this test process (same seed and sampler settings), the stock PreviewAny node
(what really flows out of 'prompt'), the host's own websocket messages, history and log."""
import pathlib
import time

import numpy as np
import pytest
from PIL import Image

from lean_testlib import graphs, harness, prereq, tiny_gguf
from lean_testlib.ws import WsListener
from lean_nodes.core.llm_text import STYLE_PRESETS

pytestmark = pytest.mark.tier2

llama_cpp = pytest.importorskip("llama_cpp", reason=prereq("llama-cpp-python not installed: "
                                "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install llama-cpp-python"))


@pytest.fixture(scope="module")
def host(comfy_sd15):
    harness.link_model(comfy_sd15.base, "llm", tiny_gguf.tiny_model("chatml"), "tiny.gguf")
    harness.link_model(comfy_sd15.base, "llm", tiny_gguf.tiny_model("r1", "Q4_0"), "tiny-r1.gguf")
    return comfy_sd15


def reference_text(seed, max_tokens, idea, style="SD1.5 tags", model="chatml", n_ctx=512):
    """What the tiny model writes, computed with llama_cpp's own API in this process."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    raw = llama_cpp.Llama(model_path=str(tiny_gguf.tiny_model(model)), n_ctx=n_ctx, verbose=False)
    try:
        messages = [{"role": "system", "content": STYLE_PRESETS[style]}, {"role": "user", "content": idea}]
        prompt = Jinja2ChatFormatter(raw.metadata["tokenizer.chat_template"], eos_token="<|im_end|>",
                                     bos_token="<|endoftext|>")(messages=messages).prompt
        raw.set_seed(seed)
        out = []
        for t in raw.generate(raw.tokenize(prompt.encode(), add_bos=False, special=True), top_k=40, top_p=0.9,
                              min_p=0.05, temp=0.7, repeat_penalty=1.0):
            if llama_cpp.llama_vocab_is_eog(raw._model.vocab, t):
                break
            out.append(t)
            if len(out) == max_tokens:
                break
        return raw.detokenize(out).decode("utf-8", errors="ignore")
    finally:
        raw.close()


def plain_seed(idea, max_tokens=24):
    """A seed whose tiny-model text has no tags or quotes, so the expected prompt is simply the text, trimmed."""
    for seed in range(1, 60):
        text = reference_text(seed, max_tokens, idea)
        t = text.strip()
        if text and "think>" not in text and t and t[0] not in "\"'`\u201c\u201d" and "prompt" not in t.lower()[:12]:
            return seed, t
    pytest.fail("no plain seed found")


def cached_nodes(entry):
    return {n for kind, msg in entry["status"]["messages"] if kind == "execution_cached" for n in msg["nodes"]}


def preview_text(entry, node="v"):
    return entry["outputs"][node]["text"][0]


def test_loader_lists_llm_folder(host):
    info = host.object_info("LeanLLMLoader")
    models = info["input"]["required"]["model"][0]
    assert {"tiny.gguf", "tiny-r1.gguf"} <= set(models), models
    assert info["output"] == ["LEAN_LLM"]
    p = host.object_info("LeanLLMPrompt")
    assert list(p["input"]["required"]) == ["llm", "idea", "style", "system_prompt", "seed", "max_tokens",
                                            "temperature", "top_p", "keep_loaded"]
    # outputs are positions too: 'prompts' (issue 25, a list) came after the first two
    assert p["output"] == ["STRING", "STRING", "STRING"] and p["output_name"] == ["prompt", "thinking", "prompts"]
    assert p["output_is_list"] == [False, False, True] and list(p["input"].get("optional", {})) == ["image"]
    assert "/extensions/comfyui-lean/lean.llm.js" in host.get("/extensions"), "the stream view is not served"


def test_llm_prompt_drives_txt2img(host):
    idea = "a lighthouse on a cliff"
    seed, expected = plain_seed(idea)
    g = graphs.llm_txt2img(idea=idea, seed=seed, max_tokens=24, prefix="lean_llm_t2i")
    g["v"] = {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}}
    entry = host.run(g)
    files = host.output_files(entry)
    assert len(files) == 1 and files[0].is_file()
    img = np.asarray(Image.open(files[0]))
    assert img.shape == (64, 64, 3) and img.std() > 0
    assert preview_text(entry) == expected, "the prompt that reached CLIPTextEncode is not what llama_cpp wrote"
    ui = entry["outputs"]["p"]["lean_llm"][0]
    assert ui["prompt"] == expected and ui["thinking"] == "" and ui["tokens"] == 24


def test_same_inputs_are_cached_and_a_change_reruns_only_the_writer(host):
    g = graphs.llm_preview(idea="a cat on a sofa", seed=11, max_tokens=16)
    first = host.run(g)
    again = host.run(g)
    assert {"l", "p", "v"} <= cached_nodes(again), "nothing changed: nothing should run again"
    assert preview_text(again) == preview_text(first)
    changed = host.run(graphs.llm_preview(idea="a dog on a sofa", seed=11, max_tokens=16))
    assert "l" in cached_nodes(changed) and "p" not in cached_nodes(changed)
    assert preview_text(changed) != preview_text(first)
    # back to the first inputs: a fresh generation (not a cache hit) gives the identical text
    back = host.run(g)
    assert "p" not in cached_nodes(back)
    assert preview_text(back) == preview_text(first)


def test_tokens_stream_to_the_browser_with_progress(host):
    idea = "a castle in fog"
    with WsListener(host.url, host.client_id) as ws:
        entry = host.run(graphs.llm_preview(idea=idea, seed=5, max_tokens=200))
    stream = ws.events("lean.llm.stream")
    assert stream and stream[0].get("start") and stream[-1].get("done"), stream[:3]
    assert all(m["node"] == "p" for m in stream)
    streamed = "".join(m.get("delta", "") for m in stream)
    assert streamed == reference_text(5, 200, idea)
    assert stream[-1]["prompt"] == entry["outputs"]["p"]["lean_llm"][0]["prompt"]
    progress = [m for m in ws.events("progress") if m.get("node") == "p"]
    assert progress and all(m["max"] == 200 for m in progress)
    assert progress[-1]["value"] == stream[-1]["tokens"]


def test_r1_model_reasoning_never_reaches_the_prompt(host):
    g = graphs.llm_preview(loader=graphs.llm_loader(model="tiny-r1.gguf"), idea="a fox", seed=3, max_tokens=12)
    entry = host.run(g)
    ui = entry["outputs"]["p"]["lean_llm"][0]
    # the R1 template opens <think>; a random model does not close it in 12 tokens
    assert ui["prompt"] == "" and preview_text(entry) == ""
    assert ui["thinking"] and ui["status"].startswith("No prompt: the model was still thinking")
    assert "[Lean LLM] No prompt" in host.log()


def test_keep_loaded_false_frees_and_free_route_unloads(host):
    host.run(graphs.llm_preview(idea="a boat", seed=21, max_tokens=8, keep_loaded=False))
    assert "freed tiny.gguf after the run (keep_loaded=false)" in host.log()
    # the loader is cached by ComfyUI; only the writer runs again, and must load the freed model again
    reloads = host.log().count("[Lean LLM] loading tiny.gguf again (it was freed)")
    entry = host.run(graphs.llm_preview(idea="a boat at night", seed=21, max_tokens=8, keep_loaded=True))
    assert "l" in cached_nodes(entry)
    assert host.log().count("[Lean LLM] loading tiny.gguf again (it was freed)") == reloads + 1
    loads = host.log().count("[Lean LLM] loaded tiny.gguf")
    status, _ = host.free()
    assert status == 200
    t0 = time.time()
    while "freed tiny.gguf: ComfyUI's memory manager unloaded it" not in host.log():
        assert time.time() - t0 < 30, "POST /free did not free the LLM:\n" + host.log_tail(40)
        time.sleep(0.2)
    # and it comes back on the next run (the host dropped its caches too, so the loader runs again)
    entry = host.run(graphs.llm_preview(idea="a boat at dawn", seed=21, max_tokens=8))
    assert entry["outputs"]["p"]["lean_llm"][0]["tokens"] >= 1
    assert host.log().count("[Lean LLM] loaded tiny.gguf") == loads + 1


def test_cancel_stops_generation_between_tokens(host):
    # the 0.5B-shaped model: ~30 tokens/s on 2 cores and a 151936-token vocabulary, so it never reaches its
    # end-of-text token by chance before the cancel (the tiny model, with 461 tokens, soon would)
    harness.link_model(host.base, "llm", tiny_gguf.qwen05b_shaped("Q8_0"), "qwen05b-shaped.gguf")
    g = graphs.llm_preview(loader=graphs.llm_loader(model="qwen05b-shaped.gguf", n_ctx=4096), idea="a long story",
                           seed=9, max_tokens=4000)
    with WsListener(host.url, host.client_id) as ws:
        pid = host.submit(g)
        ws.wait_for(lambda t, d: t == "lean.llm.stream" and d.get("delta"), timeout=120)
        host.interrupt()
        entry = host.wait(pid)
    kinds = [k for k, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    done = [m for m in ws.events("lean.llm.stream") if m.get("done")]
    assert done and done[-1]["tokens"] < 4000 and done[-1]["status"].startswith(f"cancelled after {done[-1]['tokens']} token")
    assert "p" not in entry["outputs"]
    assert f"[Lean LLM] cancelled after {done[-1]['tokens']} token" in host.log()
    assert host.alive()
    host.free()  # give the 530 MB back


def test_bad_model_file_is_a_clear_error(host, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"<!DOCTYPE html><html>404 not found</html>")
    harness.link_model(host.base, "llm", bad, "broken.gguf")
    entry = host.run(graphs.llm_preview(loader=graphs.llm_loader(model="broken.gguf")), expect_error=True)
    msg = host.error_text(entry)
    assert "LeanLLMLoader" in msg and "'broken.gguf' is not a GGUF file" in msg, msg
    assert host.alive()
    ok = host.run(graphs.llm_preview(idea="still alive", seed=2, max_tokens=4))
    assert ok["status"]["status_str"] == "success"


def test_openai_backend_unreachable_is_a_clear_error(host):
    port = harness.free_port()
    g = graphs.llm_preview(loader=graphs.llm_loader(backend="openai", base_url=f"http://127.0.0.1:{port}/v1"))
    entry = host.run(g, expect_error=True)
    msg = host.error_text(entry)
    assert f"cannot reach the OpenAI-compatible server at http://127.0.0.1:{port}/v1" in msg, msg


def test_kept_llm_is_freed_when_the_host_drops_the_loader_output(host):
    """The model lives as long as the host keeps the loader's output, like a stock loader's model: a prompt
    without the loader makes the host drop that output -- on 0.33 its RAM-pressure cache, whose default
    threshold for outputs of earlier prompts is all of the RAM (so it evicts them after the next node), on 0.3.64
    the classic cache (it keeps only the nodes of the current prompt) -- and the kept model goes with it."""
    g = graphs.llm_preview(loader=graphs.llm_loader(model="tiny.gguf", n_ctx=768), idea="a kite", seed=4,
                           max_tokens=4, keep_loaded=True)
    host.run(g)
    again = host.run(graphs.llm_preview(loader=graphs.llm_loader(model="tiny.gguf", n_ctx=768), idea="a kite",
                                        seed=5, max_tokens=4, keep_loaded=True))
    assert "l" in cached_nodes(again)  # same workflow: the loader's output and its model are kept
    freed = "[Lean LLM] freed tiny.gguf: ComfyUI's node cache let go of the loader's output"
    n_freed, n_loads = host.log().count(freed), host.log().count("[Lean LLM] loaded tiny.gguf")
    host.run({"a": {"class_type": "PrimitiveString", "inputs": {"value": "no LLM here"}},
              "v": {"class_type": "PreviewAny", "inputs": {"source": ["a", 0]}}})
    assert host.log().count(freed) == n_freed + 1, host.log_tail(30)
    entry = host.run(g)
    assert "l" not in cached_nodes(entry)
    assert host.log().count("[Lean LLM] loaded tiny.gguf") == n_loads + 1
