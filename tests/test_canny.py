"""Tier 1: LeanCanny's core against cv2 called directly on the same uint8 image.

References never come from the code under test: the float->uint8 conversion is re-done in numpy,
Canny/blur/resize are plain cv2 calls, the auto thresholds are recomputed from their formulas
(numpy.median, a numpy Otsu)."""
import logging

import cv2
import numpy as np
import pytest
import torch

from lean_nodes.core import canny as C
from lean_testlib.images import photo_like


# ----------------------------------------------------------------------------- independent references

def ref_u8(x):
    """float array in [0,1]-ish -> uint8 the documented way, in numpy float32: NaN -> 0, clamp, x255, rint."""
    a = np.asarray(x, dtype=np.float32)
    a = np.where(np.isnan(a), np.float32(0), a)
    a = np.clip(a, np.float32(0), np.float32(1)) * np.float32(255)
    return np.rint(a).astype(np.uint8)


def ref_otsu(gray):
    """Otsu's threshold by brute force over the 256 levels (class 0 = values <= t), first maximum wins."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    levels = np.arange(256, dtype=np.float64)
    best_t, best_var = 0, -1.0
    for t in range(256):
        w0, w1 = p[:t + 1].sum(), p[t + 1:].sum()
        if w0 == 0 or w1 == 0:
            continue
        mu0 = (p[:t + 1] * levels[:t + 1]).sum() / w0
        mu1 = (p[t + 1:] * levels[t + 1:]).sum() / w1
        var = w0 * w1 * (mu0 - mu1) ** 2
        if var > best_var + 1e-12:
            best_t, best_var = t, var
    return best_t


def photos(n=3, w=160, h=120):
    return np.stack([photo_like(w, h, seed=s) for s in range(n)])


def as_float(u8):
    return torch.from_numpy(u8.astype(np.float32) / np.float32(255))


def edges_of(mask_tensor):
    """MASK (0/1 float) -> uint8 0/255 like cv2.Canny's output; asserts it is exactly binary."""
    m = mask_tensor.numpy()
    assert set(np.unique(m)) <= {0.0, 1.0}
    return (m * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- bit-identical manual mode

@pytest.mark.parametrize("aperture", [3, 5, 7])
@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("blur", [0, 5])
def test_manual_thresholds_bit_identical_to_cv2(aperture, l2, blur):
    u8 = photos()
    lo, hi = (60, 140) if aperture == 3 else (200, 255)
    image, mask, text, used = C.canny_batch(as_float(u8), lo, hi, blur=blur, aperture=str(aperture), l2_gradient=l2)
    assert image.shape == (3, 120, 160, 3) and mask.shape == (3, 120, 160)
    assert image.dtype == torch.float32 and mask.dtype == torch.float32
    for i in range(3):
        src = cv2.GaussianBlur(u8[i], (blur, blur), 0) if blur else u8[i]
        ref = cv2.Canny(src, lo, hi, apertureSize=aperture, L2gradient=l2)
        assert ref.any() and not ref.all(), "reference edge map is degenerate: the test would prove nothing"
        np.testing.assert_array_equal(edges_of(mask[i]), ref)
        for c in range(3):
            np.testing.assert_array_equal(edges_of(image[i, ..., c]), ref)
    assert used == [(lo, hi)] * 3
    assert text.splitlines()[0] == f"image 0: low={lo} high={hi} (manual)"


def test_invert_flips_image_not_mask():
    u8 = photos(2)
    image, mask, _, _ = C.canny_batch(as_float(u8), 50, 150, invert=True)
    for i in range(2):
        ref = cv2.Canny(u8[i], 50, 150)
        np.testing.assert_array_equal(edges_of(mask[i]), ref)
        np.testing.assert_array_equal(edges_of(image[i, ..., 0]), 255 - ref)


def test_input_tensor_is_not_modified():
    x = as_float(photos(2)) * 1.2 - 0.1          # out-of-range values that clamping must not write back
    before = x.clone()
    C.canny_batch(x, 50, 150, blur=3)
    assert torch.equal(x, before)


# ----------------------------------------------------------------------------- the uint8 conversion

def test_fp16_near_one_does_not_wrap():
    rng = np.random.default_rng(1)
    base = photos(1)[0].astype(np.float32) / 255
    base[:40] = rng.uniform(0.985, 1.02, base[:40].shape)      # a band of near-white, some above 1.0
    base[40:50] = rng.uniform(-0.02, 0.01, base[40:50].shape)  # and of near-black, some below 0
    x16 = torch.from_numpy(base).half()
    # the naive conversion done in half precision wraps/overflows on exactly this data
    naive = (x16 * 255).to(torch.uint8).numpy()
    expected = ref_u8(x16.float().numpy())
    assert (naive != expected).any(), "test data does not exercise the fp16 wrap"
    got = C.to_uint8(x16)
    np.testing.assert_array_equal(got, expected)
    _, mask, _, _ = C.canny_batch(x16[None], 80, 160)
    np.testing.assert_array_equal(edges_of(mask[0]), cv2.Canny(expected, 80, 160))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_conversion_matches_numpy_reference(dtype):
    rng = np.random.default_rng(2)
    vals = rng.uniform(-0.1, 1.1, (64, 64, 3)).astype(np.float32)
    vals[0, :8, 0] = (np.arange(8) + 0.5) / 255         # ties: x.5 after scaling
    vals[1, :4, 0] = [np.nan, np.inf, -np.inf, 1.0]
    x = torch.from_numpy(vals).to(dtype)
    expected = ref_u8(x.float().numpy())
    np.testing.assert_array_equal(C.to_uint8(x), expected)
    scratch = {}                                          # the batch loop's buffer-reusing path
    np.testing.assert_array_equal(C.to_uint8(x, scratch), expected)
    np.testing.assert_array_equal(C.to_uint8(x[:, :, :1], scratch), expected[..., 0])   # shape change
    np.testing.assert_array_equal(C.to_uint8(x, scratch), expected)
    assert expected[1, 0, 0] == 0 and expected[1, 1, 0] == 255 and expected[1, 2, 0] == 0


@pytest.mark.parametrize("shape", [(7, 9, 3), (5, 33, 1), (3, 3, 3), (4, 17, 4)])
def test_conversion_odd_sizes_and_strided_input(shape):
    """Odd widths exercise the scalar tails of cv2's SIMD loops; RGBA slices are strided."""
    rng = np.random.default_rng(5)
    vals = rng.uniform(-0.1, 1.1, shape).astype(np.float32)
    flat = vals.reshape(-1)
    flat[::5] = (rng.integers(0, 255, flat[::5].shape) + 0.5) / np.float32(255)   # ties
    flat[1::7] = np.nan
    flat[2::11] = np.inf
    x = torch.from_numpy(vals)
    if shape[-1] == 4:
        x = x[..., :3]
    np.testing.assert_array_equal(C.to_uint8(x), ref_u8(x.numpy()).squeeze(-1) if shape[-1] == 1
                                  else ref_u8(x.numpy()))


@pytest.fixture(params=["default", "no_ipp", "ipp_tozero_simd_trunc"])
def cv2_threshold_path(request, monkeypatch):
    """Run with each real code path cv2.threshold has for float32 on this build: IPP (the x86 default), OpenCV's
    own SIMD (IPP off), and the mix where TOZERO takes IPP and TRUNC does not.  cv2 treats NaN differently on
    each (IPP keeps it, the SIMD TRUNC turns it into the threshold), so a conversion that leans on any of them
    fails one of these.  setUseIPP is per thread; these images are small enough for one stripe in this thread."""
    was = cv2.ipp.useIPP()
    if request.param == "no_ipp":
        cv2.ipp.setUseIPP(False)
    elif request.param == "ipp_tozero_simd_trunc":
        real = cv2.threshold

        def threshold(src, thresh, maxval, type, dst=None):
            cv2.ipp.setUseIPP(was and type != cv2.THRESH_TRUNC)
            try:
                return real(src, thresh, maxval, type, dst=dst)
            finally:
                cv2.ipp.setUseIPP(was)
        monkeypatch.setattr(cv2, "threshold", threshold)
    yield request.param
    cv2.ipp.setUseIPP(was)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(9, 13, 3), (6, 35, 1), (5, 21, 4)])
def test_conversion_nan_inf_ties_on_every_cv2_path(cv2_threshold_path, shape, dtype):
    """NaN -> 0, -inf and negatives -> 0, +inf and > 1 -> 255, ties x.5 after *255 -> even, against the numpy
    reference, whichever way cv2 handles NaN; strided RGBA and every float dtype."""
    rng = np.random.default_rng(11)
    vals = rng.uniform(-0.2, 1.2, shape).astype(np.float32)
    flat = vals.reshape(-1)
    flat[::4] = (rng.integers(0, 255, flat[::4].shape) + 0.5) / np.float32(255)     # ties
    flat[1::6] = np.nan
    flat[2::9] = np.inf
    flat[3::10] = -np.inf
    flat[5::13] = -np.float32(np.nan)
    x = torch.from_numpy(vals).to(dtype)
    if shape[-1] == 4:
        x = x[..., :3]
    expected = ref_u8(x.float().numpy())
    expected = expected[..., 0] if shape[-1] == 1 else expected
    isnan = np.isnan(x.float().numpy())
    isnan = isnan[..., 0] if shape[-1] == 1 else isnan
    assert isnan.any() and (expected[isnan] == 0).all()
    np.testing.assert_array_equal(C.to_uint8(x), expected)
    np.testing.assert_array_equal(C.to_uint8(x, {}), expected)


def test_canny_on_nan_image_matches_cv2_on_reference_uint8(cv2_threshold_path):
    """Canny on an image with NaN holes is cv2.Canny on the reference uint8 image (NaN -> black)."""
    u8 = photos(1)[0]
    x = u8.astype(np.float32) / np.float32(255)
    x[30:50, 40:90] = np.nan
    x[60:64, :] = np.inf
    expected = ref_u8(x)
    _, mask, _, _ = C.canny_batch(torch.from_numpy(x)[None], 60, 140)
    ref = cv2.Canny(expected, 60, 140)
    assert ref[28:52, 38:92].any(), "the NaN hole makes no edges: the test would prove nothing"
    np.testing.assert_array_equal(edges_of(mask[0]), ref)


def test_tensor_that_requires_grad_is_accepted():
    u8 = photos(1)
    x = as_float(u8).requires_grad_(True)
    _, mask, _, _ = C.canny_batch(x, 50, 150)
    np.testing.assert_array_equal(edges_of(mask[0]), cv2.Canny(u8[0], 50, 150))


def test_float_roundtrip_of_uint8_is_exact():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None].repeat(3, -1)
    np.testing.assert_array_equal(C.to_uint8(as_float(u8)), u8)


# ----------------------------------------------------------------------------- shapes and channels

def test_grayscale_rgba_single_and_uint8_inputs():
    u8 = photos(2)
    gray = np.stack([cv2.cvtColor(u, cv2.COLOR_RGB2GRAY) for u in u8])
    ref_gray = [cv2.Canny(g, 40, 120) for g in gray]
    ref_rgb = [cv2.Canny(u, 40, 120) for u in u8]

    _, m, _, _ = C.canny_batch(as_float(gray[..., None]), 40, 120)          # [B,H,W,1]
    assert [np.array_equal(edges_of(m[i]), ref_gray[i]) for i in range(2)] == [True, True]
    _, m, _, _ = C.canny_batch(as_float(gray), 40, 120)                     # [B,H,W] (a MASK)
    assert m.shape == (2, 120, 160) and np.array_equal(edges_of(m[1]), ref_gray[1])
    _, m, _, _ = C.canny_batch(as_float(gray[0]), 40, 120)                  # [H,W]
    assert m.shape == (1, 120, 160) and np.array_equal(edges_of(m[0]), ref_gray[0])
    _, m, _, _ = C.canny_batch(as_float(u8[0]), 40, 120)                    # [H,W,3] single image
    assert m.shape == (1, 120, 160) and np.array_equal(edges_of(m[0]), ref_rgb[0])

    alpha = np.random.default_rng(3).integers(0, 256, u8.shape[:3] + (1,), dtype=np.uint8)
    rgba = np.concatenate([u8, alpha], -1)
    img, m, _, _ = C.canny_batch(as_float(rgba), 40, 120)                   # alpha ignored
    assert img.shape == (2, 120, 160, 3)
    assert all(np.array_equal(edges_of(m[i]), ref_rgb[i]) for i in range(2))

    _, m, _, _ = C.canny_batch(torch.from_numpy(u8), 40, 120)               # uint8 tensor, 0..255
    assert all(np.array_equal(edges_of(m[i]), ref_rgb[i]) for i in range(2))


# ----------------------------------------------------------------------------- auto thresholds

@pytest.mark.parametrize("sigma", [0.0, 0.33, 0.8])
@pytest.mark.parametrize("blur", [0, 3])
def test_auto_median_matches_formula(sigma, blur):
    u8 = photos(3)
    _, mask, text, used = C.canny_batch(as_float(u8), 0, 0, auto="median", sigma=sigma, blur=blur)
    for i in range(3):
        src = cv2.GaussianBlur(u8[i], (blur, blur), 0) if blur else u8[i]
        m = float(np.median(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)))
        lo, hi = int(max(0, (1.0 - sigma) * m)), int(min(255, (1.0 + sigma) * m))
        assert used[i] == (lo, hi)
        np.testing.assert_array_equal(edges_of(mask[i]), cv2.Canny(src, lo, hi))
        assert f"low={lo} high={hi} (auto=median" in text.splitlines()[i]


def test_median_of_matches_numpy_median_odd_and_even():
    rng = np.random.default_rng(4)
    for shape in [(5, 7), (4, 6), (1, 2), (3, 3), (10, 10)]:
        for _ in range(20):
            g = rng.integers(0, 256, shape, dtype=np.uint8)
            assert C.median_of(g) == float(np.median(g)), g
    g = np.array([[10, 10], [21, 21]], np.uint8)      # even count, two different middles -> 15.5
    assert C.median_of(g) == 15.5


def test_auto_otsu_matches_bruteforce():
    u8 = photos(3)
    _, mask, text, used = C.canny_batch(as_float(u8), 0, 0, auto="otsu")
    for i in range(3):
        gray = cv2.cvtColor(u8[i], cv2.COLOR_RGB2GRAY)
        hi = ref_otsu(gray)
        lo = hi // 2
        assert used[i] == (lo, hi)
        np.testing.assert_array_equal(edges_of(mask[i]), cv2.Canny(u8[i], lo, hi))
        assert f"auto=otsu, otsu={hi}" in text.splitlines()[i]


def test_auto_thresholds_differ_per_image():
    dark = (photos(1)[0] * 0.3).astype(np.uint8)
    bright = photos(1)[0]
    _, _, _, used = C.canny_batch(as_float(np.stack([dark, bright])), 0, 0, auto="median")
    assert used[0] != used[1] and used[0][1] < used[1][1]


# ----------------------------------------------------------------------------- resolution

@pytest.mark.parametrize("res,size,interp", [(64, (64, 88), cv2.INTER_AREA),      # 160x120 -> short side 64
                                             (240, (240, 320), cv2.INTER_CUBIC),  # upscale
                                             (120, (120, 160), cv2.INTER_AREA)])  # same size: no-op resize
def test_resolution_resizes_short_side(res, size, interp):
    u8 = photos(2)
    h, w = size
    assert w == int(round(160 * res / 120 / 8)) * 8
    image, mask, _, _ = C.canny_batch(as_float(u8), 50, 150, resolution=res)
    assert image.shape == (2, h, w, 3) and mask.shape == (2, h, w)
    for i in range(2):
        src = u8[i] if (h, w) == (120, 160) else cv2.resize(u8[i], (w, h), interpolation=interp)
        np.testing.assert_array_equal(edges_of(mask[i]), cv2.Canny(src, 50, 150))


def test_resolution_portrait():
    u8 = np.ascontiguousarray(photos(1, w=120, h=200))
    _, mask, _, _ = C.canny_batch(as_float(u8), 50, 150, resolution=96)
    assert mask.shape == (1, 160, 96)


# ----------------------------------------------------------------------------- bad input

def test_low_above_high_is_swapped_with_warning(caplog):
    u8 = photos(1)
    with caplog.at_level(logging.WARNING, logger="lean.canny"):
        _, mask, text, used = C.canny_batch(as_float(u8), 180, 60)
    assert used == [(60, 180)]
    assert "swapped" in text and "swapped" in caplog.text and "180" in caplog.text
    np.testing.assert_array_equal(edges_of(mask[0]), cv2.Canny(u8[0], 60, 180))


@pytest.mark.parametrize("kwargs,words", [
    (dict(blur=4), ["blur", "odd", "3 or 5"]),
    (dict(blur=-1), ["blur"]),
    (dict(blur=33), ["blur", "31"]),
    (dict(aperture=4), ["aperture", "3, 5 or 7"]),
    (dict(aperture="9"), ["aperture"]),
    (dict(aperture=1), ["aperture"]),
    (dict(low_threshold=-1), ["low_threshold", "0 to 255"]),
    (dict(high_threshold=300), ["high_threshold", "0 to 255"]),
    (dict(auto="mean"), ["auto", "median"]),
    (dict(sigma=1.5), ["sigma", "0.0 to 1.0"]),
    (dict(resolution=9000), ["resolution", "8192"]),
    (dict(resolution=500), ["resolution", "multiple of 8", "496 or 504"]),
    (dict(resolution=-8), ["resolution"]),
])
def test_bad_parameters_give_clear_errors(kwargs, words):
    args = dict(low_threshold=50, high_threshold=150)
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        C.canny_batch(as_float(photos(1)), **args)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("x,words", [
    (torch.zeros(0, 64, 64, 3), ["empty", "0 images"]),
    (torch.zeros(1, 1, 1, 3), ["1x1", "at least 3x3"]),
    (torch.zeros(2, 2, 50, 3), ["50x2", "too small"]),
    (torch.zeros(1, 8, 8, 2), ["2 channels"]),
    (torch.zeros(2, 3, 8, 8, 3), ["shape"]),
    (torch.zeros(1, 8, 8, 3, dtype=torch.int32), ["dtype"]),
    ("not an image", ["IMAGE"]),
])
def test_bad_images_give_clear_errors(x, words):
    with pytest.raises(ValueError) as e:
        C.canny_batch(x, 50, 150)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_huge_output_is_refused_before_allocating():
    x = torch.zeros(1, 3, 2000, 3)                 # 3 px tall: short side 64 -> long side 42667 px
    with pytest.raises(ValueError, match="longer than 16384"):
        C.canny_batch(x, 50, 150, resolution=64)
    x = torch.zeros(4, 64, 64, 3)
    with pytest.raises(ValueError, match=r"GiB of RAM.*lower resolution or split the batch"):
        C.canny_batch(x, 50, 150, resolution=8192, max_output_bytes=2**30)


def test_flat_image_gives_no_edges_in_every_mode():
    x = torch.full((2, 32, 32, 3), 0.5)
    for auto in C.AUTO_MODES:
        image, mask, _, _ = C.canny_batch(x, 10, 20, auto=auto)
        assert not mask.any() and not image.any()


def test_progress_called_per_image_and_can_interrupt():
    calls = []
    C.canny_batch(as_float(photos(3)), 50, 150, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]

    class Stop(Exception):
        pass

    def stop(d, t):
        raise Stop()
    with pytest.raises(Stop):
        C.canny_batch(as_float(photos(3)), 50, 150, progress=stop)


# ----------------------------------------------------------------------------- the node's contract

def test_node_inputs_in_order_with_tooltips():
    from lean_nodes.nodes import canny as node
    cls = node.LeanCanny
    req = cls.INPUT_TYPES()["required"]
    assert list(req) == ["image", "low_threshold", "high_threshold", "auto", "sigma", "blur", "aperture",
                         "l2_gradient", "resolution", "invert"]
    for name, spec in req.items():
        assert spec[1].get("tooltip"), name
    assert req["auto"][0] == ["off", "median", "otsu"]
    assert req["aperture"][0] == ["3", "5", "7"]
    assert (req["low_threshold"][1]["min"], req["low_threshold"][1]["max"]) == (0, 255)
    assert req["resolution"][1]["step"] == 8
    assert cls.RETURN_TYPES == ("IMAGE", "MASK", "STRING")
    assert cls.DESCRIPTION and cls.CATEGORY.startswith("lean/")
    assert node.NODE_DISPLAY_NAME_MAPPINGS["LeanCanny"] == "Canny Edges (OpenCV)"


def test_core_does_not_import_cv2_at_module_level():
    import ast
    import pathlib
    src = pathlib.Path(C.__file__).read_text()
    top = [n for n in ast.parse(src).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top for a in n.names} | {getattr(n, "module", None) for n in top}
    assert "cv2" not in names and not any(str(n).startswith("comfy") for n in names)
