"""What a LoRA file says about itself: its safetensors ``__metadata__`` and the trigger words in it (pure logic).

The header is read by the pack's one safetensors header reader (st_header.py).  Trigger words are kohya's training
tags (``ss_tag_frequency``): text written by whoever made the file, which the nodes' tooltip says to wire into a
prompt -- so they are capped (count and length) and stripped of everything the pack's prompt syntaxes act on
(``<lora:...>`` tags, ``{choices}``, ``__wildcards__``, a leading ``#`` comment) and of line breaks and control
characters.  A file whose header or metadata is bad gives a ``ValueError`` naming the file; ``TriggerCache``
remembers either outcome per file identity (path, size, mtime), so no header is parsed twice.
"""
import logging
import math
import os
import re
import threading
import unicodedata

from . import st_header
from .ckpt import file_identity

log = logging.getLogger("lean.lora")

MAX_TRIGGERS = 20       # words returned per file
MAX_TRIGGER_LEN = 64    # characters per word (longer "tags" are captions or payloads, not trigger words: dropped)
SAFETENSORS_EXT = (".safetensors", ".sft")


class LoraMetadataError(ValueError):
    """A LoRA's metadata that cannot be used; the message names the file and what is wrong."""


def read_safetensors_metadata(path) -> dict:
    """The ``__metadata__`` of a .safetensors file ({str: str}; {} when absent), its header read and validated by
    st_header (HeaderError, a ValueError, when it is malformed)."""
    return st_header.read_header(path).metadata


_DROP = re.compile(r"[<>{}]")
_UNDERSCORES = re.compile(r"_{2,}")
_SPACES = re.compile(r"\s+")


def clean_trigger(tag) -> str:
    """One trigger word made inert: line breaks and control/format characters become spaces, ``<``, ``>``, ``{``,
    ``}`` go, runs of underscores become one (no ``__wildcard__``), spaces are collapsed and a leading ``#`` (a
    comment line in Prompt Batch) is dropped.  '' when nothing is left or it is longer than MAX_TRIGGER_LEN."""
    if type(tag) is not str or len(tag) > 16 * MAX_TRIGGER_LEN:
        return ""
    t = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in tag)
    t = _UNDERSCORES.sub("_", _DROP.sub("", t))
    t = _SPACES.sub(" ", t).strip().lstrip("#").strip()
    return t if len(t) <= MAX_TRIGGER_LEN else ""


def trigger_words(metadata: dict, limit: int = MAX_TRIGGERS, name: str = "LoRA"):
    """Most frequent training tags from kohya's ``ss_tag_frequency`` (JSON text: {dataset: {tag: count}}), best first,
    each cleaned by clean_trigger, at most `limit`.  [] when the file has none; LoraMetadataError (naming `name`)
    when ``ss_tag_frequency`` is there but is not that shape (not JSON, not objects, a count that is not a finite
    number >= 0)."""
    raw = metadata.get("ss_tag_frequency") if isinstance(metadata, dict) else None
    if not raw:
        return []

    def bad(why):
        return LoraMetadataError(f"{name}: its ss_tag_frequency metadata (the training tags) {why}, so it has no "
                                 "trigger words; the LoRA itself still works -- re-save the file without that "
                                 "metadata or get a clean copy to have them")
    if not isinstance(raw, str):
        raise bad("is not text")
    try:
        freq = st_header.loads(raw)
    except ValueError as e:
        raise bad(f"is not valid JSON ({str(e)[:120]})") from None
    if type(freq) is not dict:
        raise bad("is not a JSON object")
    total = {}
    for dataset, tags in freq.items():
        if type(tags) is not dict:
            raise bad(f"has a dataset {st_header.quote(dataset)} that is not an object of tag counts")
        for tag, n in tags.items():
            if not ((type(n) is int and n >= 0) or (type(n) is float and math.isfinite(n) and n >= 0)):
                raise bad(f"gives tag {st_header.quote(tag)} the count {st_header.short(n)}: counts must be finite "
                          "numbers >= 0")
            t = clean_trigger(tag)
            if t:
                total[t] = total.get(t, 0) + n
    best = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
    return [t for t, _ in best[:max(0, min(int(limit), MAX_TRIGGERS))]]


class TriggerCache:
    """Trigger words per LoRA file, or the error that reading them gave, remembered per file identity (real path,
    size, mtime): a file is read again only when it changes, a bad one (even a 100 MB header) only once."""

    def __init__(self, read=read_safetensors_metadata):
        self._read = read
        self._lock = threading.Lock()
        self._by_path = {}   # real path -> (identity, words, error)

    def get(self, path):
        """(words, error): error is None, or a one-line message that names the file by its base name only."""
        if not str(path).lower().endswith(SAFETENSORS_EXT):
            return [], None
        name = os.path.basename(str(path))
        real = os.path.realpath(path)
        ident = file_identity(real)
        with self._lock:
            hit = self._by_path.get(real)
            if hit is not None and ident is not None and hit[0] == ident:
                return hit[1], hit[2]
            words, error = self._load(path, name)
            if ident is not None:
                self._by_path[real] = (ident, words, error)
            return words, error

    def _load(self, path, name):
        try:
            return trigger_words(self._read(path), name=name), None
        except ValueError as e:  # HeaderError, LoraMetadataError: their messages name the file by base name
            return [], str(e)
        except OSError as e:     # its str() would show the absolute path
            return [], f"{name}: cannot be read ({e.strerror or type(e).__name__})"
        except Exception as e:  # one odd file must not take the listing or a LoRA node down
            log.exception("[Lean LoRA] %s: reading its metadata failed", name)
            return [], f"{name}: its metadata could not be read ({type(e).__name__})"
