"""Tier 1 (issue 25): images for the LLM prompt writer -- pixels out of IMAGE tensors, the resize rule, the OpenAI
request's image_url part (what a loopback fake server received decides), projector files and pairing, and the
vision model in this process against raw llama_cpp's MTMDChatHandler (same model, image, seed and sampler)."""
import base64
import io
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from lean_testlib import images, prereq, tiny_gguf, tiny_vision
from lean_testlib.fake_openai import FakeOpenAI
from lean_nodes.core import llm, llm_backends, llm_gguf, llm_vision
from lean_nodes.core.llm_text import DESCRIBE, STEER, STYLE_PRESETS


def as_comfy(u8):
    """A uint8 picture as Load Image makes it: float32 / 255, batch of one."""
    return torch.from_numpy(u8.astype(np.float32) / 255.0)[None]


def decode_data_url(url):
    assert url.startswith("data:image/png;base64,"), url[:40]
    raw = base64.b64decode(url.split(",", 1)[1], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


# ------------------------------------------------------------------------------------------------ pixels

def test_load_image_pictures_come_back_byte_exact():
    u8 = images.photo_like(97, 61, seed=3)
    assert np.array_equal(llm_vision.rgb_u8(as_comfy(u8)), u8)
    assert np.array_equal(llm_vision.rgb_u8(as_comfy(u8)[0]), u8)  # one image without a batch axis
    assert np.array_equal(llm_vision.rgb_u8(as_comfy(u8).numpy()), u8)  # numpy works alike


def test_grey_rgba_and_odd_values():
    u8 = images.photo_like(40, 30, seed=4)
    grey = u8[..., :1]
    got = llm_vision.rgb_u8(as_comfy(grey))
    assert got.shape == (30, 40, 3) and all(np.array_equal(got[..., i], grey[..., 0]) for i in range(3))
    alpha = np.full((30, 40, 1), 7, np.uint8)
    assert np.array_equal(llm_vision.rgb_u8(as_comfy(np.concatenate([u8, alpha], -1))), u8)  # alpha dropped
    assert np.array_equal(llm_vision.rgb_u8(as_comfy(np.concatenate([grey, alpha], -1))), got)  # grey + alpha
    odd = torch.tensor([[[[float("nan"), 2.0, -1.0], [float("inf"), 0.5, float("-inf")]]]])
    assert llm_vision.rgb_u8(odd).tolist() == [[[0, 255, 0], [255, 128, 0]]]
    assert np.array_equal(llm_vision.rgb_u8(as_comfy(u8).to(torch.float16)),
                          np.rint(np.clip(as_comfy(u8).to(torch.float16).float().numpy()[0], 0, 1) * 255))


@pytest.mark.parametrize("shape, what", [((2, 3), "must be an IMAGE"), ((1, 0, 5, 3), "no pixels"),
                                         ((1, 4, 4, 5), "5 channels"), ((0, 4, 4, 3), "no pixels")])
def test_bad_image_shapes_are_clear_errors(shape, what):
    with pytest.raises(llm_vision.ImageError, match=what):
        llm_vision.rgb_u8(torch.zeros(shape))


def test_resize_rule_never_enlarges_and_keeps_the_aspect():
    assert llm_vision.fit_size(1, 1, 1 << 20) == (1, 1)
    assert llm_vision.fit_size(1024, 1024, 1 << 20) == (1024, 1024)
    for w, h in [(8192, 8192), (4000, 300), (300, 4000), (1025, 1024), (100000, 2)]:
        nw, nh = llm_vision.fit_size(w, h, 1 << 20)
        assert nw * nh <= 1 << 20 and nw <= w and nh <= h
        assert abs(nw / nh - w / h) <= (w / h) * (1 / nh + 1 / nw) + 1e-9, (w, h, nw, nh)
    tiny = images.photo_like(3, 2, seed=1)
    assert np.array_equal(llm_vision.picture(as_comfy(tiny), 0, 1 << 20), tiny)


def test_shrunk_picture_is_the_area_average():
    u8 = images.photo_like(640, 480, seed=5)
    got = llm_vision.picture(as_comfy(u8), 0, 160 * 120)
    assert got.shape == (120, 160, 3)
    # an independent reference: PIL's box filter of the same picture (4 x 4 blocks)
    ref = np.asarray(Image.fromarray(u8).resize((160, 120), Image.BOX))
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_8192_square_costs_a_band_not_the_picture():
    big = torch.full((1, 1, 1, 3), 0.5).expand(1, 8192, 8192, 3)  # a view: no 805 MB tensor in the test
    tracemalloc.start()
    try:
        got = llm_vision.picture(big, 0, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.shape == (1024, 1024, 3) and (got == 128).all()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB for an 8192 x 8192 picture"  # 8192^2 RGB bytes: 192 MiB


def peak_bytes(batch, n):
    """Peak Python/numpy allocation while the node's loop turns pictures 0..n-1 into bytes, one after another."""
    tracemalloc.start()
    try:
        for i in range(n):
            llm_vision.picture(batch, i, 1 << 20)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_batch_of_64_costs_one_picture():
    batch = torch.rand(64, 256, 256, 3)
    one, all64 = peak_bytes(batch, 1), peak_bytes(batch, 64)
    assert all64 < one * 1.25 + 65536, f"{all64} bytes for 64 pictures, {one} for one"
    assert one < 5 * 256 * 256 * 3 * 4  # a few float copies of one picture, not of the batch


def test_data_url_is_a_png_of_the_same_pixels():
    u8 = images.photo_like(33, 17, seed=2)
    assert np.array_equal(decode_data_url(llm_vision.data_url(u8)), u8)


# ------------------------------------------------------------------------------------------------ projectors

def test_projector_header_and_pairing(tmp_path):
    info = llm_vision.read_projector(tiny_vision.projector())
    assert (info.type, info.output_dim, info.patch_size, info.fixed_size) == ("qwen2vl_merger", 64, 14, False)
    assert info.max_pixels() == llm_vision.MAX_PIXELS
    arch, width = llm_vision.model_width(tiny_vision.text_model())
    assert (arch, width) == ("qwen2vl", 64)
    assert llm_vision.pairs(info, width) is True
    assert llm_vision.pairs(llm_vision.read_projector(tiny_vision.projector(n_embd_out=96)), width) is False
    with pytest.raises(llm_gguf.GGUFError, match="is not a vision projector"):
        llm_vision.read_projector(tiny_vision.text_model())
    bad = tmp_path / "mmproj-broken.gguf"
    bad.write_bytes(tiny_vision.projector().read_bytes()[:300])
    with pytest.raises(llm_gguf.GGUFError, match="mmproj-broken.gguf"):
        llm_vision.read_projector(bad)
    assert llm_vision.is_projector_name("sub/mmproj-Qwen2.5-VL-3B-f16.gguf")
    assert not llm_vision.is_projector_name("Qwen2.5-VL-3B-Q4_K_M.gguf")


# ------------------------------------------------------------------------------------------------ OpenAI backend

def test_openai_request_carries_one_png_per_image():
    pics = [images.photo_like(64 + 8 * i, 48, seed=i) for i in range(3)]
    with FakeOpenAI() as srv:
        h = llm.load("openai", base_url=srv.base_url, cache=llm.ModelCache())
        for p in pics:
            r = llm.write_prompt(h, "", style="describe for Flux", seed=1, max_tokens=8, image=p)
            assert r.prompt == "red fox"
        bodies = srv.bodies
    assert len(bodies) == 3
    for body, p in zip(bodies, pics):
        user = body["messages"][-1]
        parts = [x for m in body["messages"] for x in (m["content"] if isinstance(m["content"], list) else [])]
        urls = [x["image_url"]["url"] for x in parts if x.get("type") == "image_url"]
        assert len(urls) == 1, parts
        assert np.array_equal(decode_data_url(urls[0]), p)  # right MIME, right size, same pixels
        assert user["content"][-1] == {"type": "text", "text": DESCRIBE}
        assert body["messages"][0] == {"role": "system", "content": STYLE_PRESETS["describe for Flux"]}


def test_openai_server_refusing_images_is_a_clear_error():
    with FakeOpenAI(refuse_images=True) as srv:
        h = llm.load("openai", base_url=srv.base_url, cache=llm.ModelCache())
        with pytest.raises(llm_backends.CannotSee, match="refused the request with the image .*400.*cannot see "
                                                          "images.*--mmproj"):
            llm.write_prompt(h, "", style="tags", seed=1, max_tokens=8, image=images.photo_like(8, 8))
        # the same server still answers text
        assert llm.write_prompt(h, "a fox", style="SDXL", seed=1, max_tokens=8).prompt == "red fox"


# ------------------------------------------------------------------------------------------------ llama_cpp

llama_cpp = pytest.importorskip("llama_cpp", reason=prereq("llama-cpp-python not installed"))


@pytest.fixture(scope="module")
def vision():
    cache = llm.ModelCache()
    h = llm.load("llama_cpp", path=str(tiny_vision.text_model()), n_ctx=1024,
                 mmproj=str(tiny_vision.projector()), cache=cache)
    yield h
    cache.free()


def raw_reference(pic, seed, max_tokens, style="describe for SDXL", text=DESCRIBE):
    """The same request through raw llama_cpp with its own MTMDChatHandler (tiny_vision.raw_reference)."""
    return tiny_vision.raw_reference(pic, seed, max_tokens, STYLE_PRESETS[style], text)


@pytest.mark.parametrize("seed, style", [(5, "describe for SDXL"), (3, "tags"), (11, "caption (training data, one line)")])
def test_vision_model_matches_raw_llama_cpp(vision, seed, style):
    pic = images.photo_like(112, 84, seed=0)
    got = llm.write_prompt(vision, "", style=style, seed=seed, max_tokens=16, image=pic)
    assert got.n_tokens == 16 and got.raw == raw_reference(pic, seed, 16, style)
    assert (got.image_tokens, got.image_grid) == (12, (4, 3)) == (tiny_vision.tokens_for(112, 84)[0], (4, 3))
    steer = llm.write_prompt(vision, "make it winter", style=style, seed=seed, max_tokens=16, image=pic)
    assert steer.raw == raw_reference(pic, seed, 16, style, STEER.format(idea="make it winter"))


def test_image_reaches_the_model_and_seed_decides(vision):
    a, b = images.photo_like(112, 84, seed=0), images.photo_like(112, 84, seed=1)
    ra = llm.write_prompt(vision, "", style="tags", seed=7, max_tokens=16, image=a).raw
    assert llm.write_prompt(vision, "", style="tags", seed=7, max_tokens=16, image=a).raw == ra
    assert llm.write_prompt(vision, "", style="tags", seed=7, max_tokens=16, image=b).raw != ra
    assert llm.write_prompt(vision, "", style="tags", seed=8, max_tokens=16, image=a).raw != ra


@pytest.mark.parametrize("w, h", [(1, 1), (56, 56), (224, 112), (300, 200)])
def test_image_tokens_follow_the_patch_grid(vision, w, h):
    got = llm.write_prompt(vision, "", style="tags", seed=1, max_tokens=1, image=images.photo_like(w, h, seed=2))
    n, gx, gy = tiny_vision.tokens_for(w, h)
    assert (got.image_tokens, got.image_grid) == (n, (gx, gy)), (w, h)


def test_text_model_without_projector_cannot_see():
    cache = llm.ModelCache()
    h = llm.load("llama_cpp", path=str(tiny_vision.text_model()), n_ctx=512, cache=cache)
    try:
        with pytest.raises(llm_backends.CannotSee, match="cannot see images: no projector.*mmproj"):
            llm.write_prompt(h, "", style="tags", seed=1, max_tokens=4, image=images.photo_like(8, 8))
        assert llm.write_prompt(h, "a fox", style="SDXL", seed=1, max_tokens=4).n_tokens >= 1
    finally:
        cache.free()


def test_projector_of_another_model_is_refused_before_llama_cpp():
    with pytest.raises(ValueError, match="does not fit model .*96-wide .* 64 wide"):
        llm.load("llama_cpp", path=str(tiny_vision.text_model()), n_ctx=512,
                 mmproj=str(tiny_vision.projector(n_embd_out=96)), cache=llm.ModelCache())


def test_a_text_model_is_not_a_projector_and_old_fixtures_are_unchanged(tmp_path):
    with pytest.raises(llm_gguf.GGUFError, match="not a vision projector"):
        llm.load("llama_cpp", path=str(tiny_vision.text_model()), n_ctx=512,
                 mmproj=str(tiny_gguf.tiny_model("chatml")), cache=llm.ModelCache())
    # tiny_gguf grew options for the vision model; the text fixtures everyone caches stay byte-identical
    again = tiny_gguf.write_model(tmp_path / "t.gguf", template="chatml", qtype="Q8_0", seed=0)
    assert again.read_bytes() == tiny_gguf.tiny_model("chatml").read_bytes()


def test_projector_is_freed_with_the_model():
    cache = llm.ModelCache()
    h = llm.load("llama_cpp", path=str(tiny_vision.text_model()), n_ctx=512, mmproj=str(tiny_vision.projector()),
                 cache=cache)
    m = h.model()
    assert m.sees_images and m.mtmd_ctx is not None
    assert h.free() == 1
    assert m.mtmd_ctx is None and m.llm is None and not m.sees_images
    # loaded again on demand, projector included
    assert h.model().sees_images
    cache.free()
