"""Canny edge detection for ControlNet preprocessing: OpenCV's ``cv2.Canny`` on whole IMAGE batches.

Pure logic (torch, numpy, cv2); never imports comfy.  ``cv2`` is imported inside the functions
so importing this module stays cheap.

Pipeline per image, in this order:

1. ``to_uint8``: NaN -> 0, clamp to [0, 1], multiply by 255 and round half-to-even, all in
   float32 whatever the input dtype (fp16/bf16 are widened first, so values near 1.0 never
   wrap and nothing overflows).  RGBA loses its alpha channel; grayscale stays one channel.
2. ``resolution`` > 0: resize so the short side is ``resolution`` and the long side the nearest
   multiple of 8 keeping the aspect (``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_CUBIC``
   when growing).
3. ``blur`` > 0: ``cv2.GaussianBlur(img, (blur, blur), 0)``.
4. thresholds: manual, or from the image that Canny sees (the grayscale of step 3):
   ``median``: ``low = int(max(0, (1 - sigma) * m))``, ``high = int(min(255, (1 + sigma) * m))``
   with ``m`` the median gray value (``numpy.median`` semantics);
   ``otsu``: ``high = `` Otsu's threshold (``cv2.THRESH_OTSU``), ``low = int(high / 2)``.
5. ``cv2.Canny(img, low, high, apertureSize=aperture, L2gradient=l2_gradient)`` on the uint8
   image itself (3-channel images use OpenCV's colour gradient: the strongest channel wins).

Manual thresholds with ``low > high`` are swapped with a warning (``cv2.Canny`` would do the
same silently); the thresholds text says so.
"""
import logging

import numpy as np
import torch

log = logging.getLogger("lean.canny")

AUTO_MODES = ("off", "median", "otsu")
APERTURES = (3, 5, 7)
MAX_BLUR = 31
MAX_RESOLUTION = 8192
MAX_SIDE = 16384          # the longest side any image may reach after resizing
MIN_SIDE = 3              # Canny on anything smaller than 3x3 is meaningless


class CannyError(ValueError):
    """Bad input for Canny: the message names the input and what to do."""


# ----------------------------------------------------------------------------- input handling

def as_bhwc(images):
    """View ``images`` as a [B, H, W, C] tensor with C in (1, 3) (alpha dropped).

    Accepts [B,H,W,C] (C = 1, 3 or 4), a single [H,W,C] image (C = 1, 3 or 4), a [B,H,W]
    grayscale batch (a MASK) and a single [H,W] grayscale image; torch tensors or numpy arrays,
    floating point (0..1) or uint8 (0..255)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise CannyError(f"image: expected an IMAGE tensor, got {type(images).__name__}")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise CannyError(f"image: dtype {images.dtype} is not supported; pass a float IMAGE (0..1) or uint8 (0..255)")
    x = images
    if x.ndim == 2:
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[None] if x.shape[-1] in (1, 3, 4) else x[..., None]
    elif x.ndim != 4:
        raise CannyError(f"image: expected a [batch, height, width, channels] IMAGE, got shape {tuple(images.shape)}")
    b, h, w, c = x.shape
    if b == 0:
        raise CannyError("image: the batch is empty (0 images); connect a node that outputs at least one image")
    if c not in (1, 3, 4):
        raise CannyError(f"image: {c} channels is not supported; expected 1 (gray), 3 (RGB) or 4 (RGBA), "
                         f"shape {tuple(images.shape)}")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise CannyError(f"image: {w}x{h} pixels is too small for edge detection; "
                         f"Canny needs at least {MIN_SIDE}x{MIN_SIDE} (upscale the image first)")
    if c == 4:
        x = x[..., :3]
    return x


def to_uint8(img, scratch=None):
    """One image [H, W, C] (tensor, any float dtype or uint8) -> numpy uint8 [H, W] or [H, W, 3].

    Float input: NaN -> 0, clamp to [0, 1], x * 255 rounded half-to-even, in float32 (fp16,
    bf16 and fp64 are converted to float32 first).  Done with OpenCV, not torch: cv2's kernels
    are SIMD, and torch's OpenMP workers would keep spinning on the cores Canny is about to use.
    `scratch` (a dict) lets a batch loop reuse its buffers: the result then lives in that buffer
    until the next call."""
    import cv2

    img = img.detach()
    if img.device.type != "cpu":
        img = img.cpu()
    h, w, c = img.shape
    if img.dtype == torch.uint8:
        a = img.numpy()
        return np.ascontiguousarray(a[..., 0] if c == 1 else a)
    if img.dtype == torch.float32:
        a = img.numpy()
    elif img.dtype in (torch.float16, torch.float64):
        a = img.numpy().astype(np.float32)            # exact for fp16; fp64 rounds once to float32
    else:
        a = img.to(torch.float32).numpy()             # bf16: numpy has no such dtype
    a = a.reshape(h, w * c)                           # one channel for cv2 (copies only if strided)
    if scratch is None:
        scratch = {}
    if scratch.get("shape") != (h, w * c):
        scratch.update(shape=(h, w * c), f32=np.empty((h, w * c), np.float32), u8=np.empty((h, w * c), np.uint8))
    f32, u8 = scratch["f32"], scratch["u8"]
    # NaN is removed explicitly (patchNaNs compares bit patterns, so no SIMD/IPP NaN rule is involved) before any
    # min/max-like step sees it.  What cv2 does with NaN is not a documented contract, and it differs by code
    # path, not by major version: measured with opencv-python-headless 4.8.0.76 and 5.0.0.93 (both wheels) on
    # x86-64, `threshold` keeps NaN in TOZERO and TRUNC when it runs through IPP (the default), but without IPP
    # TOZERO's SIMD compare gives 0 and TRUNC's SIMD min(src, thresh) gives thresh (1.0 -> 255); and
    # convertScaleAbs(NaN) is 0 only because cvRound(NaN) is INT_MIN on x86 (saturated to 0).  The old
    # TOZERO -> TRUNC -> convertScaleAbs chain therefore gave 255 for NaN wherever TOZERO took the IPP path and
    # TRUNC did not.  With NaN gone: TOZERO maps -inf and negatives to 0, TRUNC caps at 1 (+inf too), and
    # convertScaleAbs multiplies by 255 in float32 and rounds half-to-even (cvRound), all plain comparisons.
    cv2.threshold(a, 0.0, 0.0, cv2.THRESH_TOZERO, dst=f32)
    cv2.patchNaNs(f32, 0.0)
    cv2.threshold(f32, 1.0, 1.0, cv2.THRESH_TRUNC, dst=f32)
    cv2.convertScaleAbs(f32, dst=u8, alpha=255.0)
    return u8.reshape(h, w) if c == 1 else u8.reshape(h, w, c)


# ----------------------------------------------------------------------------- parameters

def target_size(height, width, resolution):
    """(new_h, new_w) for `resolution` (0 keeps the size): short side = resolution, long side the
    nearest multiple of 8 to the aspect-kept length (at least 8)."""
    if resolution == 0:
        return height, width
    if height <= width:
        return resolution, max(8, int(round(width * resolution / height / 8.0)) * 8)
    return max(8, int(round(height * resolution / width / 8.0)) * 8), resolution


def check_params(low_threshold, high_threshold, auto, sigma, blur, aperture, resolution):
    """Validate the widgets; returns (low, high, auto, sigma, blur, aperture, resolution) normalised."""
    for name, v in (("low_threshold", low_threshold), ("high_threshold", high_threshold)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 255:
            raise CannyError(f"{name}: {v!r} is out of range; use a whole number from 0 to 255")
    if auto not in AUTO_MODES:
        raise CannyError(f"auto: {auto!r} is not a mode; use one of {', '.join(AUTO_MODES)}")
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise CannyError(f"sigma: {sigma!r} is not a number; use 0.0 to 1.0") from None
    if not 0.0 <= sigma <= 1.0:
        raise CannyError(f"sigma: {sigma} is out of range; use 0.0 to 1.0 (0.33 is the usual choice)")
    if isinstance(blur, bool) or not isinstance(blur, (int, np.integer)) or blur < 0 or blur > MAX_BLUR:
        raise CannyError(f"blur: {blur!r} is out of range; use 0 (no blur) or an odd kernel size from 1 to {MAX_BLUR}")
    if blur and blur % 2 == 0:
        raise CannyError(f"blur: a Gaussian kernel must have an odd size, got {blur}; use {blur - 1} or {blur + 1} "
                         "(or 0 for no blur)")
    try:
        ap = int(aperture)
    except (TypeError, ValueError):
        ap = None
    if ap not in APERTURES or (isinstance(aperture, float) and aperture != ap):
        raise CannyError(f"aperture: {aperture!r} is not a Sobel aperture OpenCV's Canny accepts; use 3, 5 or 7")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 0:
        raise CannyError(f"resolution: {resolution!r} is invalid; use 0 to keep the input size or a multiple of 8")
    if resolution > MAX_RESOLUTION:
        raise CannyError(f"resolution: {resolution} is too large; the maximum is {MAX_RESOLUTION} "
                         "(0 keeps the input size)")
    if resolution % 8:
        lo = resolution - resolution % 8
        raise CannyError(f"resolution: {resolution} is not a multiple of 8; use {lo or 8} or {lo + 8} "
                         "(or 0 to keep the input size)")
    return int(low_threshold), int(high_threshold), auto, sigma, int(blur), ap, int(resolution)


# ----------------------------------------------------------------------------- thresholds

def gray_of(u8):
    import cv2
    return u8 if u8.ndim == 2 else cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY)


def median_of(gray):
    """numpy.median of a uint8 image, from its histogram (O(n), no sort)."""
    hist = np.bincount(gray.ravel(), minlength=256)
    cum = np.cumsum(hist)
    n = int(cum[-1])
    lo = int(np.searchsorted(cum, (n - 1) // 2, side="right"))   # value at sorted index (n-1)//2
    hi = int(np.searchsorted(cum, n // 2, side="right"))         # value at sorted index n//2
    return (lo + hi) / 2.0


def median_thresholds(gray, sigma):
    m = median_of(gray)
    return int(max(0.0, (1.0 - sigma) * m)), int(min(255.0, (1.0 + sigma) * m)), m


def otsu_thresholds(gray):
    import cv2
    t, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    high = int(t)
    return int(high / 2), high, high


# ----------------------------------------------------------------------------- the node's work

def plan(images, resolution, max_output_bytes=None):
    """Validate the batch and the output size; returns (bhwc view, (out_h, out_w))."""
    x = as_bhwc(images)
    b, h, w, _ = x.shape
    oh, ow = target_size(h, w, resolution)
    if max(oh, ow) > MAX_SIDE:
        raise CannyError(f"resolution: {resolution} turns this {w}x{h} image into {ow}x{oh}, longer than "
                         f"{MAX_SIDE} pixels; lower resolution (or 0 to keep the input size)")
    need = b * oh * ow * 8      # MASK + (with invert) the inverted plane, float32
    if max_output_bytes is not None and need > max_output_bytes:
        raise CannyError(f"resolution: {b} edge maps of {ow}x{oh} need {need / 2**30:.1f} GiB of RAM but only "
                         f"{max_output_bytes / 2**30:.1f} GiB is free; lower resolution or split the batch")
    return x, (oh, ow)


def canny_batch(images, low_threshold=100, high_threshold=200, auto="off", sigma=0.33, blur=0, aperture=3,
                l2_gradient=False, resolution=0, invert=False, progress=None, max_output_bytes=None):
    """Canny edges of an IMAGE batch.

    Returns (image [B,H,W,3] float32 0/1 (a read-only-by-convention expand view of one plane, like
    MaskToImage's), mask [B,H,W] float32 0/1 (1 = edge, never inverted),
    thresholds text (one line per image), [(low, high), ...]).
    `progress(done, total)` is called after each image (it may raise to interrupt)."""
    import cv2

    low, high, auto, sigma, blur, aperture, resolution = check_params(
        low_threshold, high_threshold, auto, sigma, blur, aperture, resolution)
    x, (oh, ow) = plan(images, resolution, max_output_bytes)
    b, h, w, _ = x.shape

    swapped = auto == "off" and low > high
    if swapped:
        log.warning("[Lean Nodes] Canny: low_threshold %d > high_threshold %d; swapped them (low=%d, high=%d)",
                    low, high, high, low)
        low, high = high, low

    mask = np.empty((b, oh, ow), np.float32)
    plane = np.empty((b, oh, ow), np.float32) if invert else mask   # what the IMAGE output shows
    used, lines = [], []
    scratch = {}
    for i in range(b):
        u8 = to_uint8(x[i], scratch)
        if (oh, ow) != (h, w):
            interp = cv2.INTER_AREA if oh * ow < h * w else cv2.INTER_CUBIC
            u8 = cv2.resize(u8, (ow, oh), interpolation=interp)
        if blur:
            u8 = cv2.GaussianBlur(u8, (blur, blur), 0)
        if auto == "median":
            lo, hi, m = median_thresholds(gray_of(u8), sigma)
            note = f"auto=median, median={m:g}, sigma={sigma:g}"
        elif auto == "otsu":
            lo, hi, t = otsu_thresholds(gray_of(u8))
            note = f"auto=otsu, otsu={t}"
        else:
            lo, hi = low, high
            note = "manual" + (f", swapped: low_threshold {high} > high_threshold {low}" if swapped else "")
        edges = cv2.Canny(u8, lo, hi, apertureSize=aperture, L2gradient=bool(l2_gradient))
        cv2.multiply(edges, 1.0 / 255.0, dst=mask[i], dtype=cv2.CV_32F)            # 0 or 1 exactly
        if invert:
            cv2.subtract(1.0, mask[i], dst=plane[i])
        used.append((lo, hi))
        lines.append(f"image {i}: low={lo} high={hi} ({note})")
        if progress is not None:
            progress(i + 1, b)
    # The IMAGE is the one plane seen as 3 channels (a stride-0 view, exactly what ComfyUI's own
    # MaskToImage returns): 4 bytes per pixel instead of 12, and nothing to copy.
    image = torch.from_numpy(plane)[..., None].expand(b, oh, ow, 3)
    return image, torch.from_numpy(mask), "\n".join(lines), used
