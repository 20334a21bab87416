"""Assemble per-prompt conditioning from encoded chunks (pure torch, no ComfyUI).

A CLIP prompt longer than 75 tokens is encoded as several 77-token chunks whose outputs are
concatenated along the token axis.  To put prompts of different lengths in one batch, the shorter
ones are padded with the *encoded empty chunk* (what encoding "" gives), the way A1111 pads and
the way ComfyUI treats long prompts - never with zeros, which the UNet would read as a real
(and very unusual) token sequence.
"""
from __future__ import annotations

import torch


def plan_passes(rows, rows_per_pass):
    """Split the rows to encode into passes of at most `rows_per_pass` rows, order kept."""
    if rows_per_pass < 1:
        raise ValueError("rows_per_pass must be >= 1")
    rows = list(rows)
    return [rows[s:s + rows_per_pass] for s in range(0, len(rows), rows_per_pass)]


def unique_rows(row_keys):
    """Deduplicate rows: (first positions of the distinct keys, index of each row's key among them).

    Identical chunks (a long shared prefix, the empty chunk) go through the text encoder once."""
    seen = {}
    firsts, index = [], []
    for pos, key in enumerate(row_keys):
        if key not in seen:
            seen[key] = len(firsts)
            firsts.append(pos)
        index.append(seen[key])
    return firsts, index


def group_by_length(items, lengths):
    """[(length, [items of that length])], lengths in first-seen order, item order kept."""
    groups = {}
    for item, n in zip(items, lengths):
        groups.setdefault(n, []).append(item)
    return list(groups.items())


def chunk_key(chunks):
    """A hashable key of one chunk row (one chunk per encoder).  Items are (token, weight[, word id]);
    a token that is not an int (an embedding tensor) is keyed by identity."""
    out = []
    for chunk in chunks:
        out.append(tuple((t if isinstance(t, int) else ("obj", id(t)), float(w)) for t, w, *_ in chunk))
    return tuple(out)


def assemble(chunk_cond, chunk_pooled, chunk_counts, pad_chunk, k_max=None):
    """Stack prompts into one batch.

    chunk_cond:   {(prompt, chunk): tensor [L, C]}
    chunk_pooled: {(prompt, chunk): tensor [C']} or None (model without pooled output)
    chunk_counts: chunks per prompt
    pad_chunk:    the encoded empty chunk, [L, C]
    k_max:        chunks every prompt is padded to (default max(chunk_counts); a slice of a larger batch passes the
                  whole batch's, so its entries equal the whole batch's)
    Returns (cond [N, K*L, C], pooled [N, C'] or None) with K = k_max; the pooled
    output of a prompt is that of its first chunk (as in ComfyUI's own encode)."""
    if not chunk_counts:
        raise ValueError("no prompts to assemble")
    k_max = max(chunk_counts) if k_max is None else k_max
    if k_max < max(chunk_counts):
        raise ValueError(f"cannot pad {max(chunk_counts)} chunks down to {k_max}")
    rows = []
    for i, n in enumerate(chunk_counts):
        parts = [chunk_cond[(i, k)] for k in range(n)] + [pad_chunk] * (k_max - n)
        rows.append(torch.cat(parts, dim=0))
    cond = torch.stack(rows, dim=0)
    pooled = None
    if chunk_pooled is not None:
        pooled = torch.stack([chunk_pooled[(i, 0)] for i in range(len(chunk_counts))], dim=0)
    return cond, pooled


def pad_tokens(cond, length, pad):
    """cond [n, T, C] padded to [n, length, C] with repeats of pad [1, Tp, C] (cut to fit) after it; pad None: with
    zero tokens before it, how a model that pads shorter prompts on the left with zeros (Flux.2, to 512 tokens) sees
    a prompt shorter than `length`."""
    t = cond.shape[1]
    if t == length:
        return cond
    if t > length:
        raise ValueError(f"cannot pad {t} tokens down to {length}")
    need = length - t
    if pad is None:
        return torch.cat([cond.new_zeros((cond.shape[0], need, cond.shape[2])), cond], dim=1)
    reps = -(-need // pad.shape[1])
    filler = pad.repeat(1, reps, 1)[:, :need].to(cond.device, cond.dtype)
    return torch.cat([cond, filler], dim=1)


def stack_padded(conds, pad, length=None):
    """[1, T_i, C] tensors padded with `pad` (None: zeros before them, pad_tokens) to the longest (or to `length`)
    and stacked into [N, T, C]."""
    length = max(c.shape[1] for c in conds) if length is None else length
    return torch.cat([pad_tokens(c, length, pad) for c in conds], dim=0)


def row_bytes(length, width, score_heads=0):
    """The memory estimate of one text-encoder row of `length` tokens (rows_per_pass, tokens_per_pass): ~24
    activations of [length, width] fp32, plus `score_heads` attention score maps [length, length] fp32."""
    return length * width * 4 * 24 + score_heads * length * length * 4


def rows_per_pass(free_bytes, chunk_len, width, total_rows, cap=1024, fraction=0.25, score_heads=0):
    """How many rows of `chunk_len` tokens (77 for a CLIP chunk) one text-encoder forward may take given
    `free_bytes` of memory.

    The estimate is deliberately generous: ~24 activations of [L, width] fp32 live at once per
    row (hidden states, MLP 4x, attention probabilities), and only `fraction` of free memory is
    used.  Everything fits in one pass unless memory is really short.  `score_heads`: also the attention scores
    [score_heads, L, L] fp32 of a row (an LLM's long prompt: its scores outgrow its hidden states); cap None: no
    cap but `total_rows`."""
    n = int(free_bytes * fraction // max(1, row_bytes(chunk_len, width, score_heads)))
    return max(1, min(total_rows, n) if cap is None else min(total_rows, cap, n))


def length_passes(lengths, pad_cost, max_rows):
    """Prompts of a decoder-only text encoder grouped into forward passes whose rows are padded at the end to the
    pass's longest: [[prompt indices]], each pass longest first.  The prompts are taken longest first; one joins the
    current pass while padding it costs at most `pad_cost` tokens (what one more pass costs, in tokens) and the pass
    stays within max_rows(its longest length) rows (memory); else it starts the next pass.  Equal lengths always
    share a pass (memory allowing).  O(n log n) in the number of prompts."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    passes, cap = [], 0
    for i in order:
        if passes and lengths[passes[-1][0]] - lengths[i] <= pad_cost and len(passes[-1]) < cap:
            passes[-1].append(i)
            continue
        passes.append([i])
        cap = max(1, int(max_rows(lengths[i])))
    return passes


def tokens_per_pass(free_bytes, width, fraction=0.25, score_heads=0):
    """How many tokens one packed forward of an LLM text encoder may hold (the prompts side by side in one row,
    token_packs) given `free_bytes` of memory: the largest S whose row_bytes (the estimate rows_per_pass uses) is
    within `fraction` of it; at least 1."""
    budget = free_bytes * fraction
    a, b = row_bytes(1, 0, score_heads), row_bytes(1, width)  # row_bytes(S) = a S^2 + b S
    s = max(1, int(budget / b if a == 0 else (-b + (b * b + 4 * a * budget) ** 0.5) / (2 * a)))
    while row_bytes(s + 1, width, score_heads) <= budget:  # the float root, made exact
        s += 1
    while s > 1 and row_bytes(s, width, score_heads) > budget:
        s -= 1
    return s


def token_packs(lengths, budget):
    """Prompts of a decoder-only text encoder grouped into packed forward passes (each pass computes its prompts'
    own tokens side by side in one row: no padding): [[prompt indices]], each pass longest first.  A pass holds at
    most `budget` tokens (a longer prompt has a pass of its own).  Best fit, longest first: few passes, and
    O(n log n) comparisons in the number of prompts."""
    import bisect
    budget = max(1, int(budget))
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    passes, room = [], []  # room: sorted [(tokens left, pass index)] of the passes with tokens left
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(room, (n, -1))
        if at < len(room):
            left, p = room.pop(at)
            passes[p].append(i)
            if left > n:
                bisect.insort(room, (left - n, p))
            continue
        passes.append([i])
        if budget > n:
            bisect.insort(room, (budget - n, len(passes) - 1))
    return passes


def stack_masked(conds, masks):
    """[1, T_i, C] tensors zero-padded at the end to the longest and stacked into [N, T, C], with the attention
    mask [N, T] (integer: 1 = a real token, 0 = padding) a model that reads it needs to ignore the padding; a
    prompt's own mask ([1, T_i] or None for all ones) is kept for its tokens.  Mask None when nothing is padded
    or masked (what the host's encoder gives for one unmasked prompt)."""
    length = max(c.shape[1] for c in conds)
    rows, mrows = [], []
    for c, m in zip(conds, masks):
        t = c.shape[1]
        rows.append(torch.cat([c, c.new_zeros((1, length - t) + tuple(c.shape[2:]))], dim=1) if t < length else c)
        own = torch.ones((1, t), dtype=torch.long) if m is None else m.reshape(1, t).to("cpu", torch.long)
        mrows.append(torch.cat([own, torch.zeros((1, length - t), dtype=torch.long)], dim=1))
    mask = torch.cat(mrows, dim=0)
    if bool(mask.all()):
        mask = None
    return torch.cat(rows, dim=0), mask


def merge_groups(n, groups):
    """Entries encoded in groups (one group per text-encoder LoRA set) -> one batch in entry order.

    groups: [(entry indices, cond [n_g, T_g, C], pooled [n_g, C'] or None, pad [1, Tp, C] or None)], each group's
    rows padded to the longest T with its own encoded empty prompt (what encoding that entry alone and padding it
    would give), or with zeros at the start where pad is None (pad_tokens).  Returns (cond [n, T, C], pooled
    [n, C'] or None)."""
    if not groups:
        raise ValueError("no groups to merge")
    length = max(c.shape[1] for _, c, _, _ in groups)
    cond = rows_in_order(n, [(idx, torch.cat([pad_tokens(c[j:j + 1], length, pad) for j in range(len(idx))], dim=0))
                             for idx, c, _, pad in groups])
    has_pooled = all(p is not None for _, _, p, _ in groups)
    pooled = rows_in_order(n, [(idx, p) for idx, _, p, _ in groups]).to(cond.device) if has_pooled else None
    return cond, pooled


def rows_in_order(n, groups):
    """[(entry indices, tensor [n_g, ...])] -> one tensor [n, ...] whose row i is entry i's."""
    rows = [None] * n
    for idx, t in groups:
        for j, i in enumerate(idx):
            rows[i] = t[j:j + 1]
    if any(r is None for r in rows):
        raise ValueError("an entry belongs to no group")
    return torch.cat([r.to(rows[0].device) for r in rows], dim=0)


def merge_masked(n, groups):
    """Entries encoded in groups (one group per text-encoder LoRA set) for a model that reads the text attention
    mask -> one batch in entry order, zero-padded and masked as stack_masked pads the prompts of one encoder.

    groups: [(entry indices, cond [n_g, T_g, C], pooled [n_g, C'] or None, mask [n_g, T_g] or None)]; a group's own
    padding (mask 0) is kept.  Returns (cond [n, T, C], mask [n, T] or None, pooled [n, C'] or None)."""
    if not groups:
        raise ValueError("no groups to merge")
    conds, masks = [None] * n, [None] * n
    for idx, cond, _, mask in groups:
        for j, i in enumerate(idx):
            conds[i] = cond[j:j + 1]
            masks[i] = None if mask is None else mask[j:j + 1]
    if any(c is None for c in conds):
        raise ValueError("an entry belongs to no group")
    cond, mask = stack_masked(conds, masks)
    has_pooled = all(torch.is_tensor(p) for _, _, p, _ in groups)
    pooled = rows_in_order(n, [(idx, p) for idx, _, p, _ in groups]) if has_pooled else None
    return cond, mask, pooled
