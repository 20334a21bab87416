"""Tier 2 (issue 25): image to prompt through a real ComfyUI.  Load Image -> LLM Prompt Writer (the tiny Qwen2-VL-style
model + its mmproj, loaded by llama.cpp's mtmd) -> PreviewAny / Prompt Batch.

References: raw llama_cpp with its own MTMDChatHandler in this test process (same model, projector, PNG, seed and
sampler: an independent template renderer, PNG decoder and prompt evaluation), the stock PreviewAny node (what
really flows out), the host's websocket stream, and the patch grid of tiny_vision.tokens_for (Qwen2-VL's smart
resize) after the pack's stated resize rule.  A loopback fake OpenAI server records what the openai backend sent.
"""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from lean_testlib import graphs, harness, images, prereq, tiny_vision
from lean_testlib.fake_openai import FakeOpenAI
from lean_testlib.ws import WsListener
from lean_nodes.core.llm_text import DESCRIBE, STEER, STYLE_PRESETS

pytestmark = pytest.mark.tier2

llama_cpp = pytest.importorskip("llama_cpp", reason=prereq("llama-cpp-python not installed: "
                                "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install llama-cpp-python"))

VL, PROJ = "vl/lean_tiny_vl.gguf", "vl/mmproj-lean_tiny_vl.gguf"
PICS = {f"lean_vl_{i}.png": images.photo_like(112, 84, seed=i) for i in range(3)}


@pytest.fixture(scope="module")
def host(shared_hosts):
    def setup(base):
        harness.link_model(base, "llm", tiny_vision.text_model(), VL)
        harness.link_model(base, "llm", tiny_vision.projector(), PROJ)
        for name, pic in PICS.items():
            Image.fromarray(pic).save(base / "input" / name)
        Image.fromarray(images.photo_like(120, 90, seed=7)).convert("L").save(base / "input" / "lean_vl_grey.png")
        rgba = np.concatenate([images.photo_like(120, 90, seed=8), np.full((90, 120, 1), 90, np.uint8)], -1)
        Image.fromarray(rgba, "RGBA").save(base / "input" / "lean_vl_rgba.png")
    with shared_hosts.use(setup=setup) as h:
        yield h


def loader(mmproj=PROJ, model=VL, n_ctx=1024):
    g = graphs.llm_loader(model=model, n_ctx=n_ctx)
    g["inputs"]["mmproj"] = mmproj
    return g


def load_image(name):
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def vision_graph(image_node, style="describe for SDXL", idea="", seed=5, max_tokens=16, **kw):
    g = graphs.llm_preview(loader=kw.pop("loader_node", None) or loader(), idea=idea, style=style, seed=seed,
                           max_tokens=max_tokens, **kw)
    g["i"] = image_node
    g["p"]["inputs"]["image"] = ["i", 0]
    g["w"] = {"class_type": "PreviewAny", "inputs": {"source": ["p", 2]}}  # the list output
    return g


def raw_reference(pic, seed, max_tokens, style="describe for SDXL", text=DESCRIBE):
    """The same request through raw llama_cpp with its own MTMDChatHandler (tiny_vision.raw_reference)."""
    return tiny_vision.raw_reference(pic, seed, max_tokens, STYLE_PRESETS[style], text)


def plain(text):
    """The text as the prompt output shows it when it has nothing to trim but whitespace (else None)."""
    t = text.strip()
    return t if t and t[0] not in "\"'`\u201c\u201d*" and "think>" not in t and "prompt" not in t.lower()[:12] \
        and "\n" not in t else None


def plain_seed(pic, max_tokens=16, style="describe for SDXL"):
    for seed in range(1, 40):
        ref = raw_reference(pic, seed, max_tokens, style)
        if plain(ref):
            return seed, ref
    pytest.fail("no seed with a plain reference text")


def ui(entry):
    return entry["outputs"]["p"]["lean_llm"][0]


def cached_nodes(entry):
    return {n for kind, msg in entry["status"]["messages"] if kind == "execution_cached" for n in msg["nodes"]}


def test_nodes_declare_the_vision_inputs(host):
    info = host.object_info("LeanLLMLoader")
    mmproj = info["input"]["optional"]["mmproj"]
    assert mmproj[0][:2] == ["(none)", "(auto: the mmproj beside the model)"] and PROJ in mmproj[0]
    assert mmproj[1]["default"] == "(none)" and mmproj[1]["advanced"] is True and mmproj[1]["tooltip"]
    assert PROJ not in info["input"]["required"]["model"][0] and VL in info["input"]["required"]["model"][0]
    p = host.object_info("LeanLLMPrompt")
    assert p["input"]["optional"]["image"][0] == "IMAGE" and p["input"]["optional"]["image"][1]["tooltip"]
    assert p["output_name"] == ["prompt", "thinking", "prompts"] and p["output_is_list"] == [False, False, True]
    assert p["input"]["required"]["style"][0][:4] == ["SD1.5 tags", "SDXL", "Flux / prose", "custom"]


def run_streamed(host, g):
    """Run a prompt; (history entry, the text writer 'p' streamed to the browser)."""
    with WsListener(host.url, host.client_id) as ws:
        entry = host.run(g)
    stream = [m for m in ws.events("lean.llm.stream") if m["node"] == "p"]
    assert stream and stream[0].get("start") and stream[-1].get("done")
    return entry, "".join(m.get("delta", "") for m in stream)


def test_image_in_tokens_out_streamed_and_seeded(host):
    pic = PICS["lean_vl_0.png"]
    seed, ref = plain_seed(pic)
    g = vision_graph(load_image("lean_vl_0.png"), seed=seed)
    entry, streamed = run_streamed(host, g)
    assert streamed == ref, "the stream is not what llama_cpp wrote"
    assert entry["outputs"]["v"]["text"][0] == plain(ref) == ui(entry)["prompt"]
    assert entry["outputs"]["w"]["text"] == [plain(ref)]
    n = tiny_vision.tokens_for(112, 84)[0]
    assert ui(entry)["image_tokens"] == [n] == [12] and f"image 1/1: 112x84, {n} image tokens" in ui(entry)["status"]
    # another seed, then the first again: a fresh run (not a cache hit) gives the same text
    other = host.run(vision_graph(load_image("lean_vl_0.png"), seed=seed + 100))
    assert ui(other)["prompt"] != ui(entry)["prompt"]
    again = host.run(g)
    assert "p" not in cached_nodes(again) and ui(again)["prompt"] == ui(entry)["prompt"]
    assert "sees images (projector mmproj-lean_tiny_vl.gguf, qwen2vl_merger)" in host.log()


def test_two_pictures_give_two_texts_and_the_idea_steers(host):
    _, a = run_streamed(host, vision_graph(load_image("lean_vl_0.png"), seed=3, style="tags"))
    _, b = run_streamed(host, vision_graph(load_image("lean_vl_1.png"), seed=3, style="tags"))
    assert a == raw_reference(PICS["lean_vl_0.png"], 3, 16, "tags")
    assert b == raw_reference(PICS["lean_vl_1.png"], 3, 16, "tags") and a != b
    _, steered = run_streamed(host, vision_graph(load_image("lean_vl_0.png"), seed=3, style="tags",
                                                 idea="make it winter"))
    assert steered == raw_reference(PICS["lean_vl_0.png"], 3, 16, "tags", STEER.format(idea="make it winter"))
    assert steered != a


def test_batch_of_three_gives_three_prompts_for_prompt_batch(host, comfy_sd15):
    g = vision_graph({"class_type": "ImageBatch", "inputs": {"image1": ["ab", 0], "image2": ["c", 0]}},
                     seed=4, max_tokens=12)
    g["ab"] = {"class_type": "ImageBatch", "inputs": {"image1": ["a", 0], "image2": ["b", 0]}}
    g["a"], g["b"], g["c"] = (load_image(f"lean_vl_{i}.png") for i in range(3))
    g["ck"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "lean_sd15.safetensors"}}
    g["pb"] = {"class_type": "LeanPromptBatch", "inputs": {"clip": ["ck", 1], "text": ["p", 0], "mode": "lines",
                                                           "count": 16, "seed": 0, "prefix": "", "suffix": ""}}
    g["n"] = {"class_type": "PreviewAny", "inputs": {"source": ["pb", 2]}}
    entry, streamed = run_streamed(host, g)
    refs = [raw_reference(PICS[f"lean_vl_{i}.png"], 4, 12) for i in range(3)]
    assert streamed == "\n".join(refs), "the batch's tokens are not llama_cpp's, picture by picture"
    prompts = entry["outputs"]["w"]["text"]
    assert len(prompts) == 3 and ui(entry)["image_tokens"] == [12, 12, 12]
    for got, ref in zip(prompts, refs):
        if plain(ref):
            assert got == plain(ref)
    assert entry["outputs"]["v"]["text"][0] == "\n".join(" ".join(p.split()) for p in prompts)
    assert entry["outputs"]["n"]["text"][0] == "3", "Prompt Batch did not read one prompt per picture"


@pytest.mark.parametrize("source, size", [
    ({"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0x336699}}, (1, 1)),
    ({"class_type": "EmptyImage", "inputs": {"width": 8192, "height": 8192, "batch_size": 1, "color": 0x808080}},
     (8192, 8192)),
    (load_image("lean_vl_grey.png"), (120, 90)),
    (load_image("lean_vl_rgba.png"), (120, 90)),
], ids=["1x1", "8192x8192", "grey", "rgba"])
def test_odd_pictures_work(host, source, size):
    entry = host.run(vision_graph(source, style="caption (training data, one line)", max_tokens=2,
                                  loader_node=loader(n_ctx=2048)))
    w, h = size
    sw, sh = (1024, 1024) if size == (8192, 8192) else size  # 1 megapixel at most, never enlarged
    n = tiny_vision.tokens_for(sw, sh)[0]
    status = ui(entry)["status"]
    assert ui(entry)["image_tokens"] == [n], status
    assert (f"{w}x{h} -> {sw}x{sh}" if (sw, sh) != (w, h) else f"{w}x{h}, {n} image tokens") in status, status


def test_rgba_with_alpha_joined_in_the_graph(host):
    """JoinImageWithAlpha (stock) makes a 4-channel IMAGE: alpha is dropped, the picture is the RGB one."""
    g = vision_graph({"class_type": "JoinImageWithAlpha", "inputs": {"image": ["a", 0], "alpha": ["m", 0]}},
                     seed=6, style="tags")
    g["a"] = load_image("lean_vl_0.png")
    g["m"] = {"class_type": "SolidMask", "inputs": {"value": 0.3, "width": 112, "height": 84}}
    joined = host.run(g)
    plain_rgb = host.run(vision_graph(load_image("lean_vl_0.png"), seed=6, style="tags"))
    assert ui(joined)["prompt"] == ui(plain_rgb)["prompt"]


def test_batch_of_64(host):
    g = vision_graph({"class_type": "RepeatImageBatch", "inputs": {"image": ["a", 0], "amount": 64}},
                     style="tags", max_tokens=1)
    g["a"] = load_image("lean_vl_2.png")
    rss0 = host.rss_bytes()
    entry = host.run(g)
    assert len(entry["outputs"]["w"]["text"]) == 64 and ui(entry)["image_tokens"] == [12] * 64
    assert ui(entry)["status"].startswith("64 prompts.")
    # one picture at a time: 64 x 112 x 84 is small either way; the tier-1 test measures the bound itself
    assert host.rss_bytes() - rss0 < 512 << 20


def test_auto_projector_and_model_that_cannot_see(host):
    auto = host.run(vision_graph(load_image("lean_vl_0.png"), seed=5,
                                 loader_node=loader(mmproj="(auto: the mmproj beside the model)")))
    explicit = host.run(vision_graph(load_image("lean_vl_0.png"), seed=5))
    assert ui(auto)["prompt"] == ui(explicit)["prompt"]
    entry = host.run(vision_graph(load_image("lean_vl_0.png"), loader_node=loader(mmproj="(none)")),
                     expect_error=True)
    msg = host.error_text(entry)
    assert "cannot see images: no projector is loaded" in msg and "mmproj" in msg, msg
    assert host.alive()


def test_openai_backend_sends_each_picture_once(host):
    with FakeOpenAI() as srv:
        g = vision_graph({"class_type": "ImageBatch", "inputs": {"image1": ["a", 0], "image2": ["b", 0]}},
                         style="tags", loader_node=graphs.llm_loader(model=VL,
                                                                     backend="openai", base_url=srv.base_url))
        g["a"], g["b"] = load_image("lean_vl_0.png"), load_image("lean_vl_1.png")
        entry = host.run(g)
        bodies = list(srv.bodies)
    assert entry["outputs"]["w"]["text"] == ["red fox", "red fox"]
    assert len(bodies) == 2
    for body, name in zip(bodies, ["lean_vl_0.png", "lean_vl_1.png"]):
        parts = body["messages"][-1]["content"]
        urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
        assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1]))).convert("RGB"))
        assert np.array_equal(got, PICS[name])
    with FakeOpenAI(refuse_images=True) as srv:
        g = vision_graph(load_image("lean_vl_0.png"), style="tags",
                         loader_node=graphs.llm_loader(model=VL, backend="openai",
                                                       base_url=srv.base_url))
        entry = host.run(g, expect_error=True)
    msg = host.error_text(entry)
    assert "refused the request with the image" in msg and "cannot see images" in msg and "--mmproj" in msg, msg


def test_system_check_lists_the_projector_and_its_model(host):
    text = host.run({"1": {"class_type": "LeanSystemCheck", "inputs": {}}})["outputs"]["1"]["text"][0]
    line = next(l for l in text.splitlines() if l.startswith(f"llm/{PROJ}:"))
    assert "vision projector (type qwen2vl_merger: pairs with " in line and VL in line, line
