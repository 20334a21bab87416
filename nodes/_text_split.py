"""Prompt Batch on models that read text padding as content: each entry's rows run with its own prompt length.

A batch of prompts is one conditioning tensor [N, T, C]: a shorter prompt is padded at the end to the longest, T.
Models whose attention skips masked text tokens (Qwen-Image in ComfyUI 0.33) get a mask and stay one model call.
The others read the padding: Z-Image's NextDiT drops the text mask (``cap_mask = None``) and places the image tokens
after the text ones, so a padded prompt moves its image; Flux.2 Klein's prompts over 512 tokens, Qwen-Image on a
host whose attention ignores the mask, likewise.  There this APPLY_MODEL wrapper splits each model call by prompt
length: the rows of entry i run with the conditioning cut to entry i's own tokens, rows of equal length together,
so image i sees exactly what stock CLIPTextEncode(prompt i) gives; the calls are concatenated back in row order.
Still one sampler pass and one text-encoder pass; the model runs once per distinct length per step.
Flux.2 pads every prompt shorter than 512 tokens with zeros at the start itself (``_host.text_left_pad_floor``):
there Prompt Batch pads the same way, so prompts up to 512 tokens stay one model call (Flux.2-dev's Mistral
encoder does not pad; Klein's pads to 512), and past 512 a row keeps its last max(own, 512) tokens.

A row is trimmed only when its text is exactly Prompt Batch's padded entry (compared in the call, on the device),
so a negative prompt, a combined or edited conditioning and any other model call pass through untouched.
Which entry a row is comes from the host's sampler (``_host.sampler_rows``, ``core/lora_rows.py``); the entries of
a sub-call are handed to the per-image LoRA branch inside it (``lora_rows.ROW_ENTRIES_KEY``).
"""
import logging

import torch

import comfy.patcher_extension

from ..core import lora_rows
from . import _host

log = logging.getLogger("lean.prompt_batch")

WRAPPER_KEY = "lean_prompt_lengths"


def _rows(v, idx, rows):
    """`v` cut to the rows `idx` where it holds one item per row of the call (tensors, lists and dicts inside)."""
    if torch.is_tensor(v):
        return v[idx.to(v.device)] if v.ndim and v.shape[0] == rows else v
    if isinstance(v, dict):
        return {k: _rows(x, idx, rows) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_rows(x, idx, rows) for x in v)
    return v


class TextLengthSplit:
    """APPLY_MODEL wrapper: rows whose text is Prompt Batch's padded entry e run with the text cut to lengths[e]."""

    def __init__(self, conds, lengths, left=False):
        self.conds = [c.detach() for c in conds]  # one per step of a CLIP hook schedule: [N, T, C] each
        self.lengths = [int(x) for x in lengths]
        self.left = left  # the prompts were padded at the start: a row's own tokens are its last ones
        self.n = len(self.lengths)
        self.width = self.conds[0].shape[1]
        self._on = {}  # (device, dtype) -> the conds there
        self._said = False

    def _refs(self, like):
        key = (like.device, like.dtype)
        if key not in self._on:
            self._on = {key: [c.to(like.device, like.dtype) for c in self.conds]}
        return self._on[key]

    def _length_of_rows(self, ctx, entries):
        refs = self._refs(ctx)
        out = []
        for r, e in enumerate(entries):
            own = self.lengths[e]
            if own < self.width and any(torch.equal(ctx[r], ref[e]) for ref in refs):
                out.append(own)
            else:
                out.append(self.width)
        return out

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None,
                 **kwargs):
        topts = transformer_options if transformer_options is not None else {}
        rows = x.shape[0]

        def whole():
            return executor(x, t, c_concat, c_crossattn, control, topts, **kwargs)

        if not torch.is_tensor(c_crossattn) or c_crossattn.ndim != 3 or c_crossattn.shape[0] != rows \
                or c_crossattn.shape[1] != self.width:
            return whole()
        chunks, window = _host.sampler_rows(topts)
        try:
            entries = lora_rows.row_entries(rows, chunks, self.n, window) if chunks is not None else None
        except lora_rows.RowMappingError:
            entries = None
        if entries is None:
            if not self._said:
                self._said = True
                log.warning("[Lean Nodes] LeanPromptBatch: a model call that does not come from ComfyUI's sampler "
                            "(rows not known): its prompts keep their padding")
            return whole()
        lengths = self._length_of_rows(c_crossattn, entries)
        groups = {}
        for r, length in enumerate(lengths):
            groups.setdefault(length, []).append(r)
        if len(groups) == 1 and self.width in groups:
            return whole()
        out = None
        for length, group in sorted(groups.items()):
            idx = torch.tensor(group, dtype=torch.long, device=x.device)
            sub = dict(topts)
            sub[lora_rows.ROW_ENTRIES_KEY] = [entries[r] for r in group]
            extra = {k: _rows(v, idx, rows) for k, v in kwargs.items()}
            extra = _host.text_length_kwargs(extra, length, self.width, self.left)
            text = c_crossattn[idx.to(c_crossattn.device)]
            text = text[:, self.width - length:] if self.left else text[:, :length]
            y = executor(x[idx], _rows(t, idx, rows), _rows(c_concat, idx, rows), text, _rows(control, idx, rows),
                         sub, **extra)
            if out is None:
                out = y.new_empty((rows,) + tuple(y.shape[1:]))
            out[idx.to(out.device)] = y
        return out


def add_split(model, conds, lengths, left=False):
    """A clone of `model` whose calls run each Prompt Batch entry with its own prompt length (the input model
    unchanged; `left`: the prompts were padded at the start).  Added before the per-image LoRA branch, so that it
    runs outside it."""
    new_model = model.clone()
    new_model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY,
                                   TextLengthSplit(conds, lengths, left))
    return new_model
