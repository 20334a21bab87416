"""LeanLoraTags ("LoRA from Prompt Tags") and LeanLoraLoader ("LoRA (dynamic)").

LoRA and LoCon run as a low-rank branch in the forward pass (base weights untouched); see _lora_branch.py.
"""
import logging
import os

import folder_paths

from ..core import lora_blocks, lora_meta, lora_schedule, lora_tags
from . import _lora_branch as branch

log = logging.getLogger("lean.lora")

STRENGTH = {"default": 1.0, "min": -lora_schedule.MAX_ABS_STRENGTH, "max": lora_schedule.MAX_ABS_STRENGTH, "step": 0.01}
_BW_TIP = ("Block weights (A1111 LoRA Block Weight): a preset (" + ", ".join(lora_blocks.PRESET_NAMES) +
           ") or comma values: SD1.5 17 (BASE,IN01,IN02,IN04,IN05,IN07,IN08,M00,OUT03..OUT11) or 26 (every block), "
           "SDXL 12 (BASE,IN04,IN05,IN07,IN08,M00,OUT00..OUT05) or 20. Flux: blocks and ranges such as "
           "D0-D18:1,S0-S37:0 (double blocks D0..D18, single blocks S0..S37; unnamed blocks keep 1), presets "
           "DOUBLE, SINGLE, ALL, NONE, ALL0.5, or 58 values (BASE,D0..D18,S0..S37); Flux.2 the same names. "
           "Z-Image: L0..L29 (layers), NR0..NR1, CR0..CR1 (refiners), presets LAYERS, REFINERS, ALL, NONE, ALL0.5. "
           "Qwen-Image: B0..B59, presets FIRST_HALF, SECOND_HALF, ALL, NONE, ALL0.5. BASE weights the text "
           "encoder. Empty = ALL.")
_SCHED_TIP = ("Per-step strength multiplier: 'fraction:value' keyframes, e.g. 0:0.2,0.5:1,1:0.4 (step fraction 0..1 "
              "from the sampler's sigma, linear between keyframes). Empty = constant strength_model.")


def _lora_path(name):
    path = folder_paths.get_full_path("loras", name)
    if path is None or not os.path.isfile(path):
        available = folder_paths.get_filename_list("loras")
        resolved = lora_tags.resolve_name(name, available)  # raises FileNotFoundError with the closest names
        path = folder_paths.get_full_path("loras", resolved)
    return path


def _triggers(path):
    """(trigger words, error or None) of a LoRA file: kohya's ss_tag_frequency in the safetensors header, cleaned and
    capped by core/lora_meta.py, remembered per file identity (a bad file is read once, not on every request)."""
    return _META.get(path)


def _trigger_text(paths):
    """(the trigger words of these files, in order, each once, comma separated; report lines for the files whose
    metadata could not be read -- the LoRA itself still works)."""
    seen, out, notes = set(), [], []
    for p in paths:
        words, error = _triggers(p)
        if error:
            log.warning("[Lean LoRA] no trigger words: %s", error)
            notes.append(f"trigger words: none ({error})")
        for w in words:
            if w not in seen:
                seen.add(w)
                out.append(w)
    return ", ".join(out), notes


_TRIGGER_TIP = ("The LoRA's trigger words (the training tags saved in the file's metadata, most frequent first, "
                "comma separated; empty when the file has none). Wire it into your prompt.")


class _Cache:
    """Remembers the last output per side so that an unchanged side returns the very same object
    (ComfyUI then finds it already loaded: nothing is re-patched)."""

    def __init__(self):
        self.model = None  # (input model, key, output model)
        self.clip = None
        self.files = ()    # keeps the LoraFiles alive while this node's outputs may be reused

    def get(self, side, inp, key):
        c = getattr(self, side)
        if c is not None and c[0] is inp and c[1] == key:
            return c[2]
        return None

    def put(self, side, inp, key, out):
        setattr(self, side, (inp, key, out))


def _apply_chain(cache, model, clip, specs):
    """specs: list of dicts (lf, label, strength_model, strength_clip, schedule, start, end, block args).
    Returns (model, clip, report lines)."""
    mkey = tuple((branch._file_key(s["lf"].path), s["strength_model"], str(s["schedule"]), s["start"], s["end"],
                  s["block_text"].strip().upper()) for s in specs)
    ckey = tuple((branch._file_key(s["lf"].path), s["strength_clip"], s["block_text"].strip().upper())
                 for s in specs)
    out_model = cache.get("model", model, mkey)
    out_clip = cache.get("clip", clip, ckey)
    do_model = out_model is None
    do_clip = out_clip is None
    lines = []
    m, c = model, clip
    for s in specs:
        if s["strength_model"] == 0 and s["strength_clip"] == 0:
            # validate the block weights even when the LoRA is off, then skip it (like stock)
            layout = lora_blocks.unet_layout(model.model.diffusion_model.state_dict().keys()) if s["block_text"] else None
            lora_blocks.parse_block_weights(s["block_text"], layout, s["block_what"], s["block_full"], s["block_base"])
            lines.append(f"{os.path.basename(s['lf'].path)}: strength 0, skipped")
            continue
        m2, c2, ln = branch.apply_lora(m, c, s["lf"], s["label"], s["strength_model"], s["strength_clip"],
                                       s["schedule"], s["start"], s["end"], s["block_text"], s["block_what"],
                                       s["block_full"], s["block_base"], do_model=do_model, do_clip=do_clip)
        m = m2 if do_model else m
        c = c2 if do_clip else c
        lines += ln
    if do_model:
        cache.put("model", model, mkey, m)
        out_model = m
    else:
        lines.append("UNet unchanged: re-used the previous MODEL (nothing re-patched)")
    if do_clip:
        cache.put("clip", clip, ckey, c)
        out_clip = c
    else:
        lines.append("text encoder unchanged: re-used the previous CLIP (nothing re-patched)")
    cache.files = tuple(s["lf"] for s in specs)
    return out_model, out_clip, lines


def _spec(lf, label, strength_model, strength_clip, schedule=None, start=0.0, end=1.0, block_text="",
          block_what="block_weights", block_full=None, block_base=0):
    return dict(lf=lf, label=label, strength_model=strength_model, strength_clip=strength_clip, schedule=schedule,
                start=start, end=end, block_text=block_text or "", block_what=block_what, block_full=block_full,
                block_base=block_base)


class LeanLoraLoader:
    DESCRIPTION = ("One LoRA, computed as a low-rank branch in the forward pass (base weights untouched): a new "
                   "strength, a per-step schedule or block weights cost no re-patching. Chainable like the stock "
                   "LoRA loader. SD1.5, SDXL and Flux (kohya, diffusers/PEFT); fp8 or GGUF weights are left as they "
                   "are. LoHa/LoKr/OFT/DoRA fall back to ComfyUI's own patching (the node reports the path). The "
                   "report lists the LoRA's keys that matched no module ('not loaded: ...'); trigger_words gives "
                   "the LoRA's training tags.")
    CATEGORY = "lean/loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("model", "clip", "trigger_words")
    OUTPUT_TOOLTIPS = ("The model with the LoRA branch (input model unchanged).",
                       "The CLIP with the LoRA branch (the same object as last run if its inputs did not change).",
                       _TRIGGER_TIP)
    FUNCTION = "apply"

    def __init__(self):
        self._cache = _Cache()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model the LoRA is added to (not modified; cloned)."}),
            "clip": ("CLIP", {"tooltip": "The text encoder the LoRA is added to (not modified; cloned)."}),
            "lora_name": (folder_paths.get_filename_list("loras"), {"tooltip": "A LoRA file of the loras folder."}),
            "strength_model": ("FLOAT", dict(STRENGTH, tooltip="UNet strength (negative allowed). Multiplied by "
                                             "the schedule and the block weights.")),
            "strength_clip": ("FLOAT", dict(STRENGTH, tooltip="Text-encoder strength (negative allowed). "
                                            "Multiplied by the BASE block weight.")),
            "schedule": ("STRING", {"default": "", "multiline": False, "tooltip": _SCHED_TIP}),
            "block_weights": ("STRING", {"default": "", "multiline": False, "advanced": True, "tooltip": _BW_TIP}),
        }}

    @classmethod
    def IS_CHANGED(cls, lora_name="", **kw):
        try:
            return str(branch._file_key(_lora_path(lora_name)))
        except Exception:
            return ""

    def apply(self, model, clip, lora_name, strength_model, strength_clip, schedule="", block_weights=""):
        sm = lora_schedule.check_strength(strength_model, "strength_model")
        sc = lora_schedule.check_strength(strength_clip, "strength_clip")
        sched = lora_schedule.parse_schedule(schedule, "schedule")
        lf = branch.load_lora_file(_lora_path(lora_name))
        m, c, lines = _apply_chain(self._cache, model, clip,
                                   [_spec(lf, lora_name, sm, sc, sched, block_text=block_weights)])
        triggers, notes = _trigger_text([lf.path])
        lines += notes
        if triggers:
            lines.append(f"trigger words: {triggers}")
        return {"ui": {"text": lines}, "result": (m, c, triggers)}


def tag_lora_file(tag, available, where=""):
    """(file name in the loras folder, LoraFile) of a prompt tag; an unknown name is a FileNotFoundError with the
    closest names, prefixed by `where` and naming the tag."""
    try:
        name = lora_tags.resolve_name(tag.name, available)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{where}{e} (tag at character {tag.pos + 1}: {tag.text})") from None
    return name, branch.load_lora_file(folder_paths.get_full_path("loras", name))


class LeanLoraTags:
    DESCRIPTION = ("Finds A1111-style <lora:name:w> tags in the text (also <lora:name:unet_w:te_w>, named unet=, "
                   "te=, start=, end=, sched=, lbw=), applies each LoRA as a low-rank branch (no re-patching when "
                   "a strength changes) and returns the text with the tags removed, and the tagged LoRAs' trigger "
                   "words. Flux block weights: lbw=D0-D18:1,S0-S37:0. The report lists keys that matched no "
                   "module ('not loaded: ...').")
    CATEGORY = "lean/loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "STRING")
    RETURN_NAMES = ("model", "clip", "text", "trigger_words")
    OUTPUT_TOOLTIPS = ("The model with every tagged LoRA (input model unchanged).",
                       "The CLIP with every tagged LoRA (the same object as last run if its inputs did not change).",
                       "The text with the LoRA tags removed, ready for a text encoder.",
                       "The trigger words of every tagged LoRA (training tags from each file's metadata, most "
                       "frequent first, each once, comma separated; empty when none). Not added to `text`.")
    FUNCTION = "apply"

    def __init__(self):
        self._cache = _Cache()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model the LoRAs are added to (not modified; cloned)."}),
            "clip": ("CLIP", {"tooltip": "The text encoder the LoRAs are added to (not modified; cloned)."}),
            "text": ("STRING", {"multiline": True, "default": "", "dynamicPrompts": False,
                                "tooltip": "Prompt with tags: <lora:name:0.8>, <lora:name:0.8:0.5>, "
                                           "<lora:name:unet=0.8:te=0.5:start=0:end=0.6>, "
                                           "<lora:name:1:sched=0:0.2,0.5:1,1:0.4>, <lora:name:1:lbw=MIDD>. Names "
                                           "match files in the loras folder (exact, without extension, any case)."}),
        }}

    def apply(self, model, clip, text):
        clean, tags = lora_tags.parse_tags(text)
        if not tags:
            return {"ui": {"text": ["no LoRA tags found"]}, "result": (model, clip, clean, "")}
        available = folder_paths.get_filename_list("loras")
        specs = []
        for t in tags:
            name, lf = tag_lora_file(t, available)
            specs.append(_spec(lf, name, t.unet, t.te, t.sched, t.start, t.end, t.lbw, "LoRA tag",
                               text, t.lbw_pos))
        m, c, lines = _apply_chain(self._cache, model, clip, specs)
        triggers, notes = _trigger_text([s["lf"].path for s in specs])
        lines += notes
        if triggers:
            lines.append(f"trigger words: {triggers}")
        return {"ui": {"text": lines}, "result": (m, c, clean, triggers)}


NODE_CLASS_MAPPINGS = {
    "LeanLoraTags": LeanLoraTags,
    "LeanLoraLoader": LeanLoraLoader,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LeanLoraTags": "LoRA from Prompt Tags (dynamic)",
    "LeanLoraLoader": "LoRA (dynamic)",
}


# ------------------------------------------------------------------ GET /lean/loras

_META = lora_meta.TriggerCache()


def _lora_listing():
    """[{name, triggers[, error]}] for every file stock LoraLoader lists.  A file whose header or metadata is bad is
    listed with its `error` (naming the file, never its absolute path); the others are listed as usual."""
    out = []
    for name in folder_paths.get_filename_list("loras"):
        item = {"name": name, "triggers": []}
        path = folder_paths.get_full_path("loras", name)  # resolves only inside the registered loras folders
        if path:
            words, error = _META.get(path)
            item["triggers"] = words
            if error:
                item["error"] = error
        out.append(item)
    return out


def _register_routes():
    try:
        import asyncio

        from aiohttp import web
        from server import PromptServer
        routes = PromptServer.instance.routes
    except Exception:  # no server (tier-1 import, scripts): nothing to register
        return

    @routes.get("/lean/loras")
    async def lean_loras(request):
        # the listing stats and reads every LoRA's header: in a worker thread, never in the event loop
        listing = await asyncio.get_running_loop().run_in_executor(None, _lora_listing)
        return web.json_response({"loras": listing})


_register_routes()
