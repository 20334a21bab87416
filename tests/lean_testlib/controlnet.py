"""Random-weight ControlNet with the exact key layout and shapes of an SD1.5 ControlNet v1.1 file such as
``control_v11p_sd15_canny_fp16.safetensors`` (LDM layout under ``control_model.``: the UNet encoder half,
``input_hint_block``, ``zero_convs`` and ``middle_block_out``).  Deterministic, cached like the checkpoint.
narrow=True: the same keys at the narrow SD1.5 checkpoint's widths (sd15.NARROW, 320 on every level), for it."""
import os

from .sd15 import MULT, NARROW, random_tensor, unet_keys

GENERATOR_VERSION = 1
_ZERO_CONV_CH = (320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280)
_HINT = ((3, 16), (16, 16), (16, 32), (32, 32), (32, 96), (96, 96), (96, 256), (256, 320))


def controlnet_key_table(prefix="control_model.", narrow=False):
    mult = NARROW if narrow else MULT
    t = {k.replace("model.diffusion_model.", prefix): s for k, s in unet_keys(mult=mult).items()
         if not k.startswith(("model.diffusion_model.output_blocks.", "model.diffusion_model.out."))}
    for i, (cin, cout) in enumerate(_HINT):
        t[f"{prefix}input_hint_block.{2 * i}.weight"] = (cout, cin, 3, 3)
        t[f"{prefix}input_hint_block.{2 * i}.bias"] = (cout,)
    for i, c in enumerate(_ZERO_CONV_CH):
        c = NARROW[0] if narrow else c  # every level of the narrow UNet is this wide
        t[f"{prefix}zero_convs.{i}.0.weight"] = (c, c, 1, 1)
        t[f"{prefix}zero_convs.{i}.0.bias"] = (c,)
    m = mult[-1]
    t[f"{prefix}middle_block_out.0.weight"] = (m, m, 1, 1)
    t[f"{prefix}middle_block_out.0.bias"] = (m,)
    return t


def sd15_controlnet(seed=0, cache=None, narrow=False):
    import torch
    from safetensors.torch import save_file
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"lean_controlnet_sd15{'n' if narrow else ''}_v{GENERATOR_VERSION}_seed{seed}.safetensors"
    if not path.exists():
        # zero convs get small random weights (not zeros) so the control visibly changes the result
        sd = {k: random_tensor(torch, k, s, seed + 17, torch.float16) * (0.1 if "zero_convs" in k or "middle_block_out" in k else 1)
              for k, s in controlnet_key_table(narrow=narrow).items()}
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file(sd, str(tmp), metadata={"lean_fixture": f"controlnet sd15 v{GENERATOR_VERSION} seed {seed}"})
        os.replace(tmp, path)
    return path
