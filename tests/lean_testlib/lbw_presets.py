"""Block-weight presets as their authors publish them, written out here for tests (never read from core/).

Sources:
* SD1.5, 17 values: hako-mikan/sd-webui-lora-block-weight (A1111 "LoRA Block Weight"),
  scripts/lora_block_weight.py: ``BLOCKID17`` and the default presets ``DEF_WEIGHT_PRESET`` (NONE, ALL, INS, IND,
  INALL, MIDD, OUTD, OUTS, OUTALL, ALL0.5); the same strings as ltdrdata/ComfyUI-Inspire-Pack
  resources/lbw-preset.txt ``SD-*``.
* SDXL, 12 values: the same script's ``BLOCKID12``; presets from ltdrdata/ComfyUI-Inspire-Pack
  resources/lbw-preset.txt ``SDXL-NONE``, ``SDXL-ALL``, ``SDXL-INALL``, ``SDXL-MIDALL``, ``SDXL-OUTALL`` (A1111's
  script publishes no SDXL presets).
"""

BLOCKID17 = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05", "OUT06",
             "OUT07", "OUT08", "OUT09", "OUT10", "OUT11")
BLOCKID12 = ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")

SD15 = {
    "NONE": "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "IND": "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "INALL": "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
    "OUTD": "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "OUTS": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
    "OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "ALL0.5": "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
}

SDXL = {  # Inspire Pack's names without the "SDXL-" prefix
    "NONE": "0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL": "1,1,1,1,1,1,1,1,1,1,1,1",
    "INALL": "1,1,1,1,1,0,0,0,0,0,0,0",
    "MIDALL": "1,0,0,0,0,1,0,0,0,0,0,0",
    "OUTALL": "1,0,0,0,0,0,1,1,1,1,1,1",
}


def weights(layout, preset):
    """block id -> weight of a published preset (``layout`` "sd15" or "sdxl")."""
    ids, table = {"sd15": (BLOCKID17, SD15), "sdxl": (BLOCKID12, SDXL)}[layout]
    vals = [float(x) for x in table[preset].split(",")]
    assert len(vals) == len(ids), (layout, preset)
    return dict(zip(ids, vals))


def blocks_on(layout, preset):
    """The blocks a 0/1 preset keeps, in layout order."""
    w = weights(layout, preset)
    assert set(w.values()) <= {0.0, 1.0}, f"{preset} is not a 0/1 preset"
    return tuple(b for b, v in w.items() if v == 1.0)
