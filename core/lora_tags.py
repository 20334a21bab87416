"""LoRA prompt tags (A1111 style, ``lora`` or ``lyco``; pure logic, no ComfyUI imports)::

    <lora:name:w>                     UNet and text encoder strength w
    <lora:name:unet_w:te_w>           separate strengths
    <lora:name:unet=0.8:te=0.5:start=0:end=0.6>
    <lora:name:1:sched=0:0.2,0.5:1,1:0.4>     schedule (core/lora_schedule.py)
    <lora:name:1:lbw=MIDD>            block weights (core/lora_blocks.py), parsed later against the model's layout

Every error is a ``ValueError`` whose message names the offending character position.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field

from .lora_schedule import LoraSyntaxError, Schedule, _number, parse_schedule

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
