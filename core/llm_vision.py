"""Images for the LLM prompt writer: pixels from ComfyUI IMAGE tensors, the resize rule, PNG data URLs for servers,
and what a projector (``mmproj-*.gguf``) file says about itself.  Pure logic (numpy, cv2, PIL; torch only if the
image is a torch tensor).

The resize rule (``fit_size``): an image is never enlarged.  If it has more pixels than the projector takes it is
shrunk, aspect ratio kept (area filter), to at most ``max_pixels(info)`` pixels:
- projectors with a fixed square input (LLaVA ``mlp``/``ldp``, Gemma 3, GLM-Edge, Janus): ``image_size``
  squared (e.g. 336 x 336, 896 x 896): llama.cpp resizes every image to that square anyway;
- dynamic-resolution projectors (Qwen2/2.5/3-VL, Pixtral, SmolVLM, ...): at most 1 megapixel (or the
  projector's own ``clip.vision.image_max_pixels`` when smaller), which llama.cpp then fits to its patch grid.
One image is converted at a time, in bands of rows (``picture``), so a batch of N images costs one image's bytes,
not N, and a huge image is reduced band by band before it exists whole.
"""
import base64
import io
import math

import numpy as np

from . import llm_gguf

MAX_PIXELS = 1024 * 1024
FIXED_SIZE_PROJECTORS = {"mlp", "mlp_norm", "ldp", "ldpv2", "gemma3", "adapter", "janus_pro", "gemma3nv"}
# projector types whose clip.vision.projection_dim is not the size of what they hand the text model (LLaVA's is
# CLIP's own projection): pairing with a model cannot be told from the header
UNKNOWN_OUTPUT = {"mlp", "mlp_norm", "ldp", "ldpv2", "resampler"}
MAX_SIDE = 1 << 16               # an IMAGE side larger than this is refused (no real image is)
ROWS_PER_BAND = 256              # rows converted from float at a time (bounded temporary memory)
PROJECTOR_PREFIX = "mmproj"


class ImageError(ValueError):
    """The image input cannot be used (wrong shape, no pixels)."""


def is_projector_name(name):
    """A file the loaders list as a projector: mmproj-*.gguf (also mmproj_*.gguf, mmproj.gguf), any folder."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    return base.startswith(PROJECTOR_PREFIX) and base.endswith(".gguf")


# ------------------------------------------------------------------------------------------------ images

def batch_shape(images):
    """(n, height, width, channels) of a ComfyUI IMAGE (B,H,W,C) or one image (H,W,C); ImageError otherwise."""
    shape = tuple(int(s) for s in getattr(images, "shape", ()))
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4:
        raise ImageError(f"'image' must be an IMAGE (batch, height, width, channels); got shape {shape or '?'}: "
                         f"connect a Load Image node or another node's IMAGE output")
    n, h, w, c = shape
    if n < 1 or h < 1 or w < 1:
        raise ImageError(f"'image' has no pixels (shape {shape}): check the node that makes it")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(f"'image' is {w} x {h} pixels, more than {MAX_SIDE} on a side: shrink it first")
    if c not in (1, 2, 3, 4):
        raise ImageError(f"'image' has {c} channels; an IMAGE has 3 (RGB), or 1 (grey) / 4 (RGBA): check the node "
                         f"that makes it")
    return n, h, w, c


def _band_f32(band, channels):
    """float rows (torch or numpy) in 0..1 -> float32 numpy H x W x 3: NaN as 0, out of range clipped, grey
    repeated into RGB, alpha dropped (as Load Image does)."""
    if hasattr(band, "detach"):  # a torch tensor: to CPU float32 one band at a time
        import torch
        band = band.detach().to(device="cpu", dtype=torch.float32).numpy()
    band = np.asarray(band, dtype=np.float32)
    band = band[..., :3] if channels >= 3 else np.repeat(band[..., :1], 3, axis=-1)
    return np.clip(np.nan_to_num(band, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _u8(f):
    return np.rint(f * 255.0).astype(np.uint8)


def picture(images, index=0, max_pixels=None):
    """Image ``index`` of an IMAGE batch as an H x W x 3 uint8 RGB array, shrunk by the resize rule to at most
    ``max_pixels`` (None: full size).  Values are rounded, so a picture from Load Image gives back its exact
    bytes.  Converted in bands of rows; a large shrink first averages k x k blocks band by band, so the full-size
    picture never exists as a whole (an 8192 x 8192 input costs a band, not 200 MB)."""
    n, h, w, c = batch_shape(images)
    if not 0 <= index < n:
        raise IndexError(index)
    one = images[index] if len(getattr(images, "shape", ())) == 4 else images
    tw, th = fit_size(w, h, max_pixels) if max_pixels else (w, h)
    k = max(1, min(w // tw, h // th))  # whole-block pre-reduction, never below the target size
    hk, wk = h // k, w // k
    out = np.empty((hk, wk, 3), np.uint8)
    rows = max(k, (ROWS_PER_BAND // k) * k)
    for r0 in range(0, hk * k, rows):
        r1 = min(r0 + rows, hk * k)
        band = _band_f32(one[r0:r1, :wk * k], c)
        if k > 1:
            band = band.reshape((r1 - r0) // k, k, wk, k, 3).mean(axis=(1, 3))
        out[r0 // k:r1 // k] = _u8(band)
    if (wk, hk) != (tw, th):
        import cv2
        out = cv2.resize(out, (tw, th), interpolation=cv2.INTER_AREA)
    return out


def rgb_u8(images, index=0):
    """Image ``index`` at full size (see picture)."""
    return picture(images, index, None)


def fit_size(width, height, max_pixels):
    """(width, height) after the resize rule: unchanged when within max_pixels, else scaled down (aspect kept,
    each side at least 1).  Never larger than the input."""
    if width * height <= max_pixels:
        return width, height
    s = math.sqrt(max_pixels / float(width * height))
    return max(1, min(width, int(width * s))), max(1, min(height, int(height * s)))


def png_bytes(rgb):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(rgb):
    """A base64 PNG data URL of an RGB uint8 image (what OpenAI-compatible servers take in an image_url part)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


# ------------------------------------------------------------------------------------------------ projectors

_PROJ_KEYS = {"general.architecture", "general.name", "clip.projector_type", "clip.vision.projector_type",
              "clip.has_vision_encoder", "clip.vision.image_size", "clip.vision.patch_size",
              "clip.vision.projection_dim", "clip.vision.image_max_pixels", "clip.vision.spatial_merge_size"}


class ProjectorInfo:
    __slots__ = ("path", "name", "type", "image_size", "patch_size", "projection_dim", "image_max_pixels")

    def __init__(self, path, name, meta):
        self.path, self.name = path, name
        self.type = str(meta.get("clip.vision.projector_type") or meta.get("clip.projector_type") or "")
        self.image_size = int(meta.get("clip.vision.image_size") or 0)
        self.patch_size = int(meta.get("clip.vision.patch_size") or 0)
        self.projection_dim = int(meta.get("clip.vision.projection_dim") or 0)
        self.image_max_pixels = int(meta.get("clip.vision.image_max_pixels") or 0)

    @property
    def fixed_size(self):
        return self.type in FIXED_SIZE_PROJECTORS and self.image_size > 0

    @property
    def output_dim(self):
        """The width of what the projector hands the text model (None: not told by the header)."""
        return None if self.type in UNKNOWN_OUTPUT or not self.projection_dim else self.projection_dim

    def max_pixels(self):
        if self.fixed_size:
            return self.image_size * self.image_size
        if self.image_max_pixels > 0:
            return min(MAX_PIXELS, self.image_max_pixels)
        return MAX_PIXELS

    def __repr__(self):
        return f"<projector {self.name} {self.type}>"


def read_projector(path):
    """What a projector file says about itself; GGUFError naming the file when it is not a vision projector."""
    import os
    name = os.path.basename(os.fspath(path))
    meta = llm_gguf.read_metadata(path, keys=_PROJ_KEYS)
    arch = meta.get("general.architecture")
    ptype = meta.get("clip.vision.projector_type") or meta.get("clip.projector_type")
    if arch != "clip" or not ptype:
        raise llm_gguf.GGUFError(
            f"'{name}' is not a vision projector (architecture '{arch}'): the mmproj input takes the mmproj-*.gguf "
            f"file published next to a vision model (e.g. mmproj-Qwen2.5-VL-3B-Instruct-f16.gguf), not a model")
    if not meta.get("clip.has_vision_encoder"):
        raise llm_gguf.GGUFError(f"'{name}' has no vision encoder (an audio projector?): it cannot read images; "
                                 f"use the vision mmproj of the model")
    return ProjectorInfo(os.fspath(path), name, meta)


def model_width(path):
    """(architecture, hidden size) of a text model GGUF, read from its header; (arch, None) if not told."""
    meta = llm_gguf.read_metadata(path)
    arch = llm_gguf.architecture(meta)
    width = meta.get(f"{arch}.embedding_length") if arch else None
    return arch, (int(width) if isinstance(width, int) else None)


def pairs(info, width):
    """True / False whether projector ``info`` feeds a model of hidden size ``width``; None if not known."""
    if info.output_dim is None or width is None:
        return None
    return info.output_dim == width
