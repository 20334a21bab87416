"""LoRA block weights (pure logic, no ComfyUI imports): the A1111 "LoRA Block Weight" layouts and presets
for SD1.5 (17/26 values) and SDXL (12/20), Flux's double/single blocks (58 values or named ranges), and which
block a model key belongs to::

    MIDD                          a preset
    1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0   17 values (SD1.5)
    D0-D18:1,S0-S37:0             Flux: named blocks and ranges
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .lora_schedule import LoraSyntaxError, _number

# ------------------------------------------------------------------ block weights
# A1111 "LoRA Block Weight" convention.  SD1.5 17 values (blocks with attention), 26 values (all blocks,
# LyCORIS); SDXL 12 values (blocks with attention), 20 values (all blocks).  BASE weights the text encoder.

SD15_17 = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00",
           "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11")
SD15_26 = ("BASE",) + tuple(f"IN{i:02d}" for i in range(12)) + ("M00",) + tuple(f"OUT{i:02d}" for i in range(12))
SDXL_12 = ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")
SDXL_20 = ("BASE",) + tuple(f"IN{i:02d}" for i in range(9)) + ("M00",) + tuple(f"OUT{i:02d}" for i in range(9))

# Flux (Flux-dev/schnell: 19 double blocks, 38 single blocks): BASE (text encoder and the modules outside the
# blocks), D0..D18, S0..S37 -- the double_blocks.N / single_blocks.N indices, as the Flux block-weight nodes
# (Inspire's double/single vectors, "flux lora block" patchers) number them.  58 values in that order, or named.
FLUX_DOUBLE, FLUX_SINGLE = 19, 38
FLUX_58 = ("BASE",) + tuple(f"D{i}" for i in range(FLUX_DOUBLE)) + tuple(f"S{i}" for i in range(FLUX_SINGLE))

LAYOUTS = {"sd15": (SD15_17, SD15_26), "sdxl": (SDXL_12, SDXL_20), "flux": (FLUX_58, FLUX_58)}
LAYOUT_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "flux": "Flux", "zimage": "Z-Image", "qwen_image": "Qwen-Image"}

# The 2026 DiTs, by name only (no A1111 list form exists for them): BASE (text encoder and the modules outside the
# blocks) and the block stacks of the published models, numbered as their state dicts number them.
#   Z-Image (Lumina2 DiT, 6B): L0..L29 (layers.N), NR0..NR1 (noise_refiner.N), CR0..CR1 (context_refiner.N)
#   Qwen-Image (20B): B0..B59 (transformer_blocks.N)
# Flux.2 (Klein, dev) has Flux's double_blocks/single_blocks and uses the Flux layout (Klein 4B: D0-D4, S0-S19).
DIT_LAYOUTS = {
    "zimage": (("L", "layers", 30), ("NR", "noise_refiner", 2), ("CR", "context_refiner", 2)),
    "qwen_image": (("B", "transformer_blocks", 60),),
}
DIT_PRESETS = {
    "zimage": {"NONE": "BASE:0,L0-L29:0,NR0-NR1:0,CR0-CR1:0", "ALL": "BASE:1,L0-L29:1,NR0-NR1:1,CR0-CR1:1",
               "ALL0.5": "BASE:0.5,L0-L29:0.5,NR0-NR1:0.5,CR0-CR1:0.5",
               "LAYERS": "BASE:1,L0-L29:1,NR0-NR1:0,CR0-CR1:0", "REFINERS": "BASE:1,L0-L29:0,NR0-NR1:1,CR0-CR1:1"},
    "qwen_image": {"NONE": "BASE:0,B0-B59:0", "ALL": "BASE:1,B0-B59:1", "ALL0.5": "BASE:0.5,B0-B59:0.5",
                   "FIRST_HALF": "BASE:1,B0-B29:1,B30-B59:0", "SECOND_HALF": "BASE:1,B0-B29:0,B30-B59:1"},
}
_DIT_RES = {layout: re.compile(r"^(?:diffusion_model\.)?(" + "|".join(stack for _, stack, _ in spec) + r")\.(\d+)\.")
            for layout, spec in DIT_LAYOUTS.items()}

# In the short formats, blocks without attention (reached only by LoCon) follow the nearest listed block.
_SHORT_FALLBACK = {
    "sd15": {"IN00": "IN01", "IN03": "IN02", "IN06": "IN05", "IN09": "IN08", "IN10": "IN08", "IN11": "IN08",
             "OUT00": "OUT03", "OUT01": "OUT03", "OUT02": "OUT03"},
    "sdxl": {"IN00": "IN04", "IN01": "IN04", "IN02": "IN04", "IN03": "IN04", "IN06": "IN05",
             "OUT06": "OUT05", "OUT07": "OUT05", "OUT08": "OUT05"},
}

_P17 = {
    "NONE": "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "IND": "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "INALL": "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
    "OUTD": "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "OUTS": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
    "OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "ALL0.5": ",".join(["0.5"] * 17),
}
# SDXL analogues (BASE, IN04, IN05, IN07, IN08, M00, OUT00..OUT05)
_P12 = {
    "NONE": "0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL": "1,1,1,1,1,1,1,1,1,1,1,1",
    "INS": "1,1,1,0,0,0,0,0,0,0,0,0",
    "IND": "1,0,0,1,1,0,0,0,0,0,0,0",
    "INALL": "1,1,1,1,1,0,0,0,0,0,0,0",
    "MIDD": "1,0,0,1,1,1,1,1,1,0,0,0",
    "OUTD": "1,0,0,0,0,0,1,1,1,0,0,0",
    "OUTS": "1,0,0,0,0,0,0,0,0,1,1,1",
    "OUTALL": "1,0,0,0,0,0,1,1,1,1,1,1",
    "ALL0.5": ",".join(["0.5"] * 12),
}
PRESETS = {"sd15": _P17, "sdxl": _P12}
PRESET_NAMES = tuple(_P17)
# Flux presets (named form): the double blocks only, the single blocks only; ALL, NONE, ALL0.5 as everywhere
FLUX_PRESETS = {
    "NONE": "BASE:0,D0-D18:0,S0-S37:0",
    "ALL": "BASE:1,D0-D18:1,S0-S37:1",
    "ALL0.5": "BASE:0.5,D0-D18:0.5,S0-S37:0.5",
    "DOUBLE": "BASE:1,D0-D18:1,S0-S37:0",
    "SINGLE": "BASE:1,D0-D18:0,S0-S37:1",
}
FLUX_PRESET_NAMES = tuple(FLUX_PRESETS)


@dataclass(frozen=True)
class BlockWeights:
    """Weights by block id for one UNet layout."""
    layout: str
    weights: tuple  # (block id, weight) pairs, in the order given
    source: str = ""

    def weight(self, block: str) -> float:
        d = dict(self.weights)
        if block in d:
            return d[block]
        alt = _SHORT_FALLBACK.get(self.layout, {}).get(block)
        if alt in d:
            return d[alt]
        return d["BASE"]

    @property
    def base(self) -> float:
        return dict(self.weights)["BASE"]

    def is_all(self, value: float) -> bool:
        return all(w == value for _, w in self.weights)


_FLUX_ID = re.compile(r"\s*(BASE|[DS]\d+)(?:\s*-\s*([DS]\d+))?\s*$", re.IGNORECASE)

# Every layout written with named blocks: (id prefix, the state dict's stack, how many blocks)
NAMED_LAYOUTS = {"flux": (("D", "double_blocks", FLUX_DOUBLE), ("S", "single_blocks", FLUX_SINGLE)), **DIT_LAYOUTS}
NAMED_EXAMPLES = {"flux": "D0-D18:1,S0-S37:0", "zimage": "L0-L29:1,NR0-NR1:0", "qwen_image": "B0-B29:1,B30-B59:0"}


def _named_ids(layout):
    return ("BASE",) + tuple(f"{p}{i}" for p, _, n in NAMED_LAYOUTS[layout] for i in range(n))


def _named_ranges(layout):
    return ", ".join(f"{p}0..{p}{n - 1} ({stack})" for p, stack, n in NAMED_LAYOUTS[layout])


_NAMED_ID = {layout: re.compile(r"\s*(BASE|(?:" + "|".join(sorted((p for p, _, _ in spec), key=len, reverse=True))
                                + r")\d+)(?:\s*-\s*((?:" + "|".join(p for p, _, _ in spec) + r")\d+))?\s*$",
                                re.IGNORECASE)
             for layout, spec in NAMED_LAYOUTS.items()}


def _parse_named(layout: str, text: str, what: str, full: str, base: int, source: str) -> BlockWeights:
    """'D0-D18:1,S0-S37:0' (Flux), 'L0-L29:1,NR0-NR1:0' (Z-Image), 'B0-B29:1' (Qwen-Image); '=' works for ':';
    block id or range : weight; ids not named keep 1."""
    name, example = LAYOUT_NAMES[layout], NAMED_EXAMPLES[layout]
    counts = {p: n for p, _, n in NAMED_LAYOUTS[layout]}
    w = dict.fromkeys(_named_ids(layout), 1.0)
    pos = 0
    for part in text.split(","):
        start, end = pos, pos + len(part)
        pos = end + 1
        if not part.strip():
            raise LoraSyntaxError(what, full, base + start, "empty entry (two commas in a row or a trailing comma)")
        sep = max(part.find(":"), part.find("="))
        if sep < 0:
            raise LoraSyntaxError(what, full, base + start, f"'{part.strip()}' needs the form BLOCK:weight or "
                                  f"FIRST-LAST:weight (e.g. {example})", max(1, len(part)))
        m = _NAMED_ID[layout].fullmatch(part[:sep])
        if not m:
            raise LoraSyntaxError(what, full, base + start, f"'{part[:sep].strip()}' is not a {name} block: use BASE, "
                                  f"{_named_ranges(layout)}", max(1, sep))
        a, b = m.group(1).upper(), (m.group(2) or m.group(1)).upper()
        kinds = [re.match(r"[A-Z]+", x).group(0) for x in (a, b)]
        for bid, kind in zip((a, b), kinds):
            if bid != "BASE" and int(bid[len(kind):]) >= counts[kind]:
                raise LoraSyntaxError(what, full, base + start, f"block {bid} does not exist: {name} has "
                                      f"{_named_ranges(layout)}", max(1, sep))
        if kinds[0] != kinds[1] or (a != "BASE" and int(a[len(kinds[0]):]) > int(b[len(kinds[1]):])):
            raise LoraSyntaxError(what, full, base + start, f"range {a}-{b} must go upwards within one kind "
                                  f"(e.g. {example.split(':', 1)[0]})", max(1, sep))
        v = _number(part, sep + 1, len(part), what, full, base + start)
        if a == "BASE":
            w["BASE"] = v
        else:
            k = kinds[0]
            for i in range(int(a[len(k):]), int(b[len(k):]) + 1):
                w[f"{k}{i}"] = v
    return BlockWeights(layout, tuple(w.items()), source)


def parse_block_weights(text: str, layout: str | None, what: str = "block weights", full: str | None = None,
                        base: int = 0) -> BlockWeights | None:
    """A preset name (NONE, ALL, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL, ALL0.5) or a comma list of
    17/26 (SD1.5) or 12/20 (SDXL) numbers.  Empty -> None (all 1).  `layout` is 'sd15', 'sdxl', 'flux' or None
    (a model with no block layout: only ALL/NONE/ALL0.5 make sense there).  Flux: a preset (ALL, NONE, ALL0.5,
    DOUBLE, SINGLE), 58 values (BASE, D0..D18, S0..S37) or named entries 'D0-D18:1,S0-S37:0,BASE:1'."""
    full = text if full is None else full
    if text is None or not text.strip():
        return None
    s = text.strip()
    lead = base + (len(text) - len(text.lstrip()))
    if layout in DIT_LAYOUTS:
        presets = DIT_PRESETS[layout]
        preset = next((p for p in presets if p.lower() == s.lower()), None)
        if preset is not None:
            return _parse_named(layout, presets[preset], what, presets[preset], 0, preset)
        if re.search(r"[:=]", s):
            return _parse_named(layout, text, what, full, base, "named")
        raise LoraSyntaxError(what, full, lead, f"'{s}' is no {LAYOUT_NAMES[layout]} preset or block list: presets "
                              f"{', '.join(presets)}, or blocks such as {presets['ALL'].split(',', 2)[1]} "
                              f"(blocks: BASE, {_named_ranges(layout)})", len(s))
    if layout == "flux":
        preset = next((p for p in FLUX_PRESET_NAMES if p.lower() == s.lower()), None)
        if preset is not None:
            return _parse_named("flux", FLUX_PRESETS[preset], what, FLUX_PRESETS[preset], 0, preset)
        if re.search(r"[:=]", s):
            return _parse_named("flux", text, what, full, base, "named")
        if _FLUX_ID.fullmatch(s):
            raise LoraSyntaxError(what, full, lead, f"'{s}' needs a weight: write {s}:1 (or {s}=1)", len(s))
        if re.fullmatch(r"[A-Za-z_][\w.]*", s):
            close = difflib.get_close_matches(s.upper(), FLUX_PRESET_NAMES, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise LoraSyntaxError(what, full, lead, f"unknown Flux preset '{s}'{hint}; Flux presets: "
                                  f"{', '.join(FLUX_PRESET_NAMES)}, or blocks such as D0-D18:1,S0-S37:0", len(s))
    preset = next((p for p in PRESET_NAMES if p.lower() == s.lower()), None)
    if preset is not None:
        if layout is None:
            if preset in ("ALL", "NONE", "ALL0.5"):
                v = {"ALL": 1.0, "NONE": 0.0, "ALL0.5": 0.5}[preset]
                return BlockWeights("flat", (("BASE", v),), preset)
            raise LoraSyntaxError(what, full, lead, f"preset {preset} needs an SD1.5 or SDXL UNet (this model has no "
                                  "A1111 block layout; only ALL, NONE and ALL0.5 work here)", len(s))
        s = PRESETS[layout][preset]
        vals = [float(x) for x in s.split(",")]
        return BlockWeights(layout, tuple(zip(LAYOUTS[layout][0], vals)), preset)
    if re.fullmatch(r"[A-Za-z_][\w.]*", s):
        close = difflib.get_close_matches(s.upper(), PRESET_NAMES, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise LoraSyntaxError(what, full, lead, f"unknown preset '{s}'{hint}; presets: {', '.join(PRESET_NAMES)}", len(s))
    vals = []
    pos = 0
    for part in text.split(","):
        start, end = pos, pos + len(part)
        pos = end + 1
        if not part.strip():
            raise LoraSyntaxError(what, full, base + start, "empty value (two commas in a row or a trailing comma)")
        vals.append(_number(part, 0, len(part), what, full, base + start))
    if layout is None:
        raise LoraSyntaxError(what, full, lead, "a list of block weights needs an SD1.5 or SDXL UNet (this model has "
                              "no A1111 block layout)", len(s))
    short, long_ = LAYOUTS[layout]
    if len(vals) == len(short):
        return BlockWeights(layout, tuple(zip(short, vals)), "list")
    if len(vals) == len(long_):
        return BlockWeights(layout, tuple(zip(long_, vals)), "list")
    if layout == "flux":
        raise LoraSyntaxError(what, full, lead, f"{len(vals)} values given; Flux takes {len(short)} (BASE, "
                              f"D0..D{FLUX_DOUBLE - 1}, S0..S{FLUX_SINGLE - 1}) or named blocks such as "
                              "D0-D18:1,S0-S37:0", len(s))
    raise LoraSyntaxError(what, full, lead, f"{len(vals)} values given; {LAYOUT_NAMES[layout]} takes {len(short)} "
                          f"({', '.join(short)}) or {len(long_)} (every block)", len(s))


_BLOCK_RE = re.compile(r"(?:^|\.)(input_blocks|middle_block|output_blocks)\.(\d+)\.")
_FLUX_RE = re.compile(r"(?:^|\.)(double_blocks|single_blocks)\.(\d+)\.")


def unet_layout(keys) -> str | None:
    """'sd15' (12 input blocks), 'sdxl' (9 input blocks), 'flux' (double_blocks/single_blocks), 'zimage'
    (noise/context refiners) or 'qwen_image' (transformer_blocks with img_mod/txt_mod) from the model's state-dict
    keys, else None."""
    n_in = -1
    n_out = -1
    for k in keys:
        if _FLUX_RE.search(k):
            return "flux"
        if k.startswith(("noise_refiner.", "context_refiner.", "diffusion_model.noise_refiner.")):
            return "zimage"
        if _DIT_RES["qwen_image"].match(k) and (".img_mod." in k or ".txt_mod." in k):
            return "qwen_image"
        m = _BLOCK_RE.search(k)
        if m:
            if m.group(1) == "input_blocks":
                n_in = max(n_in, int(m.group(2)))
            elif m.group(1) == "output_blocks":
                n_out = max(n_out, int(m.group(2)))
    if n_in == 11 and n_out == 11:
        return "sd15"
    if n_in == 8 and n_out == 8:
        return "sdxl"
    return None


def block_of_key(key: str, layout: str | None = None) -> str:
    """'diffusion_model.input_blocks.4.1.proj_in.weight' -> 'IN04'; middle -> 'M00'; Flux
    'diffusion_model.double_blocks.3.img_attn.qkv.weight' -> 'D3', 'single_blocks.12...' -> 'S12';
    others -> 'BASE'."""
    if layout in DIT_LAYOUTS:  # anchored at the model's root: SD's transformer_blocks sit inside input_blocks
        d = _DIT_RES[layout].match(key)
        if not d:
            return "BASE"
        prefix = next(p for p, stack, _ in DIT_LAYOUTS[layout] if stack == d.group(1))
        return f"{prefix}{int(d.group(2))}"
    f = _FLUX_RE.search(key)
    if f:
        return ("D" if f.group(1) == "double_blocks" else "S") + str(int(f.group(2)))
    m = _BLOCK_RE.search(key)
    if not m:
        return "BASE"
    kind, idx = m.group(1), int(m.group(2))
    if kind == "input_blocks":
        return f"IN{idx:02d}"
    if kind == "output_blocks":
        return f"OUT{idx:02d}"
    return "M00"
