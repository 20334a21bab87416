"""Tier 2: LeanCanny inside a real ComfyUI: LoadImage -> LeanCanny -> SaveImage, compared with cv2.Canny
called directly on the same uint8 image (loaded the way LoadImage does: PIL -> RGB -> float/255)."""
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from lean_testlib import images
from lean_testlib.harness import PromptFailed

pytestmark = pytest.mark.tier2

PHOTO = "lean_canny_photo.png"
DEFAULTS = dict(low_threshold=100, high_threshold=200, auto="off", sigma=0.33, blur=0, aperture="3",
                l2_gradient=False, resolution=0, invert=False)


@pytest.fixture(scope="module")
def host(comfy):
    shutil.copy(images.photo_png(), comfy.base / "input" / PHOTO)
    return comfy


def reference_u8():
    """What LoadImage hands the node, turned back into uint8 independently (numpy, float32, rint)."""
    img = Image.open(images.photo_png()).convert("RGB")
    x = np.array(img).astype(np.float32) / 255.0
    u8 = np.rint(np.clip(x, 0, 1) * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(u8, np.array(img))     # the round trip itself is lossless
    return u8


def canny_prompt(prefix, batch=1, **params):
    p = dict(DEFAULTS, **params)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": PHOTO}},
        "2": {"class_type": "LeanCanny", "inputs": {"image": ["1", 0], **p}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": prefix + "_mask"}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}},
    }
    if batch > 1:
        prompt["7"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": batch}}
        prompt["2"]["inputs"]["image"] = ["7", 0]
    return prompt


def saved(host, entry, node_id):
    files = [host.base / "output" / it.get("subfolder", "") / it["filename"]
             for it in entry["outputs"][node_id]["images"]]
    assert files and all(f.is_file() for f in files), files
    return [np.asarray(Image.open(f)) for f in files]


def thresholds_text(entry):
    return entry["outputs"]["6"]["text"][0]


def test_object_info_widget_order(host):
    info = host.object_info("LeanCanny")
    assert info["display_name"] == "Canny Edges (OpenCV)"
    assert info["input_order"]["required"] == ["image", "low_threshold", "high_threshold", "auto", "sigma", "blur",
                                               "aperture", "l2_gradient", "resolution", "invert"]
    assert info["output"] == ["IMAGE", "MASK", "STRING"]


def test_saved_png_equals_direct_cv2_canny(host):
    u8 = reference_u8()
    ref = cv2.Canny(u8, 100, 200)
    assert 0.01 < (ref > 0).mean() < 0.5, "degenerate reference edge map"
    entry = host.run(canny_prompt("lean_canny_manual"))
    (img,) = saved(host, entry, "3")
    (mask,) = saved(host, entry, "5")
    assert img.shape == (192, 256, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], ref)
        np.testing.assert_array_equal(mask[..., c], ref)
    assert thresholds_text(entry) == "image 0: low=100 high=200 (manual)"


def test_auto_median_blur_resolution_invert(host):
    u8 = reference_u8()
    h, w = 128, int(round(256 * 128 / 192 / 8)) * 8                       # short side 128, long side x8
    src = cv2.GaussianBlur(cv2.resize(u8, (w, h), interpolation=cv2.INTER_AREA), (5, 5), 0)
    m = float(np.median(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)))
    lo, hi = int(max(0, 0.6 * m)), int(min(255, 1.4 * m))
    ref = cv2.Canny(src, lo, hi, apertureSize=3, L2gradient=True)
    entry = host.run(canny_prompt("lean_canny_auto", auto="median", sigma=0.4, blur=5, resolution=128,
                                  l2_gradient=True, invert=True))
    (img,) = saved(host, entry, "3")
    (mask,) = saved(host, entry, "5")
    assert img.shape == (h, w, 3)
    np.testing.assert_array_equal(img[..., 0], 255 - ref)                 # inverted image
    np.testing.assert_array_equal(mask[..., 0], ref)                      # mask never inverted
    assert thresholds_text(entry).startswith(f"image 0: low={lo} high={hi} (auto=median")


def test_batch_of_three_with_otsu(host):
    u8 = reference_u8()
    t, _ = cv2.threshold(cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    ref = cv2.Canny(u8, int(t) // 2, int(t), apertureSize=5)
    entry = host.run(canny_prompt("lean_canny_batch", batch=3, auto="otsu", aperture="5"))
    imgs = saved(host, entry, "3")
    assert len(imgs) == 3
    for img in imgs:
        np.testing.assert_array_equal(img[..., 1], ref)
    assert len(thresholds_text(entry).splitlines()) == 3


def test_low_above_high_swaps_with_warning(host):
    u8 = reference_u8()
    entry = host.run(canny_prompt("lean_canny_swap", low_threshold=210, high_threshold=90))
    (img,) = saved(host, entry, "3")
    np.testing.assert_array_equal(img[..., 0], cv2.Canny(u8, 90, 210))
    assert "swapped" in thresholds_text(entry)
    assert "low_threshold 210 > high_threshold 90; swapped" in host.log()


def test_even_blur_is_a_clear_error_and_nothing_is_written(host):
    with pytest.raises(PromptFailed) as e:
        host.run(canny_prompt("lean_canny_bad_blur", blur=4))
    text = str(e.value)
    assert "LeanCanny" in text and "blur" in text and "odd" in text, text
    assert not list((host.base / "output").glob("lean_canny_bad_blur*"))
    assert host.alive()
    host.run(canny_prompt("lean_canny_after_error"))                     # the server still works


def test_bad_resolution_is_a_clear_error(host):
    with pytest.raises(PromptFailed) as e:
        host.run(canny_prompt("lean_canny_bad_res", resolution=500))
    assert "multiple of 8" in str(e.value)
    assert not list((host.base / "output").glob("lean_canny_bad_res*"))


def test_unknown_aperture_is_refused_by_validation(host):
    with pytest.raises(PromptFailed) as e:
        host.submit(canny_prompt("lean_canny_bad_ap", aperture="4"))
    assert "aperture" in str(e.value)
    assert host.alive()
