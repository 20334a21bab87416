"""LeanPromptBatch: N prompts (lines, wildcards) -> one batched CONDITIONING (entry i for latent i)."""
import collections
import hashlib
import itertools
import logging
import os

import folder_paths

from ..core import cond_batch, distributed as D, lora_blocks, lora_tags, prompts as P
from . import _host

_log = logging.getLogger("lean")

WILDCARDS = "wildcards"
NO_FILE = "(none)"
TEXT_FILE_EXTENSIONS = (".txt",)


def register_wildcards_folder():
    """models/wildcards as a model folder (extra_model_paths.yaml can add more under `wildcards:`)."""
    default = os.path.join(folder_paths.models_dir, WILDCARDS)
    folder_paths.add_model_folder_path(WILDCARDS, default, is_default=True)
    paths, exts = folder_paths.folder_names_and_paths[WILDCARDS]
    exts = set(exts) | set(P.WILDCARD_EXTENSIONS)
    folder_paths.folder_names_and_paths[WILDCARDS] = (paths, exts)


register_wildcards_folder()


def wildcard_roots():
    try:
        return folder_paths.get_folder_paths(WILDCARDS)
    except KeyError:
        return []


def input_text_files():
    root = folder_paths.get_input_directory()
    found = []
    if os.path.isdir(root):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(TEXT_FILE_EXTENSIONS):
                    found.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return [NO_FILE] + found


def read_text_file(name):
    if not name or name == NO_FILE:
        return ""
    root = os.path.realpath(folder_paths.get_input_directory())
    if "\x00" in name:
        raise ValueError(f"text_file {name!r} is refused: it contains a NUL byte; pick a .txt file inside the "
                         f"input folder {root}")
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root or not name.lower().endswith(TEXT_FILE_EXTENSIONS):
        raise ValueError(f"text_file {name!r} is refused: pick a .txt file inside the input folder {root}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text_file {name!r} not found in the input folder {root}; "
                                "refresh the page (R) to update the list")
    with open(path, encoding="utf-8-sig") as f:
        return P.check_length(f.read(P.MAX_TEXT_CHARS + 1), f"text_file {name!r}")


def _body(text, text_file):
    """`text` then the lines of text_file, within P.MAX_TEXT_CHARS (a linked `text` skips every widget limit)."""
    P.check_length(text or "", "text")
    return P.check_length("\n".join(t for t in (text or "", read_text_file(text_file)) if t), "text + text_file")


def prompts_from_inputs(text, mode, count, seed, prefix, suffix, text_file=NO_FILE, cancel=None):
    body = _body(text, text_file)
    if not P.split_lines(body):
        raise ValueError("LeanPromptBatch: no prompt - `text` is empty (blank lines and # comments are ignored) "
                         "and no text_file is chosen; write one prompt per line")
    return P.expand(body, mode=mode, count=count, seed=seed, prefix=prefix, suffix=suffix,
                    wildcard_roots=wildcard_roots(), cancel=cancel)


# ----------------------------------------------------------------------------- encoding

class _Unsupported(Exception):
    """This text encoder does not fit the batched path; fall back to one encode per prompt."""


def _check_tokens(all_tokens):
    """(keys, chunk length, chunks per prompt) if every prompt is a dict of equal-length chunk lists."""
    keys = None
    length = None
    counts = []
    for toks in all_tokens:
        if not isinstance(toks, dict) or not toks:
            raise _Unsupported("tokens are not a dict of chunk lists")
        if keys is None:
            keys = sorted(toks)
        if sorted(toks) != keys:
            raise _Unsupported("prompts tokenized to different encoders")
        n = {len(toks[k]) for k in keys}
        if len(n) != 1 or 0 in n:
            raise _Unsupported("encoders disagree on the number of chunks")
        for k in keys:
            for chunk in toks[k]:
                if length is None:
                    length = len(chunk)
                if len(chunk) != length:
                    raise _Unsupported("chunks of different lengths")
        counts.append(n.pop())
    return keys, length, counts


def _free_memory(clip):
    import comfy.model_management as mm
    try:
        return mm.get_free_memory(clip.patcher.load_device)
    except Exception:
        return 2 << 30


def _encode_capturing(clip, merged, encoders, rows, length):
    """clip.encode_from_tokens of the merged rows with each encoder's per-row pooled output captured:
    (cond [1, rows*length, C], pooled_output or None, {id(encoder): per-row pooled or None}, extra outputs)."""
    with _host.pooled_per_row(encoders) as rows_pooled:  # the host's encode keeps only the first row's
        out = clip.encode_from_tokens(merged, return_pooled=True, return_dict=True)
    captured = rows_pooled.got
    cond = out.pop("cond")
    top = out.pop("pooled_output", None)
    unexpected = [k for k in out if k != "hooks"]
    if unexpected:
        raise _Unsupported(f"encoder returns extra outputs {unexpected}")
    if cond.shape[0] != 1 or cond.shape[1] != rows * length:
        raise _Unsupported(f"encoder output {tuple(cond.shape)} is not {rows} rows of {length}")
    return cond, top, captured, out


def encode_batched(clip, texts, keep=None):
    """One conditioning entry with batch len(texts); the text encoder runs over all chunks of all
    prompts (plus one empty chunk for padding) in as few forward passes as memory allows.
    keep=(start, end): only those prompts are encoded (every prompt is tokenized, so the slice is padded to the
    whole batch's chunk count and its entries equal the whole batch's)."""
    import comfy.model_management as mm
    import torch
    from comfy.utils import ProgressBar

    if _host.clip_hooks_scheduled(clip):
        raise _Unsupported("scheduled CLIP hooks")
    encoders = _host.chunk_encoders(clip)
    if not encoders:
        raise _Unsupported("no chunked CLIP encoder")
    all_tokens = [clip.tokenize(t) for t in texts] + [clip.tokenize("")]
    keys, length, counts = _check_tokens(all_tokens)
    if counts[-1] != 1:
        raise _Unsupported("the empty prompt is not one chunk")
    n = len(texts)
    start, end = keep or (0, n)
    width = max(e.transformer.get_input_embeddings().weight.shape[1] for e in encoders)
    rows = [(i, c) for i, k in enumerate(counts) if start <= i < end or i == n for c in range(k)]
    firsts, index = cond_batch.unique_rows(
        [cond_batch.chunk_key([all_tokens[i][k][c] for k in keys]) for i, c in rows])
    unique = [rows[f] for f in firsts]  # the rows the text encoder really computes
    per_pass = cond_batch.rows_per_pass(_free_memory(clip), length, width, len(unique))
    passes = cond_batch.plan_passes(unique, per_pass)

    done_cond, done_pooled = {}, {}
    extras = None
    pooled_missing = False
    pbar = ProgressBar(len(passes))
    for rows_here in passes:
        mm.throw_exception_if_processing_interrupted()
        merged = {k: [all_tokens[i][k][c] for i, c in rows_here] for k in keys}
        cond, top, captured, out = _encode_capturing(clip, merged, encoders, len(rows_here), length)
        source = None
        if top is not None:
            for e in encoders:
                p = captured.get(id(e))
                if (p is not None and p.shape[0] >= len(rows_here) and p.shape[1:] == top.shape[1:]
                        and torch.equal(p[0:1].to(top.device, top.dtype), top)):
                    source = p.to(top.device, top.dtype)
                    break
            if source is None:
                raise _Unsupported("cannot tell which encoder gives the pooled output")
        else:
            pooled_missing = True
        for j, key in enumerate(rows_here):
            done_cond[key] = cond[0, j * length:(j + 1) * length]
            if source is not None:
                done_pooled[key] = source[j]
        extras = out if extras is None else extras
        pbar.update(1)

    chunk_cond = {(i - start, c): done_cond[unique[index[r]]] for r, (i, c) in enumerate(rows)}
    chunk_pooled = {(i - start, c): done_pooled[unique[index[r]]] for r, (i, c) in enumerate(rows)} \
        if not pooled_missing else None
    pad = chunk_cond[(n - start, 0)]
    cond, pooled = cond_batch.assemble({k: v for k, v in chunk_cond.items() if k[0] < end - start},
                                       chunk_pooled, counts[start:end], pad, k_max=max(counts[:n]))
    info = dict(extras or {})
    info["pooled_output"] = pooled
    return [[cond, info]], {"passes": len(passes), "rows": len(unique), "chunks": counts[start:end]}


def encode_batched_flux(clip, texts, keep=None):
    """Flux (T5-XXL + CLIP-L): the conditioning is T5's output, one sequence per prompt of its own length
    (at least 256 tokens, longer for long prompts, never cut), and the pooled output is CLIP-L's of the
    prompt's first 77-token chunk (what FluxClipModel returns).  Prompts whose T5 sequences have the same
    length go through both encoders together; shorter sequences are then padded with the encoded empty
    prompt, as the SD path pads with the encoded empty chunk.  keep=(start, end): only those prompts are encoded,
    padded to the whole batch's longest sequence."""
    import comfy.model_management as mm
    import torch
    from comfy.utils import ProgressBar

    model = _host.flux_clip_model(clip)
    if model is None:
        raise _Unsupported("not a Flux text encoder")
    if _host.clip_hooks_scheduled(clip):
        raise _Unsupported("scheduled CLIP hooks")
    all_tokens = [clip.tokenize(t) for t in texts] + [clip.tokenize("")]
    for toks in all_tokens:
        if not isinstance(toks, dict) or sorted(toks) != ["l", "t5xxl"]:
            raise _Unsupported("Flux tokens are not {l, t5xxl}")
        if len(toks["t5xxl"]) != 1 or not toks["l"]:
            raise _Unsupported("T5 tokens are not one sequence")
    rows = [(toks["t5xxl"][0], toks["l"][0]) for toks in all_tokens]
    n = len(texts)
    start, end = keep or (0, n)
    wanted = list(range(start, end)) + [n]
    firsts, index = cond_batch.unique_rows([cond_batch.chunk_key(rows[i]) for i in wanted])
    firsts = [wanted[f] for f in firsts]
    width = model.t5xxl.transformer.get_input_embeddings().weight.shape[1]
    passes = []
    for length, group in cond_batch.group_by_length(firsts, [len(rows[f][0]) for f in firsts]):
        per_pass = cond_batch.rows_per_pass(_free_memory(clip), length, width, len(group))
        passes += cond_batch.plan_passes(group, per_pass)

    done = {}
    pbar = ProgressBar(len(passes))
    for rows_here in passes:
        mm.throw_exception_if_processing_interrupted()
        merged = {"t5xxl": [rows[r][0] for r in rows_here], "l": [rows[r][1] for r in rows_here]}
        length = len(merged["t5xxl"][0])
        cond, top, captured, _ = _encode_capturing(clip, merged, [model.clip_l], len(rows_here), length)
        p = captured.get(id(model.clip_l))
        if top is None or p is None or p.shape[0] < len(rows_here) or \
                not torch.equal(p[0:1].to(top.device, top.dtype), top):
            raise _Unsupported("cannot tell CLIP-L's pooled output per prompt")
        p = p.to(top.device, top.dtype)
        for j, r in enumerate(rows_here):
            done[r] = (cond[:, j * length:(j + 1) * length], p[j:j + 1])
        pbar.update(1)

    per_prompt = [done[firsts[index[j]]] for j in range(len(wanted))]
    k = end - start
    cond = cond_batch.stack_padded([c for c, _ in per_prompt[:k]], per_prompt[k][0],
                                   length=max(len(rows[i][0]) for i in range(n)))
    pooled = torch.cat([p for _, p in per_prompt[:k]], dim=0)
    return [[cond, {"pooled_output": pooled}]], {"passes": len(passes), "rows": len(firsts),
                                                  "chunks": [len(rows[i][0]) for i in range(start, end)]}


# How prompts share a pass of an LLM text encoder, per device type.  Side by side in one row (_host.packed_llm_rows:
# no padding computed): the most tokens in one pass (memory bounds it too).  CPU, measured on the Qwen3-4B-shaped
# fixture (bench/prompt_batch.py --family zimage, 2 cores): a pass costs ~47 ms besides ~0.8 ms a token, and the 9
# prompts of the benchmark (392 tokens) take 336 ms side by side in one pass, 604-628 ms one by one, 1446-1526 ms as
# padded rows in one pass; 512 tokens keeps the attention over the pass (it grows with the square of its tokens)
# within a few percent of a real 4B encoder's work.  GPU (argued, not measured here): a pass reads all the weights.
LLM_PACK = {"cpu": 512}
# Attention score maps counted per row in the memory estimate of an LLM's pass (cond_batch.row_bytes)
LLM_SCORE_HEADS = 64
# Padded rows (where the host's LLM cannot be packed): (what one more pass costs, in padded tokens; the most tokens
# in one pass).  CPU, measured as above: a padded token costs as much as a real one.
LLM_PASSES = {"cpu": (32, 512)}
LLM_PASSES_GPU = (512, None)


def encode_llm_rows(clip, texts):
    """Each prompt's conditioning exactly as the host encodes the prompt alone (the list
    ``clip.encode_from_tokens_scheduled(clip.tokenize(t))`` returns, per prompt), with several prompts in one
    forward pass: where the text encoder is one decoder-only LLM (_host.causal_llm_encoder: Z-Image's Qwen3-4B,
    Flux.2's Qwen3 and Mistral Small 3.x), a prompt padded at the end with the pad token keeps its own tokens' hidden
    states (each token sees only those before it: causal attention), so each prompt's rows of the pass's output, cut
    to its own length, are its conditioning (equal up to float summation order: ~1e-6 of the scale).  Where the
    host's LLM can be packed (_host.packed_llm_core) and no prompt holds its pad or end token, a pass is instead
    one row of the prompts' own tokens side by side, each masked to its own (_host.packed_llm_rows: no padding
    computed), and the passes are cond_batch.token_packs (at most as many tokens as memory allows, on the CPU 512:
    LLM_PACK); where the host refuses that, the rest are padded rows.  Padded rows share passes by
    cond_batch.length_passes (a prompt padded by at most what a pass costs, memory bounding the rows, on the CPU at
    most 512 tokens a pass: LLM_PASSES).  Returns (conditionings, passes, packed passes).  Raises _Unsupported
    where this does not hold (weights, embeddings, scheduled hooks, an encoder that cuts or adds tokens), and the
    caller encodes one prompt at a time."""
    import comfy.model_management as mm
    import torch
    from comfy.utils import ProgressBar

    spec = _host.causal_llm_encoder(clip)
    if spec is None:
        raise _Unsupported("not one decoder-only LLM text encoder")
    if _host.clip_hooks_scheduled(clip):
        raise _Unsupported("scheduled CLIP hooks")
    key, pad, width = spec
    rows = []
    for t in texts:
        toks = clip.tokenize(t)
        if not isinstance(toks, dict) or list(toks) != [key] or len(toks[key]) != 1:
            raise _Unsupported("the prompt is not one row of the LLM's tokens")
        row = list(toks[key][0])
        for item in row:
            if not (isinstance(item, (tuple, list)) and len(item) >= 2 and isinstance(item[0], int)
                    and not isinstance(item[0], bool) and item[1] == 1.0):
                raise _Unsupported("weighted tokens or embeddings in a prompt")
        rows.append(row)
    lengths = [len(r) for r in rows]
    if 0 in lengths:
        raise _Unsupported("an empty token row")
    device = getattr(getattr(clip, "patcher", None), "load_device", None)
    kind = getattr(device, "type", str(device))
    free = _free_memory(clip)
    pack = _host.packed_llm_core(clip)
    if pack is not None and any(t[0] in pack[1] for r in rows for t in r):
        pack = None  # the host masks part of such a row (Klein pads each prompt to 512): not side by side

    def padded_passes(indices):
        cost, most = LLM_PASSES.get(kind, LLM_PASSES_GPU)

        def max_rows(length):
            fit = cond_batch.rows_per_pass(free, length, width, len(rows), cap=None, score_heads=LLM_SCORE_HEADS)
            return fit if most is None else min(fit, max(1, most // length))
        return [[indices[j] for j in p]
                for p in cond_batch.length_passes([lengths[i] for i in indices], cost, max_rows)]
    if pack is not None:
        most = cond_batch.tokens_per_pass(free, width, score_heads=LLM_SCORE_HEADS)
        queue = collections.deque(cond_batch.token_packs(lengths, min(most, LLM_PACK.get(kind, most))))
    else:
        queue = collections.deque(padded_passes(list(range(len(rows)))))
    results = [None] * len(rows)
    passes = packed = 0
    pbar = ProgressBar(len(queue))
    while queue:
        group = queue.popleft()
        mm.throw_exception_if_processing_interrupted()
        if pack is not None and len(group) > 1:
            try:
                with _host.packed_llm_rows(pack[0], [lengths[i] for i in group]):
                    out = clip.encode_from_tokens({key: [[t for i in group for t in rows[i]]]},
                                                  return_pooled=True, return_dict=True)
            except _host.PackRefused as why:
                _log.info("[Lean Nodes] LeanPromptBatch: prompts padded instead of side by side (%s)", why)
                pack = None
                queue = collections.deque(padded_passes(sorted(group + [i for g in queue for i in g])))
                pbar = ProgressBar(len(queue))
                continue
            packed += 1
            spans = list(zip(group, itertools.accumulate([0] + [lengths[i] for i in group])))
            total = sum(lengths[i] for i in group)
        else:
            length = lengths[group[0]]
            merged = {key: [rows[i] + [(pad, 1.0) + tuple(rows[i][-1][2:])] * (length - lengths[i]) for i in group]}
            out = clip.encode_from_tokens(merged, return_pooled=True, return_dict=True)
            spans = [(i, j * length) for j, i in enumerate(group)]
            total = len(group) * length
        passes += 1
        cond, mask = out.pop("cond"), out.pop("attention_mask", None)
        if out.get("pooled_output") is not None:
            raise _Unsupported("the encoder gives a pooled output")
        if any(torch.is_tensor(v) for v in out.values()):
            raise _Unsupported(f"encoder returns extra outputs {sorted(out)}")
        if cond.ndim != 3 or cond.shape[:2] != (1, total) or (mask is not None and tuple(mask.shape) != (1, total)):
            raise _Unsupported(f"encoder output {tuple(cond.shape)} is not the {total} tokens of {len(group)} rows")
        for i, lo in spans:
            hi = lo + lengths[i]
            info = dict(out)
            if mask is not None:
                info["attention_mask"] = mask[:, lo:hi]
            results[i] = [[cond[:, lo:hi], info]]
        pbar.update(1)
    return results, passes, packed


def encode_each(clip, texts):
    """Encoders the chunked paths do not know: each prompt's conditioning as ComfyUI's own encode of it alone gives
    it (for one decoder-only LLM encoder, several prompts share a pass: encode_llm_rows; else one encode
    per prompt), padded with the encoded empty prompt and stacked.  Scheduled hooks keep their schedule.
    Where the model reads the text attention mask (Qwen-Image), shorter prompts are padded with masked tokens
    instead (cond_batch.stack_masked), so entry i is its prompt alone; where the model pads shorter prompts with
    zeros at the start itself (Flux.2, to 512 tokens), with zeros at the start (cond_batch.pad_tokens, pad None)."""
    import torch

    masked = _host.text_mask_read_by_model(clip)
    floor = None if masked else _host.text_left_pad_floor(clip)
    wanted = list(texts) + ([] if masked or floor else [""])  # the empty prompt pads
    try:
        results, passes, packed = encode_llm_rows(clip, wanted)
    except _Unsupported as why:
        _log.debug("[Lean Nodes] LeanPromptBatch: one text-encoder pass per prompt (%s)", why)
        results, passes, packed = [clip.encode_from_tokens_scheduled(clip.tokenize(t)) for t in wanted], len(wanted), 0
    empty = results.pop() if len(wanted) > len(texts) else None
    steps = {len(r) for r in results}
    if len(steps) != 1:
        raise ValueError("LeanPromptBatch: the CLIP hook schedule differs between prompts")
    out = []
    for s in range(steps.pop()):
        conds = [r[s][0] for r in results]
        if masked:
            cond, mask = cond_batch.stack_masked(conds, [r[s][1].get("attention_mask") for r in results])
            info = {} if mask is None else {"attention_mask": mask}
            out.append([cond, {**{k: v for k, v in results[0][s][1].items() if k != "attention_mask"}, **info}])
            continue
        # zeros before the prompt (pad None) where the model pads a prompt shorter than `floor` that way itself
        cond = cond_batch.stack_padded(conds, None if floor else empty[min(s, len(empty) - 1)][0])
        info = {}
        first = results[0][s][1]
        for key, v in first.items():
            if key == "attention_mask" and len({c.shape[1] for c in conds}) > 1:
                continue  # each prompt's own mask, of its own length: on this path the length split removes padding
            vals = [r[s][1].get(key) for r in results]
            if torch.is_tensor(v):
                if all(torch.is_tensor(x) and x.shape == v.shape for x in vals):
                    info[key] = torch.cat(vals, dim=0)
                else:
                    _log.warning("[Lean Nodes] LeanPromptBatch: dropping '%s' (differs in shape between prompts)", key)
            else:
                info[key] = v
        out.append([cond, info])
    # each prompt's own token count (padding is at the end); where the model pads to `floor` on the left itself,
    # the tokens it reads for the prompt alone: at least `floor`, the last ones of the row
    lengths = [max(r[0][0].shape[1], floor or 0) for r in results]
    return out, {"passes": passes, "rows": None, "chunks": None, "packed": packed,
                 "lengths": None if masked else lengths, "pad_left": floor}


def encode_prompts(clip, texts, keep=None):
    """The batched conditioning of `texts`, or of texts[start:end] for keep=(start, end) (padded as in the whole
    batch).  The one-by-one fallback encodes every prompt and keeps the slice (it cannot know the padding
    otherwise)."""
    try:
        if _host.flux_clip_model(clip) is not None:
            return encode_batched_flux(clip, texts, keep)
        return encode_batched(clip, texts, keep)
    except _Unsupported as why:
        _log.info("[Lean Nodes] LeanPromptBatch: encoding each prompt's conditioning alone (%s)", why)
        out, stats = encode_each(clip, texts)
        if keep is not None:
            out = [_batch_slice(c, info, *keep) for c, info in out]
            if stats.get("lengths"):
                stats["lengths"] = stats["lengths"][keep[0]:keep[1]]
        return out, stats


def _batch_slice(cond, info, start, end):
    import torch
    n = cond.shape[0]
    info = {k: (v[start:end] if torch.is_tensor(v) and v.ndim and v.shape[0] == n else v) for k, v in info.items()}
    return [cond[start:end], info]


# ----------------------------------------------------------------------------- per-image LoRAs

REPORT_ENTRIES = 32  # entries listed one by one under the node; the rest are counted


def parse_entry_tags(texts):
    """[(text without tags, [LoraTag])] per prompt; a malformed tag is an error naming the prompt."""
    out = []
    for i, t in enumerate(texts):
        try:
            out.append(lora_tags.parse_tags(t))
        except ValueError as e:
            raise ValueError(f"LeanPromptBatch: prompt {i + 1}: {e}") from None
    return out


def _tag_text(tag, te_scale, bw):
    s = f"{tag.unet:g}" if tag.unet == te_scale else f"unet {tag.unet:g} te {te_scale:g}"
    if tag.sched is not None:
        s += f" sched {tag.sched}"
    if tag.start > 0 or tag.end < 1:
        s += f" steps {tag.start:g}-{tag.end:g}"
    if bw is not None:
        s += f" lbw {bw.source}"
    return s


class EntryLoras:
    """The LoRAs of every entry of one batch, mapped onto (model, clip): each distinct file read and mapped once.
    texts/parsed: this participant's share of the prompts, the first being prompt `first` of the whole batch
    (messages and the report count prompts as the user does); entry i here is entry i of this conditioning."""

    def __init__(self, model, clip, texts, parsed, first=0):
        from . import _lora_branch as branch
        from .lora import tag_lora_file
        self.n = len(parsed)
        self.first = first
        self.files = {}     # file key -> (LoraFile, Mapped, name)
        self.uses = {}      # file key -> [EntryUse] (UNet side)
        self.te_sets = [()] * self.n  # per entry: ((file key, te scale), ...)
        self.per_entry = [[] for _ in range(self.n)]  # report: [(name, text)]
        self.skipped = []   # report lines: LoRAs that matched nothing
        self.has_model = model is not None
        available = folder_paths.get_filename_list("loras")
        layout = None
        if model is not None:
            layout = lora_blocks.unet_layout(model.model.diffusion_model.state_dict().keys())
        for i, (clean, tags) in enumerate(parsed):
            te = []
            for t in tags:
                if t.unet != 0.0 and model is None:
                    raise ValueError(f"LeanPromptBatch: prompt {first + i + 1}: the tag {t.text} has a UNet strength "
                                     "but no model is connected: connect the checkpoint's MODEL to the `model` input "
                                     "and use the `model` output in the KSampler (or write unet=0 for a "
                                     "text-encoder-only LoRA)")
                name, lf = tag_lora_file(t, available, f"LeanPromptBatch: prompt {first + i + 1}: ")
                key = branch._file_key(lf.path)
                if key not in self.files:
                    self.files[key] = (lf, branch.map_lora(lf, model, clip), name)
                lf, m, name = self.files[key]
                try:
                    bw = lora_blocks.parse_block_weights(t.lbw, layout, "LoRA tag", texts[i], t.lbw_pos)
                except ValueError as e:
                    raise ValueError(f"LeanPromptBatch: prompt {first + i + 1}: {e}") from None
                te_scale = t.te * (bw.base if bw is not None else 1.0)
                if m.matched == 0:
                    self.skipped.append(f"prompt {first + i + 1}: {name} matched nothing in this model (0 of its "
                                        f"{m.file_modules} modules: made for another architecture?) - not applied")
                    _log.warning("[Lean Nodes] LeanPromptBatch: %s", self.skipped[-1])
                    continue
                if t.unet != 0.0 and (m.unet or m.unet_host):
                    if m.unet_host:
                        raise ValueError(f"LeanPromptBatch: prompt {first + i + 1}: {name} has {len(m.unet_host)} "
                                         "UNet modules without a low-rank branch (LoHa, LoKr, OFT, DoRA or a full diff); a "
                                         "different LoRA per image needs LoRA/LoCon files. Apply it to every image "
                                         "with LoRA (dynamic) before Prompt Batch instead.")
                    self.uses.setdefault(key, []).append(
                        branch.EntryUse(i, t.unet, t.sched, t.start, t.end, bw))
                if te_scale != 0.0 and (m.clip or m.clip_host):
                    te.append((key, te_scale))
                self.per_entry[i].append((name, _tag_text(t, te_scale, bw)))
            self.te_sets[i] = tuple(te)

    def model(self, model):
        """`model` with one per-image branch for all the batch's LoRAs (the input itself when none has a UNet
        side)."""
        from . import _lora_branch as branch
        loras = [(self.files[k][2], self.files[k][1].unet, uses) for k, uses in self.uses.items()]
        if model is None or not loras:
            return model
        return branch.add_per_entry(model, branch.PerEntryBranch(self.n, loras))

    def clip_for(self, clip, te_set):
        from . import _lora_branch as branch
        c = clip
        for key, scale in te_set:
            lf, m, name = self.files[key]
            c, _ = branch.apply_clip(c, m, name, scale, name)
        return c

    def report(self):
        lines = []
        for i, got in enumerate(self.per_entry[:REPORT_ENTRIES]):
            lines.append(f"{self.first + i + 1}: "
                         + (", ".join(f"{name} {text}" for name, text in got) if got else "no LoRA"))
        if self.n > REPORT_ENTRIES:
            rest = sum(1 for got in self.per_entry[REPORT_ENTRIES:] if got)
            lines.append(f"(+{self.n - REPORT_ENTRIES} more prompts, {rest} of them with LoRAs)")
        from . import _lora_branch as branch
        for key, (lf, m, name) in self.files.items():
            if m.matched == 0:
                continue
            te = f"text encoder {len(m.clip)} modules as low-rank branch, {len(m.clip_host)} by host patching"
            if not self.has_model:  # mapped on the CLIP alone: the UNet keys found no place, as expected
                lines.append(f"{name}: {te} (no model connected: UNet side not applied)")
                continue
            users = len({u.entry for u in self.uses.get(key, [])})
            lines.append(f"{name}: UNet {len(m.unet)} modules as low-rank branch, per image ({users} of {self.n} "
                         f"images); {te}")
            lines += branch.mapping_report(m, name)
        return lines + self.skipped


def encode_with_entry_loras(clip, clean_texts, loras, keep=None):
    """One conditioning for the batch, each entry encoded by the CLIP with its own text-encoder LoRAs: entries with
    the same set go through the text encoder together (encode_prompts), each group padded with its own encoded
    empty prompt.  Without any text-encoder LoRA this is encode_prompts(clip, texts) itself.
    keep=(start, end): clean_texts are all N prompts and `loras` holds the entries of that share only; each group is
    padded to the whole batch's length (as in a one-machine run), so its entries equal the whole batch's.
    Where the model reads the text attention mask (Qwen-Image), groups are merged with zero padding and the mask
    (cond_batch.merge_masked) instead of the encoded empty prompt."""
    import torch
    start, end = keep or (0, len(clean_texts))
    share = clean_texts[start:end]
    groups = {}
    for i, te in enumerate(loras.te_sets):
        groups.setdefault(te, []).append(i)
    if len(groups) == 1:
        (te, idx), = groups.items()
        c = loras.clip_for(clip, te) if te else clip
        return encode_prompts(c, clean_texts, keep)
    masked = _host.text_mask_read_by_model(clip)
    floor = None if masked else _host.text_left_pad_floor(clip)
    parts, info, passes, packed = [], None, 0, 0
    lengths = [0] * len(share)  # each entry's own token count, where the encoder says it (encode_each)
    for te, idx in groups.items():
        c = loras.clip_for(clip, te) if te else clip
        if keep is None:
            conditioning, stats = encode_prompts(c, [share[i] for i in idx])
        else:  # the group's prompts first, then every prompt of the batch, only for the padding length
            conditioning, stats = encode_prompts(c, [share[i] for i in idx] + list(clean_texts), (0, len(idx)))
        if len(conditioning) != 1:
            raise ValueError("LeanPromptBatch: a different text-encoder LoRA per prompt does not combine with a "
                             "scheduled CLIP hook; remove the hook or the tags' te strengths")
        cond, extra = conditioning[0]
        keys = sorted(k for k in extra if k != "attention_mask")
        if info is not None and sorted(k for k in info if k != "attention_mask") != keys:
            raise ValueError(f"LeanPromptBatch: the text encoder gives different outputs per LoRA set ({keys} vs "
                             f"{sorted(info)})")
        info = info if info is not None else {k: v for k, v in extra.items() if k != "attention_mask"}
        parts.append([idx, cond, extra.get("pooled_output"), c, extra.get("attention_mask"), extra])
        passes += stats["passes"]
        packed += stats.get("packed", 0)
        own = stats.get("lengths")
        if lengths is not None and own is not None:
            for j, i in enumerate(idx):
                lengths[i] = own[j]
        else:
            lengths = None
    if masked:  # zero padding masked out, as encode_each pads one CLIP's prompts
        cond, mask, pooled = cond_batch.merge_masked(len(share), [(p[0], p[1], p[2], p[4]) for p in parts])
        if mask is not None:
            info["attention_mask"] = mask
    else:
        length = max(p[1].shape[1] for p in parts)
        for p in parts:  # a shorter group is padded with the empty prompt encoded by its own CLIP
            if floor:
                p[3] = None  # with zeros at the start, as encode_each pads for this model
            elif p[1].shape[1] < length:
                p[3] = encode_prompts(p[3], [""])[0][0][0]
                passes += 1
            else:
                p[3] = p[1][:1, :0]  # nothing to pad
        cond, pooled = cond_batch.merge_groups(len(share), [p[:4] for p in parts])
        for key, v in list(info.items()):  # other per-entry tensors (an unread mask): rows in entry order
            if key == "pooled_output" or not torch.is_tensor(v):
                continue
            rows = [(p[0], p[5][key]) for p in parts]
            if all(torch.is_tensor(r) and r.ndim and r.shape[0] == len(i) and r.shape[1:] == v.shape[1:]
                   for i, r in rows):
                info[key] = cond_batch.rows_in_order(len(share), rows)
            else:
                _log.warning("[Lean Nodes] LeanPromptBatch: dropping '%s' (differs in shape between prompts)", key)
                del info[key]
    if "pooled_output" in info:
        info["pooled_output"] = pooled
    return [[cond, info]], {"passes": passes, "rows": None, "chunks": None, "packed": packed,
                            "lengths": None if masked else lengths, "pad_left": floor}


def split_by_length(model, conditioning, stats):
    """(model, report line): where the prompts were padded with content the model reads (stats["lengths"] differ:
    encode_each's end padding, no mask the model honours), `model` with the length split (nodes/_text_split.py), so
    that each image sees its prompt alone."""
    lengths = stats.get("lengths")
    width = conditioning[0][0].shape[1] if conditioning else 0
    if not lengths or any(c.shape[1] != width or c.shape[0] != len(lengths) for c, _ in conditioning):
        return model, None
    floor = stats.get("pad_left")
    if floor and min(lengths) >= width:  # every prompt within the model's own left padding: one call is exact
        return model, (f"prompts shorter than {width} tokens padded at the start with zeros, as the model pads "
                       f"every prompt to {floor}: each image sees its prompt alone")
    if max(lengths) > width or min(lengths) == width:  # (a participant's share is padded to the whole batch's)
        return model, None
    distinct = len(set(lengths))
    if model is None:
        return model, (f"prompts of {distinct} token lengths ({min(lengths)}-{max(lengths)}) padded: this text "
                       "encoder's model reads padding as content, so connect `model` and sample with the `model` "
                       "output to give each image its prompt alone")
    from . import _text_split
    return (_text_split.add_split(model, [c for c, _ in conditioning], lengths, left=bool(floor)),
            f"prompts of {distinct} token lengths ({min(lengths)}-{max(lengths)}): the model runs each length on "
            f"its own text ({distinct} calls per step), so each image sees its prompt alone")


# ----------------------------------------------------------------------------- node

class LeanPromptBatch:
    DESCRIPTION = ("Many prompts in one batch: one prompt per line, or drawn from {a|b} choices and __name__ "
                   "wildcard files (models/wildcards). Outputs one CONDITIONING whose entry i conditions latent i - "
                   "wire `count` into Empty Latent Image's batch_size and one KSampler run makes every image. "
                   "Prompts of different lengths are padded with the encoded empty prompt, so each entry equals "
                   "encoding its prompt alone; all prompts go through the text encoder together. On models that "
                   "read text padding as content (Z-Image; Flux.2 prompts over 512 tokens) connect `model` and "
                   "sample with the `model` output: each image then runs with its own prompt's tokens only. "
                   "On Flux (T5-XXL + CLIP-L) every entry also carries the `guidance` input, as CLIPTextEncodeFlux "
                   "does. With ComfyUI-Distributed, wire a Distributed Seed (seed 0) into `participant`: each GPU "
                   "or machine then encodes and samples only its share of the prompts, and the gathered images "
                   "equal one machine's, in prompt order. "
                   "<lora:name:w> tags in a prompt (as in LoRA from Prompt Tags: unet/te strengths, sched=, lbw=, "
                   "also from wildcards) apply that LoRA to that prompt's image only, in the same sampler pass: "
                   "connect `model` and sample with the `model` output. The node lists each prompt's LoRAs.")
    CATEGORY = "lean/conditioning"
    FUNCTION = "build"
    RETURN_TYPES = ("CONDITIONING", "STRING", "INT", "LATENT", "MODEL")
    RETURN_NAMES = ("conditioning", "prompts", "count", "latent", "model")
    OUTPUT_IS_LIST = (False, True, False, False, False)
    OUTPUT_TOOLTIPS = (
        "One conditioning with batch N: entry i is prompt i (cond [N, T, C], pooled output [N, C']). With "
        "`participant` wired: only this participant's share of the prompts.",
        "The N expanded prompts, as a list (prompt i belongs to image i of the batch; LoRA tags kept), on every "
        "participant.",
        "N, the number of prompts: wire it into Empty Latent Image's batch_size (and into Prompt Batch Check).",
        "The `latent` input with batch_index 0..N-1 (each image's noise depends only on its index), or with "
        "`participant` wired only this participant's entries, with their global batch_index: wire it into the "
        "KSampler. Empty when `latent` is not wired.",
        "The `model` input with each prompt's <lora:...> tags applied to its own image only (image i gets the LoRAs "
        "of prompt i, the others none), and where the model reads text padding, each image run with its own "
        "prompt's length; the input model itself when neither applies. Wire it into the KSampler.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The text encoder (CLIP output of a checkpoint loader)."}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "",
                                    "tooltip": "One prompt per line (blank lines and lines starting with # are "
                                               "ignored). {a|b|c} picks one, {2$$a|b|c} picks two, {0.3::a|b} "
                                               "weights options, __name__ takes a line of wildcards/name.txt."}),
                "mode": (list(P.MODES), {"default": "lines",
                                         "tooltip": "lines: one prompt per line. random: `count` prompts, each "
                                                    "from a random line with random choices. combinatorial: every "
                                                    "combination, in order (more than `count` is an error)."}),
                "count": ("INT", {"default": 16, "min": 1, "max": 4096,
                                  "tooltip": "random: how many prompts to draw. combinatorial: the most prompts "
                                             "allowed. Ignored in lines mode."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Seed of the random choices: the same seed gives the same prompts on "
                                            "every machine. Not used in combinatorial mode."}),
                "prefix": ("STRING", {"default": "", "advanced": True, "tooltip": "Put before every prompt (joined with ', '); "
                                                                "may use {a|b} and __name__ too."}),
                "suffix": ("STRING", {"default": "", "advanced": True, "tooltip": "Put after every prompt (joined with ', '); "
                                                                "may use {a|b} and __name__ too."}),
            },
            "optional": {
                "text_file": (input_text_files(), {"default": NO_FILE, "advanced": True,
                                                   "tooltip": "A .txt file of the input folder whose lines are "
                                                              "added after `text` (same syntax)."}),
                "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1, "advanced": True,
                                       "tooltip": "Flux only (a T5-XXL + CLIP-L text encoder): the guidance every "
                                                  "prompt of the batch carries, as in CLIPTextEncodeFlux (3.5 is "
                                                  "Flux's default; FluxGuidance after this node still overrides "
                                                  "it). Ignored by other models."}),
                "participant": ("INT", {"forceInput": True, "default": 0, "min": 0, "max": 1 << 20,
                                        "advanced": True,
                                        "tooltip": "ComfyUI-Distributed: wire a Distributed Seed with seed 0 here "
                                                   "(0 on the master, i+1 on worker i). The prompts are then shared "
                                                   "out: each participant encodes only its contiguous share, and "
                                                   "`latent` carries only its entries. Not wired: the whole batch, "
                                                   "as always."}),
                "latent": ("LATENT", {"tooltip": "An empty latent (Empty Latent Image with batch_size 1, or "
                                                 "count): the `latent` output holds one entry per prompt of this "
                                                 "participant, each with its global batch_index."}),
                "model": ("MODEL", {"tooltip": "The diffusion model for the prompts' <lora:...> tags (not "
                                               "modified; the `model` output carries each prompt's LoRAs for its "
                                               "own image). Needed when a tag has a UNet strength, and on models "
                                               "that read text padding (Z-Image; Flux.2 prompts over 512 tokens): "
                                               "the `model` output then runs each image with its own prompt "
                                               "length."}),
            },
            "hidden": {"prompt": "PROMPT"},
        }

    @classmethod
    def IS_CHANGED(cls, text="", mode="lines", count=16, seed=0, prefix="", suffix="", text_file=NO_FILE, **kw):
        if "participant" in kw:  # wired: ComfyUI-Distributed's participants can change between runs, inputs not
            return float("nan")
        # wildcard files, text_file and the tagged LoRA files can change without any input changing
        try:
            got = prompts_from_inputs(text, mode, count, seed, prefix, suffix, text_file)
            h = hashlib.sha256("\n".join(got).encode())
            names = sorted({t.name for _, tags in parse_entry_tags(got) for t in tags})
            if names:
                from . import _lora_branch as branch
                available = folder_paths.get_filename_list("loras")
                for name in names:
                    h.update(repr(branch._file_key(folder_paths.get_full_path(
                        "loras", lora_tags.resolve_name(name, available)))).encode())
            return h.hexdigest()
        except Exception as e:  # the run itself reports the error
            return f"error: {e}"

    def __init__(self):
        self._files = ()  # keeps the LoRA files of the last run alive while its outputs may be reused

    def build(self, clip, text, mode, count, seed, prefix, suffix, text_file=NO_FILE, guidance=3.5,
              participant=None, latent=None, model=None, prompt=None):
        if clip is None:
            raise ValueError("LeanPromptBatch: the clip input is None - the checkpoint has no text encoder; "
                             "load one with a CLIP loader and connect its CLIP output")
        import comfy.model_management as mm
        texts = prompts_from_inputs(text, mode, count, seed, prefix, suffix, text_file,
                                    cancel=mm.throw_exception_if_processing_interrupted)
        n = len(texts)
        keep = None if participant is None else my_share(n, participant, prompt)
        start, end = keep or (0, n)
        # tags are read on all N prompts and the share taken of the parsed entries, so prompt i's LoRAs go to image
        # i whichever participant renders it
        parsed = parse_entry_tags(texts)
        tagged = any(tags for _, tags in parsed)
        # with tags anywhere, every prompt is encoded without them (the padding length is the whole batch's)
        clean = [c for c, _ in parsed] if tagged else texts
        if any(tags for _, tags in parsed[start:end]):
            loras = EntryLoras(model, clip, texts[start:end], parsed[start:end], first=start)
            conditioning, stats = encode_with_entry_loras(clip, clean, loras, keep)
            split, said = split_by_length(model, conditioning, stats)
            out_model = loras.model(split)  # the per-image branch inside the length split
            lines = loras.report()
            self._files = tuple(lf for lf, _, _ in loras.files.values())
        else:
            conditioning, stats = encode_prompts(clip, clean, keep)
            out_model, said = split_by_length(model, conditioning, stats)
            lines = [f"no LoRA tags in this participant's prompts {start + 1}-{end}" if tagged else
                     "no LoRA tags found"]
        if said:
            lines.append(said)
        if _host.flux_clip_model(clip) is not None:  # as CLIPTextEncodeFlux: one guidance value on every entry
            conditioning = [[c, {**info, "guidance": float(guidance)}] for c, info in conditioning]
        _log.info("[Lean Nodes] LeanPromptBatch: %d prompts%s, %s text-encoder pass(es)%s, %s distinct chunks",
                  n, "" if keep is None else f" (this participant: prompts {start + 1}-{end})", stats["passes"],
                  f" ({stats['packed']} packed: the prompts' own tokens side by side)" if stats.get("packed") else "",
                  stats["rows"])
        for line in lines:
            _log.info("[Lean Nodes] LeanPromptBatch: %s", line)
        return {"ui": {"text": lines},
                "result": (conditioning, texts, n, latent_share(latent, n, start, end), out_model)}


def my_share(n, participant, prompt):
    """(start, end) of this participant's prompts.  The count of participants and this one's place come from what
    ComfyUI-Distributed wrote into the prompt (its collector's list of workers); `participant` (a Distributed Seed
    with seed 0) must agree with it.  Outside a distributed run there is one participant: the whole batch."""
    layout = _host.distributed_layout(prompt)
    if layout is None:
        if participant != 0:
            raise ValueError(f"LeanPromptBatch: participant is {participant}, but this run was not queued by "
                             "ComfyUI-Distributed (no Distributed Collector with a job in the workflow); wire a "
                             "Distributed Seed with seed 0 into participant and a Distributed Collector after the "
                             "VAE Decode, and queue with ComfyUI-Distributed")
        return 0, n
    who = layout["participants"]
    if layout["load_balance"]:
        raise ValueError("LeanPromptBatch: the Distributed Collector's load_balance runs the whole workflow on one "
                         "participant, which cannot share the prompts out; switch load_balance off, or unwire "
                         "Prompt Batch's participant input")
    if participant != layout["me"]:
        raise ValueError(f"LeanPromptBatch: participant is {participant}, but ComfyUI-Distributed runs this as "
                         f"participant {layout['me']} of {len(who)} ({who[layout['me']]}); wire a Distributed Seed "
                         "whose seed is 0 into participant (it gives 0 on the master and i+1 on worker i)")
    if n < len(who):
        raise ValueError(f"LeanPromptBatch: {n} prompt(s) cannot be shared out over {len(who)} participants "
                         f"(the master and {len(who) - 1} worker(s)): each needs at least one; write more prompts "
                         "or disable workers in ComfyUI-Distributed")
    return D.share(n, len(who), layout["me"])


def latent_share(latent, n, start, end):
    """Entries start..end-1 of an empty latent of batch n (or 1, repeated), each with its global batch_index, so
    KSampler draws the noise of image i as in a one-machine run of the whole batch (comfy.sample.prepare_noise
    draws noise i for batch_index i)."""
    if latent is None:
        return None
    import torch
    samples = latent["samples"]
    b = samples.shape[0]
    if b not in (1, n):
        raise ValueError(f"LeanPromptBatch: the latent has batch {b}, but there are {n} prompts; wire Prompt "
                         "Batch's count into Empty Latent Image's batch_size")
    out = dict(latent)
    out["samples"] = (samples if b == n else samples.expand(n, *samples.shape[1:]))[start:end].clone()
    mask = latent.get("noise_mask")
    if torch.is_tensor(mask) and mask.shape[0] == n:
        out["noise_mask"] = mask[start:end].clone()
    given = latent.get("batch_index")
    out["batch_index"] = list(given[start:end]) if given is not None and len(given) == b == n else \
        list(range(start, end))
    return out


class LeanPromptBatchCheck:
    DESCRIPTION = ("After ComfyUI-Distributed's Distributed Collector: passes the gathered images on when there is "
                   "one per prompt (image i is prompt i), and otherwise stops the run with an error that names each "
                   "worker and what became of its share (does not answer, its run failed and why, still running). "
                   "ComfyUI-Distributed does not redo a missing worker's images, and its collector returns what "
                   "arrived after its worker timeout: this node keeps a shorter batch from passing as the whole.")
    CATEGORY = "lean/conditioning"
    FUNCTION = "check"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The gathered images, unchanged: one per prompt, in prompt order.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The Distributed Collector's images."}),
            },
            "optional": {
                "count": ("INT", {"forceInput": True, "default": 1, "min": 1, "max": P.MAX_PROMPTS,
                                  "tooltip": "Prompt Batch's count (the number of prompts, N)."}),
            },
            "hidden": {"prompt": "PROMPT"},
        }

    def check(self, images, count=None, prompt=None):
        layout = _host.distributed_layout(prompt)
        if count is None:
            why = ("ComfyUI-Distributed's master_delegate_only setting leaves Prompt Batch out of the master's run, "
                   "and the master must take the first share; switch master_delegate_only off"
                   if layout and layout["delegate_only"] else "wire Prompt Batch's count output into count")
            raise ValueError(f"LeanPromptBatchCheck: count is not connected: {why}")
        got = int(images.shape[0])
        if got == count:
            return (images,)
        head = (f"LeanPromptBatchCheck: the Distributed Collector gathered {got} image(s), but Prompt Batch has "
                f"{count} prompt(s)")
        if layout is None:
            raise ValueError(f"{head}, and this run was not queued by ComfyUI-Distributed; wire Prompt Batch's "
                             "count into Empty Latent Image's batch_size")
        workers = D.config_workers(_host.distributed_config())
        names = {wid: w["name"] for wid, w in workers.items()}
        lines = D.diagnose(layout, workers, _host.DISTRIBUTED_COLLECTOR)
        raise ValueError(f"{head}: a participant's share is missing, so the images would no longer match the "
                         f"prompts. The shares were: {D.slices_text(count, layout['participants'], names)}. "
                         + " ".join(f"{line}." for line in lines)
                         + " ComfyUI-Distributed does not redo a missing worker's images; fix or disable that "
                           "worker and queue again.")


# ----------------------------------------------------------------------------- preview route

def preview(query):
    """GET /lean/prompt_batch/preview?text=...&mode=...&count=...[&prefix=&suffix=&text_file=]
    -> {"count": n, "cap": count, "over_cap": bool, "at_least": bool}.  Read-only: reads wildcard files of the
    registered wildcards folders and text files of the input folder, nothing else.  Counting is linear in the
    text and the wildcard files (each wildcard counted once, counts saturating at P.COUNT_CAP: then
    at_least is true)."""
    mode = query.get("mode", "lines")
    cap = int(query.get("count", 16))
    text = _body(query.get("text", ""), query.get("text_file", NO_FILE))
    n = P.count_prompts(text, mode=mode, count=cap, wildcard_roots=wildcard_roots(),
                        prefix=query.get("prefix", ""), suffix=query.get("suffix", ""))
    return {"count": n, "mode": mode, "cap": cap, "over_cap": mode == "combinatorial" and n > cap,
            "at_least": n >= P.COUNT_CAP}


def manifest():
    """{"pack": Lean Nodes version, "wildcards": {name: sha256}, "wildcards_left_out": n}: read-only, file names and
    hashes of what Prompt Batch may read (core.doctor.wildcard_hashes), never contents."""
    from ..core import doctor
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hashes, left_out = doctor.wildcard_hashes(wildcard_roots())
    return {"pack": doctor._pack_version(root), "wildcards": hashes, "wildcards_left_out": left_out}


def public_error(message):
    """An error for the browser without absolute paths: each registered wildcards folder and the input folder
    is shown relative to ComfyUI's folder (or by its role when it lies elsewhere)."""
    roots = [(r, "wildcards folder") for r in wildcard_roots()]
    try:
        roots.append((folder_paths.get_input_directory(), "input folder"))
    except Exception:
        pass
    base = folder_paths.base_path  # public in every ComfyUI
    subs = {}
    for root, role in roots:
        shown = f"<{role}>"
        if base:
            try:
                rel = os.path.relpath(os.path.realpath(root), os.path.realpath(base))
            except ValueError:  # another drive (Windows)
                rel = ".."
            if rel != ".." and not rel.startswith(".." + os.sep) and not os.path.isabs(rel):
                shown = rel.replace(os.sep, "/")
        for form in {root, os.path.abspath(root), os.path.realpath(root)}:
            subs[form] = shown
    if base:
        subs.setdefault(os.path.abspath(base), "<ComfyUI>")
        subs.setdefault(os.path.realpath(base), "<ComfyUI>")
    for form in sorted(subs, key=len, reverse=True):   # longest first: a folder inside another
        message = message.replace(form, subs[form])
    return message


def _register_routes():
    try:
        import asyncio

        from aiohttp import web
        from server import PromptServer
    except Exception:  # no server (tests, scripts): no route
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return

    @instance.routes.get("/lean/prompt_batch/preview")
    async def lean_prompt_batch_preview(request):
        query = dict(request.rel_url.query)
        try:  # wildcard and text files are read in a worker thread, never in the event loop
            return web.json_response(await asyncio.get_running_loop().run_in_executor(None, preview, query))
        except (ValueError, OSError) as e:
            return web.json_response({"error": public_error(str(e))}, status=400)

    @instance.routes.get("/lean/distributed/manifest")
    async def lean_distributed_manifest(request):
        # what `lean.py doctor` compares between a ComfyUI-Distributed master and its workers
        return web.json_response(await asyncio.get_running_loop().run_in_executor(None, manifest))


_register_routes()


NODE_CLASS_MAPPINGS = {"LeanPromptBatch": LeanPromptBatch, "LeanPromptBatchCheck": LeanPromptBatchCheck}
NODE_DISPLAY_NAME_MAPPINGS = {"LeanPromptBatch": "Prompt Batch (wildcards)",
                              "LeanPromptBatchCheck": "Prompt Batch Check (distributed)"}
