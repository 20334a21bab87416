"""LoRA strength pieces shared by the tag and block-weight grammars (pure logic, no ComfyUI imports):
the syntax error that points at a character, finite bounded numbers, and strength schedules::

    0:0.2,0.5:1,1:0.4     step fraction : multiplier, linear between keyframes

Every error is a ``ValueError`` whose message names the offending character position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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
