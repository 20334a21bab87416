"""API-format prompt builders shared by tier-2 tests and benchmarks."""


def txt2img(ckpt="lean_sd15.safetensors", positive="a red cube on a table", negative="blurry",
            seed=1, steps=1, width=64, height=64, batch=1, prefix="lean_test", cfg=7.0,
            sampler="euler", scheduler="normal", denoise=1.0):
    """Stock CheckpointLoaderSimple -> CLIPTextEncode x2 -> KSampler -> VAEDecode -> SaveImage."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                   "sampler_name": sampler, "scheduler": scheduler, "denoise": denoise}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def prompt_batch_txt2img(text, ckpt="lean_sd15.safetensors", mode="lines", count=16, seed=1, steps=1,
                         width=64, height=64, prefix="lean_pb", negative="", cfg=7.0, batch_seed=0):
    """CheckpointLoaderSimple -> LeanPromptBatch (+ CLIPTextEncode negative) -> EmptyLatentImage whose
    batch_size is LeanPromptBatch's count -> KSampler -> VAEDecode -> SaveImage.  Node "pb" is the
    LeanPromptBatch, "5" the KSampler."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pb": {"class_type": "LeanPromptBatch", "inputs": {"clip": ["1", 1], "text": text, "mode": mode,
                                                          "count": count, "seed": batch_seed, "prefix": "",
                                                          "suffix": ""}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height,
                                                           "batch_size": ["pb", 2]}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["pb", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }
