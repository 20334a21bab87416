"""LoRA prompt tags, strength schedules and block weights (pure logic, no ComfyUI imports).

Tags (A1111 style, ``lora`` or ``lyco``)::

    <lora:name:w>                     UNet and text encoder strength w
    <lora:name:unet_w:te_w>           separate strengths
    <lora:name:unet=0.8:te=0.5:start=0:end=0.6>
    <lora:name:1:sched=0:0.2,0.5:1,1:0.4>     step fraction : multiplier, linear between keyframes
    <lora:name:1:lbw=MIDD>            block weights: a preset or 17/26 (SD1.5), 12/20 (SDXL) values
    <lora:name:1:lbw=D0-D18:1,S0-S37:0>   Flux: double blocks D0..D18, single blocks S0..S37 (ranges)

Every error is a ``ValueError`` whose message names the offending character position.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field

MAX_ABS_STRENGTH = 1000.0

# ------------------------------------------------------------------ errors


def _where(text: str, pos: int, width: int = 1) -> str:
    """A one-line excerpt of `text` with a caret under character `pos` (0-based)."""
    lo = max(0, pos - 30)
    hi = min(len(text), pos + 30)
    excerpt = text[lo:hi].replace("\n", " ")
    return f"\n    {excerpt}\n    {' ' * (pos - lo)}{'^' * max(1, width)}"


class LoraSyntaxError(ValueError):
    """A malformed tag, schedule or block-weight list; `pos` is the 0-based character index."""

    def __init__(self, what: str, text: str, pos: int, message: str, width: int = 1):
        self.pos = pos
        super().__init__(f"{what}: {message} at character {pos + 1}:{_where(text, pos, width)}")


# ------------------------------------------------------------------ numbers


def _number(text: str, start: int, end: int, what: str, full: str, base: int = 0) -> float:
    s = text[start:end]
    try:
        v = float(s.strip())
    except ValueError:
        raise LoraSyntaxError(what, full, base + start, f"'{s.strip()}' is not a number", max(1, end - start)) from None
    if not math.isfinite(v):
        raise LoraSyntaxError(what, full, base + start, f"'{s.strip()}' is not a finite number", max(1, end - start))
    if abs(v) > MAX_ABS_STRENGTH:
        raise LoraSyntaxError(what, full, base + start,
                              f"{v:g} is out of range (|value| must be <= {MAX_ABS_STRENGTH:g})", max(1, end - start))
    return v


def check_strength(value, name: str) -> float:
    """Strengths may be negative or large, but must be finite and <= MAX_ABS_STRENGTH in size."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} is {value}: it must be a finite number (negative values are allowed).")
    if abs(v) > MAX_ABS_STRENGTH:
        raise ValueError(f"{name} is {v:g}: its size must be <= {MAX_ABS_STRENGTH:g}.")
    return v


# ------------------------------------------------------------------ schedules


@dataclass(frozen=True)
class Schedule:
    """Keyframes (step fraction, multiplier), sorted by fraction; linear between keyframes, held
    flat before the first and after the last.  Two keyframes at one fraction make a jump (the later
    one wins from that fraction on)."""
    keys: tuple

    def __call__(self, p: float) -> float:
        k = self.keys
        if p <= k[0][0]:
            # at a jump exactly on the first position the later keyframe wins
            j = 0
            while j + 1 < len(k) and k[j + 1][0] <= p:
                j += 1
            return k[j][1]
        if p >= k[-1][0]:
            return k[-1][1]
        for i in range(len(k) - 1):
            p0, v0 = k[i]
            p1, v1 = k[i + 1]
            if p0 <= p < p1:
                return v0 + (v1 - v0) * (p - p0) / (p1 - p0)
        return k[-1][1]

    def is_constant(self) -> bool:
        return len({v for _, v in self.keys}) == 1

    def __str__(self):
        return ",".join(f"{p:g}:{v:g}" for p, v in self.keys)


def parse_schedule(text: str, what: str = "schedule", full: str | None = None, base: int = 0) -> Schedule | None:
    """'0:0.2,0.5:1,1:0.4' -> Schedule.  Empty -> None (constant strength).

    `full`/`base` let an error inside a prompt tag point at the character of the whole prompt."""
    full = text if full is None else full
    if text is None or not text.strip():
        return None
    keys = []
    pos = 0
    for part in text.split(","):
        start, end = pos, pos + len(part)
        pos = end + 1
        if not part.strip():
            raise LoraSyntaxError(what, full, base + start, "empty keyframe (two commas in a row or a trailing comma)")
        if ":" not in part:
            raise LoraSyntaxError(what, full, base + start,
                                  f"keyframe '{part.strip()}' needs the form fraction:strength (e.g. 0.5:1)", len(part))
        c = part.index(":")
        p = _number(part, 0, c, what, full, base + start)
        v = _number(part, c + 1, len(part), what, full, base + start)
        if not 0.0 <= p <= 1.0:
            raise LoraSyntaxError(what, full, base + start, f"step fraction {p:g} must be between 0 and 1", c)
        if keys and p < keys[-1][0]:
            raise LoraSyntaxError(what, full, base + start,
                                  f"step fraction {p:g} comes after {keys[-1][0]:g}: keyframes must be in order", c)
        keys.append((p, v))
    return Schedule(tuple(keys))


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
LAYOUT_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "flux": "Flux"}

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


def _flux_id_ok(bid: str) -> bool:
    if bid == "BASE":
        return True
    n = int(bid[1:])
    return (bid[0] == "D" and n < FLUX_DOUBLE) or (bid[0] == "S" and n < FLUX_SINGLE)


def _parse_flux_named(text: str, what: str, full: str, base: int, source: str) -> BlockWeights:
    """'D0-D18:1,S0-S37:0' (or '=' for ':'): block id or range : weight; ids not named keep 1."""
    w = dict.fromkeys(FLUX_58, 1.0)
    pos = 0
    for part in text.split(","):
        start, end = pos, pos + len(part)
        pos = end + 1
        if not part.strip():
            raise LoraSyntaxError(what, full, base + start, "empty entry (two commas in a row or a trailing comma)")
        sep = max(part.find(":"), part.find("="))
        if sep < 0:
            raise LoraSyntaxError(what, full, base + start, f"'{part.strip()}' needs the form BLOCK:weight or "
                                  "FIRST-LAST:weight (e.g. D0-D18:1,S0-S37:0)", max(1, len(part)))
        m = _FLUX_ID.fullmatch(part[:sep])
        if not m:
            raise LoraSyntaxError(what, full, base + start, f"'{part[:sep].strip()}' is not a Flux block: use BASE, "
                                  f"D0..D{FLUX_DOUBLE - 1} (double blocks) or S0..S{FLUX_SINGLE - 1} (single blocks)",
                                  max(1, sep))
        a, b = m.group(1).upper(), (m.group(2) or m.group(1)).upper()
        for bid in (a, b):
            if not _flux_id_ok(bid):
                raise LoraSyntaxError(what, full, base + start, f"block {bid} does not exist: Flux has "
                                      f"D0..D{FLUX_DOUBLE - 1} and S0..S{FLUX_SINGLE - 1}", max(1, sep))
        if (a == "BASE") != (b == "BASE") or a[0] != b[0] or (a != "BASE" and int(a[1:]) > int(b[1:])):
            raise LoraSyntaxError(what, full, base + start, f"range {a}-{b} must go upwards within one kind "
                                  "(D3-D7 or S0-S37)", max(1, sep))
        v = _number(part, sep + 1, len(part), what, full, base + start)
        if a == "BASE":
            w["BASE"] = v
        else:
            for i in range(int(a[1:]), int(b[1:]) + 1):
                w[f"{a[0]}{i}"] = v
    return BlockWeights("flux", tuple(w.items()), source)


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
    if layout == "flux":
        preset = next((p for p in FLUX_PRESET_NAMES if p.lower() == s.lower()), None)
        if preset is not None:
            return _parse_flux_named(FLUX_PRESETS[preset], what, FLUX_PRESETS[preset], 0, preset)
        if re.search(r"[:=]", s):
            return _parse_flux_named(text, what, full, base, "named")
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
    """'sd15' (12 input blocks), 'sdxl' (9 input blocks) or 'flux' (double_blocks/single_blocks) from the
    model's state-dict keys, else None."""
    n_in = -1
    n_out = -1
    for k in keys:
        if _FLUX_RE.search(k):
            return "flux"
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


def block_of_key(key: str) -> str:
    """'diffusion_model.input_blocks.4.1.proj_in.weight' -> 'IN04'; middle -> 'M00'; Flux
    'diffusion_model.double_blocks.3.img_attn.qkv.weight' -> 'D3', 'single_blocks.12...' -> 'S12';
    others -> 'BASE'."""
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


# ------------------------------------------------------------------ tags


@dataclass
class LoraTag:
    name: str
    unet: float = 1.0
    te: float = 1.0
    start: float = 0.0
    end: float = 1.0
    sched: Schedule | None = None
    lbw: str = ""       # raw block-weight text, parsed later against the model's layout
    lbw_pos: int = 0    # where it starts in the prompt (for errors)
    pos: int = 0        # where the tag starts in the prompt
    text: str = field(default="", repr=False)


_TAG_START = re.compile(r"<\s*(lora|lyco)\s*:", re.IGNORECASE)
_NAMED = ("unet", "te", "start", "end", "sched", "lbw")


def parse_tags(prompt: str):
    """Returns (text with the tags removed, [LoraTag]).  Raises LoraSyntaxError pointing at the character."""
    if prompt is None:
        return "", []
    tags = []
    pieces = []
    pos = 0
    for m in _TAG_START.finditer(prompt):
        if m.start() < pos:  # inside a previous tag (cannot happen: '>' closes a tag)
            continue
        close = prompt.find(">", m.end())
        nxt = _TAG_START.search(prompt, m.end())
        if close < 0 or (nxt is not None and nxt.start() < close):
            raise LoraSyntaxError("LoRA tag", prompt, m.start(), "this tag is not closed with '>'", m.end() - m.start())
        tags.append(_parse_one(prompt, m.start(), m.end(), close))
        pieces.append(prompt[pos:m.start()])
        pos = close + 1
    pieces.append(prompt[pos:])
    return _tidy("".join(pieces)) if tags else prompt, tags


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"[ \t]+([,.;])", r"\1", text)
    text = re.sub(r",(\s*,)+", ",", text)
    text = re.sub(r"(?m)^[ \t]+|[ \t]+$", "", text)
    return text.strip().strip(",").strip()


def _parse_one(prompt: str, tag_start: int, body_start: int, close: int) -> LoraTag:
    what = "LoRA tag"
    body = prompt[body_start:close]
    # split on ':' keeping offsets
    segs = []
    p = 0
    for s in body.split(":"):
        segs.append((body_start + p, s))
        p += len(s) + 1
    name_pos, name = segs[0]
    if not name.strip():
        raise LoraSyntaxError(what, prompt, name_pos, "the LoRA name is empty (write <lora:name:strength>)")
    tag = LoraTag(name=name.strip(), pos=tag_start, text=prompt[tag_start:close + 1])
    positional = []
    seen = set()
    i = 1
    while i < len(segs):
        spos, s = segs[i]
        if "=" not in s:
            if seen:
                raise LoraSyntaxError(what, prompt, spos, f"'{s}' must be a named argument (key=value) once named "
                                      f"arguments have started; keys: {', '.join(_NAMED)}", max(1, len(s)))
            if len(positional) == 2:
                raise LoraSyntaxError(what, prompt, spos, "at most two plain strengths (unet, te) are allowed",
                                      max(1, len(s)))
            if not s.strip():
                raise LoraSyntaxError(what, prompt, spos, "empty strength (write <lora:name:0.8>)")
            positional.append(_number(s, 0, len(s), what, prompt, spos))
            i += 1
            continue
        eq = s.index("=")
        key = s[:eq].strip().lower()
        key = {"unet_w": "unet", "te_w": "te", "stop": "end", "schedule": "sched", "block_weights": "lbw"}.get(key, key)
        if key not in _NAMED:
            close_k = difflib.get_close_matches(key, _NAMED, n=1)
            hint = f" (did you mean {close_k[0]}?)" if close_k else ""
            raise LoraSyntaxError(what, prompt, spos, f"unknown argument '{s[:eq].strip()}'{hint}; known: "
                                  f"{', '.join(_NAMED)}", max(1, eq))
        if key in seen:
            raise LoraSyntaxError(what, prompt, spos, f"argument '{key}' given twice", max(1, eq))
        seen.add(key)
        vpos = spos + eq + 1
        value = s[eq + 1:]
        if key == "sched":
            # the schedule itself uses ':' - take following segments that are not key=value
            j = i + 1
            while j < len(segs) and "=" not in segs[j][1]:
                value += ":" + segs[j][1]
                j += 1
            tag.sched = parse_schedule(value, what, prompt, vpos)
            if tag.sched is None:
                raise LoraSyntaxError(what, prompt, vpos, "sched= is empty (write sched=0:1,1:0.5)")
            i = j
            continue
        if key == "lbw":
            if not value.strip():
                raise LoraSyntaxError(what, prompt, vpos, "lbw= is empty (write lbw=MIDD or 17 comma values)")
            # Flux's named blocks use ':' (lbw=D0-D18:1,S0-S37:0): take following segments that are not key=value
            j = i + 1
            while j < len(segs) and "=" not in segs[j][1]:
                value += ":" + segs[j][1]
                j += 1
            tag.lbw, tag.lbw_pos = value, vpos
            i = j
            continue
        if not value.strip():
            raise LoraSyntaxError(what, prompt, vpos, f"{key}= has no value")
        v = _number(value, 0, len(value), what, prompt, vpos)
        if key in ("start", "end") and not 0.0 <= v <= 1.0:
            raise LoraSyntaxError(what, prompt, vpos, f"{key}={v:g}: must be a step fraction between 0 and 1",
                                  max(1, len(value)))
        setattr(tag, key, v)
        i += 1
    if positional:
        if "unet" in seen and "te" in seen:
            raise LoraSyntaxError(what, prompt, segs[1][0], "plain strength given together with unet= and te=")
        if len(positional) == 1:
            if "unet" not in seen:
                tag.unet = positional[0]
            if "te" not in seen:
                tag.te = positional[0]
        else:
            if "unet" in seen or "te" in seen:
                raise LoraSyntaxError(what, prompt, segs[1][0], "two plain strengths given together with unet=/te=")
            tag.unet, tag.te = positional
    if tag.start > tag.end:
        raise LoraSyntaxError(what, prompt, tag_start, f"start={tag.start:g} is after end={tag.end:g}",
                              close + 1 - tag_start)
    return tag


# ------------------------------------------------------------------ names


def _norm(s: str) -> str:
    return s.replace("\\", "/")


def _stem(s: str) -> str:
    base, ext = os.path.splitext(s)
    return base if ext.lower() in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft") else s


def resolve_name(name: str, available) -> str:
    """Match `name` against the files of the loras folder: exact, then without extension, then
    case-insensitively (with or without extension, also by file name without its subfolder when that is
    unique).  Unknown -> FileNotFoundError listing the closest names."""
    available = list(available)
    n = _norm(name.strip())
    norm = {_norm(a): a for a in available}
    if n in norm:
        return norm[n]
    by_stem = {}
    for a in available:
        by_stem.setdefault(_stem(_norm(a)), []).append(a)
    if n in by_stem and len(by_stem[n]) == 1:
        return by_stem[n][0]
    low = n.lower()
    for table in ({k.lower(): [v] for k, v in norm.items()},
                  {k.lower(): v for k, v in by_stem.items()}):
        hit = table.get(low) or table.get(_stem(low))
        if hit and len(hit) == 1:
            return hit[0]
    # file name without subfolder, if unique
    base_hits = [a for a in available if _stem(os.path.basename(_norm(a))).lower() == _stem(low)]
    if len(base_hits) == 1:
        return base_hits[0]
    stems = [_stem(_norm(a)) for a in available]
    close = difflib.get_close_matches(_stem(n), stems, n=5, cutoff=0.3)
    if not close:
        close = difflib.get_close_matches(_stem(low), [s.lower() for s in stems], n=5, cutoff=0.3)
    if not available:
        raise FileNotFoundError(f"LoRA '{name}' not found: the loras folder is empty. Put the .safetensors file "
                                "in models/loras and refresh.")
    hint = f" Closest names: {', '.join(close)}." if close else f" The folder has {len(available)} LoRA(s)."
    raise FileNotFoundError(f"LoRA '{name}' not found in the loras folder.{hint} Fix the name in the tag or widget.")


