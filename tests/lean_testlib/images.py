"""A small photo-like test image made procedurally: gradients, shapes, texture and noise."""
import numpy as np

GENERATOR_VERSION = 1


def photo_like(width=256, height=192, seed=0):
    """uint8 HxWx3: a sky gradient, a ground plane, a few filled shapes, soft texture and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    horizon = height * 0.55
    sky = np.clip(1 - y / horizon, 0, 1)[..., None]
    img += sky * np.array([90, 150, 230], np.float32) + (1 - sky) * np.array([200, 220, 250], np.float32)
    ground = (y > horizon + 8 * np.sin(x / 23.0))[..., None]
    img = np.where(ground, np.array([70, 120, 60], np.float32) * (0.7 + 0.3 * y / height)[..., None], img)
    for _ in range(6):  # discs and boxes with random colours
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.2, 0.9) * height
        r = rng.uniform(0.05, 0.15) * min(width, height)
        col = rng.uniform(20, 235, 3).astype(np.float32)
        if rng.random() < 0.5:
            m = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        else:
            m = (abs(x - cx) < r) & (abs(y - cy) < r * 0.7)
        img[m] = col * (0.85 + 0.15 * np.cos(x[m] / 7.0))[..., None]
    img += 6 * np.sin(x / 5.0 + y / 9.0)[..., None]          # texture
    img += rng.normal(0, 4, img.shape).astype(np.float32)     # sensor noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def photo_png(seed=0, width=256, height=192, cache=None):
    from PIL import Image
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"lean_photo_v{GENERATOR_VERSION}_seed{seed}_{width}x{height}.png"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        Image.fromarray(photo_like(width, height, seed)).save(tmp, format="PNG")
        tmp.replace(path)
    return path
