"""LeanCanny: OpenCV Canny edges for ControlNet, on whole batches (adapter; the logic is core/canny.py)."""
from ..core import canny as core


class LeanCanny:
    DESCRIPTION = (
        "Canny edge map for ControlNet, computed with OpenCV (cv2.Canny) on every image of the batch. "
        "Thresholds are 0-255 like most Canny tools, or picked per image automatically (median or Otsu). "
        "Outputs white edges on black (or inverted), the edges as a MASK, and the thresholds used per image. "
        "Low > high thresholds are swapped with a warning.")
    CATEGORY = "lean/controlnet"
    FUNCTION = "detect"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("image", "mask", "thresholds")
    OUTPUT_TOOLTIPS = (
        "Edge map, 3 channels: white (1.0) edges on black, or black on white when invert is on.",
        "The edges as a mask: 1 on an edge, 0 elsewhere (not affected by invert).",
        "The thresholds used, one line per image (useful with auto modes).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Image or batch to find edges in. RGB, grayscale and RGBA (alpha is "
                                           "ignored) all work; every image of the batch is processed."}),
            "low_threshold": ("INT", {"default": 100, "min": 0, "max": 255, "step": 1,
                                      "tooltip": "Weak-edge threshold (0-255, OpenCV scale). Gradients above it "
                                                 "are kept when connected to a strong edge. Ignored when auto "
                                                 "is not off."}),
            "high_threshold": ("INT", {"default": 200, "min": 0, "max": 255, "step": 1,
                                       "tooltip": "Strong-edge threshold (0-255). Lower it for more edges. If it "
                                                  "is below low_threshold the two are swapped (with a warning). "
                                                  "Ignored when auto is not off."}),
            "auto": (list(core.AUTO_MODES), {"default": "off",
                                             "tooltip": "off: use the two thresholds. median: low/high = "
                                                        "(1 -/+ sigma) x the median gray value of each image. "
                                                        "otsu: high = Otsu's threshold of each image, low = "
                                                        "high / 2."}),
            "sigma": ("FLOAT", {"default": 0.33, "advanced": True, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "Spread around the median for auto=median (0.33 is the usual "
                                           "choice; larger gives a wider band and more edges). Unused otherwise."}),
            "blur": ("INT", {"default": 0, "advanced": True, "min": 0, "max": core.MAX_BLUR, "step": 1,
                             "tooltip": "Gaussian blur before edge detection: 0 = none, else an odd kernel size "
                                        "(3, 5, 7 ...). Blur removes noise and texture edges."}),
            "aperture": ([str(a) for a in core.APERTURES], {"default": "3", "advanced": True,
                                                           "tooltip": "Sobel kernel size (3, 5 or 7). Larger "
                                                                      "apertures give much stronger gradients: "
                                                                      "raise the thresholds with them."}),
            "l2_gradient": ("BOOLEAN", {"default": False, "advanced": True,
                                        "tooltip": "Use the exact L2 gradient magnitude instead of |dx| + |dy|: "
                                                   "slightly cleaner edges, a bit slower."}),
            "resolution": ("INT", {"default": 0, "min": 0, "max": core.MAX_RESOLUTION, "step": 8,
                                   "tooltip": "0 = keep the input size. Otherwise resize first so the short "
                                              "side is this many pixels (multiple of 8), aspect kept, long "
                                              "side rounded to a multiple of 8."}),
            "invert": ("BOOLEAN", {"default": False, "advanced": True,
                                   "tooltip": "Black edges on white in the image output (the mask output is "
                                              "unchanged)."}),
        }}

    def detect(self, image, low_threshold, high_threshold, auto, sigma, blur, aperture, l2_gradient,
               resolution, invert):
        import torch
        import comfy.model_management as mm
        import comfy.utils

        batch = image.shape[0] if getattr(image, "ndim", 0) == 4 else 1
        pbar = comfy.utils.ProgressBar(batch) if batch > 1 else None

        def progress(done, total):
            mm.throw_exception_if_processing_interrupted()
            if pbar is not None:
                pbar.update_absolute(done, total)

        try:
            free = mm.get_free_memory(torch.device("cpu"))
        except Exception:
            free = None
        out_image, mask, text, _ = core.canny_batch(
            image, low_threshold, high_threshold, auto=auto, sigma=sigma, blur=blur, aperture=aperture,
            l2_gradient=l2_gradient, resolution=resolution, invert=invert, progress=progress,
            max_output_bytes=free)
        return (out_image, mask, text)


NODE_CLASS_MAPPINGS = {"LeanCanny": LeanCanny}
NODE_DISPLAY_NAME_MAPPINGS = {"LeanCanny": "Canny Edges (OpenCV)"}
