"""LoRA as a low-rank branch in the forward pass: y = W·x + s(t)·B(A·x), W untouched.

Files are read and keys mapped by ComfyUI itself (comfy.lora_convert, comfy.lora.model_lora_keys_unet/_clip,
comfy.lora.load_lora and its weight adapters).  LoRA/LoCon adapters become torch forward hooks:

* UNet: an APPLY_MODEL wrapper registers the hooks for the duration of one model call, with the strength of
  that call (from the sampler's sigma -> step fraction -> schedule, start/end window, block weights) and removes
  them afterwards.  Nothing stays in the model between calls, so a new strength costs no patching.
* Text encoder: a patcher injection registers the hooks when ComfyUI patches the CLIP model and removes them
  when it unpatches it (constant strength: the text encoder runs once, outside the sampler).

Adapters with no cheap branch (LoHa, LoKr, OFT, DoRA, diff/set patches, sliced keys) go to ComfyUI's own
patching (`add_patches`) at the constant strength, and the node reports which path each module took.
"""
import itertools
import logging
import os
import weakref

import torch
import torch.nn.functional as F

import comfy.lora
import comfy.lora_convert
import comfy.patcher_extension
import comfy.utils

from ..core import lora_blocks, lora_rows, memory
from . import _host

log = logging.getLogger("lean.lora")

WRAPPER_KEY = "lean_lora"
_uid = itertools.count(1)


# ------------------------------------------------------------------ file cache

class LoraFile:
    """A LoRA file read by ComfyUI (converted state dict).  Cached weakly: it lives as long as a model or
    CLIP built from it, so re-running a node with a new strength never re-reads the file."""

    def __init__(self, path, sd):
        self.path = path
        self.sd = sd
        self.mapped = {}  # model signature -> MappedLora
        self.nbytes = sum(t.numel() * t.element_size() for t in sd.values() if torch.is_tensor(t))


_FILES = weakref.WeakValueDictionary()


def _file_key(path):
    st = os.stat(path)
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size)


def load_lora_file(path):
    key = _file_key(path)
    lf = _FILES.get(key)
    if lf is None:
        try:
            sd = comfy.utils.load_torch_file(path, safe_load=True)
        except Exception as e:
            raise ValueError(f"LoRA file '{os.path.basename(path)}' could not be read ({type(e).__name__}: {e}). "
                             "Check that it is a complete .safetensors LoRA.") from None
        sd = comfy.lora_convert.convert_lora(sd)
        lf = LoraFile(path, sd)
        _FILES[key] = lf
    return lf


_SUFFIXES = (".lora_up.", ".lora_down.", ".lora_mid.", "_lora.up.", "_lora.down.", ".lora_A.", ".lora_B.",
             ".lora.up.", ".lora.down.", ".lora_linear_layer.", ".alpha", ".dora_scale", ".hada_", ".lokr_",
             ".oft_", ".diff", ".w_norm", ".b_norm", ".set_weight", ".reshape_weight", ".a1.", ".a2.", ".b1.",
             ".b2.", ".rescale", ".oft_blocks", ".lora_A", ".lora_B")


def _module_names(sd):
    names = set()
    for k in sd:
        cut = min((k.find(s) for s in _SUFFIXES if s in k), default=-1)
        names.add(k[:cut] if cut > 0 else k.rsplit(".", 1)[0])
    return names


# ------------------------------------------------------------------ factors

class Factors:
    """Low-rank factors of one module: out += scale * up(mid(down(x))).  `alpha` is alpha/rank.
    Stored as loaded (no copy); cast to the compute device/dtype on first use: on CPU the cast copy replaces
    the loaded one, on an accelerator a device copy is kept."""
    __slots__ = ("down", "up", "mid", "alpha", "kind", "_cache", "slabs")

    def __init__(self, down, up, mid, alpha, kind):
        self.down, self.up, self.mid, self.alpha, self.kind = down, up, mid, alpha, kind
        self._cache = None
        self.slabs = None  # memory.Slabs shared by one mapped LoRA: its CPU casts live and die together

    def get(self, device, dtype):
        d, u, m = self.down, self.up, self.mid
        if d.device == device and d.dtype == dtype:
            return d, u, m
        c = self._cache
        if c is not None and c[0] == device and c[1] == dtype:
            return c[2]
        if device.type == "cpu" and self.slabs is not None:
            sl = self.slabs
            cast = (sl.copy_of(d, dtype), sl.copy_of(u, dtype), None if m is None else sl.copy_of(m, dtype))
        else:
            cast = (d.to(device, dtype), u.to(device, dtype), None if m is None else m.to(device, dtype))
        if device.type == "cpu":
            # CPU compute: keep only the compute-dtype copy (the file's tensors are released after mapping)
            self.down, self.up, self.mid = cast
        else:  # a device copy next to the CPU one (small)
            self._cache = (device, dtype, cast)
        return cast

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in (self.down, self.up, self.mid) if t is not None)


def _conv_fn(ndim):
    return {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[ndim]


def branch_factors(adapter, module, out_slice=None):
    """Factors for a LoRAAdapter on `module`, or (None, why) when it has no cheap exact branch.
    `out_slice` (offset, size): the adapter covers only those output rows of a Linear (diffusers Flux LoRAs:
    to_q/to_k/to_v are slices of the fused qkv / linear1 weight); `up` is then zero-padded to the full output."""
    weights, why = _host.lora_adapter_weights(adapter)
    if weights is None:
        return None, why
    up, down, alpha, mid, dora, reshape = weights
    if dora is not None:
        return None, "DoRA"
    if reshape is not None:
        return None, "reshape"
    rank = down.shape[0]
    a = (alpha / rank) if alpha is not None else 1.0
    if out_slice is not None:
        if not isinstance(module, torch.nn.Linear) or mid is not None:
            return None, "sliced key"
        off, size = out_slice
        if down.numel() != rank * module.in_features or up.numel() != size * rank or \
                off < 0 or off + size > module.out_features:
            return None, "shape"
        full = torch.zeros((module.out_features, rank), dtype=up.dtype)
        full[off:off + size] = up.reshape(size, rank)
        return Factors(down.reshape(rank, module.in_features), full, None, a, "linear"), None
    if isinstance(module, torch.nn.Linear):
        if mid is not None:
            return None, "tucker on linear"
        if down.numel() != rank * module.in_features or up.numel() != module.out_features * rank:
            return None, "shape"
        return Factors(down.reshape(rank, module.in_features), up.reshape(module.out_features, rank), None, a,
                       "linear"), None
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None, "conv options"
        shape = _host.weight_shape(module.weight)  # logical: a ComfyUI-GGUF weight's dim() is its packed data's
        k = tuple(shape[2:])
        ones = (1,) * len(k)
        out_c, in_c = shape[0], shape[1]
        if up.numel() != out_c * rank:
            return None, "shape"
        up4 = up.reshape(out_c, rank, *ones)
        if mid is not None:
            if tuple(mid.shape[2:]) != k or down.numel() != rank * in_c:
                return None, "shape"
            return Factors(down.reshape(rank, in_c, *ones), up4, mid, a, "tucker"), None
        if down.dim() == len(shape) and tuple(down.shape[2:]) == k and down.shape[1] == in_c:
            return Factors(down, up4, None, a, "conv"), None
        if k == ones and down.numel() == rank * in_c:
            return Factors(down.reshape(rank, in_c, *ones), up4, None, a, "conv"), None
        return None, "shape"
    return None, f"module {type(module).__name__}"


class _Hook:
    """Forward hook adding scale * B(A x) to a module's output."""
    __slots__ = ("f", "scale")

    def __init__(self, f):
        self.f = f
        self.scale = 0.0

    def __call__(self, module, args, output):
        return _add_branch(module, args[0], output, self.f, self.scale * self.f.alpha)


def _add_branch(module, x, output, f, s):
    """output + s * B(A x) for the factors `f` of `module`; `s` a number or a tensor that broadcasts over the rows
    of A x (one scale per row: [rows, 1, ...])."""
    return output + _branch(module, x, f, s).to(output.dtype)


def _branch(module, x, f, s):
    """s * B(A x) (mid between for Tucker), in x's dtype."""
    down, up, mid = f.get(x.device, x.dtype)
    if f.kind == "linear":
        return F.linear(F.linear(x, down) * s, up)
    conv = _conv_fn(len(_host.weight_shape(module.weight)))
    if f.kind == "tucker":
        h = conv(x, down)
        h = conv(h, mid, None, module.stride, module.padding, module.dilation)
    else:
        h = conv(x, down, None, module.stride, module.padding, module.dilation)
    return conv(h * s, up)


# ------------------------------------------------------------------ mapping a file onto a model

class Mapped:
    """One LoRA file mapped onto one model/CLIP pair."""

    def __init__(self):
        self.unet = []       # (module path, Factors, block)
        self.clip = []       # (module path, Factors)
        self.unet_host = {}  # weight key -> patch (ComfyUI patching)
        self.clip_host = {}
        self.why_host = {}   # reason -> count
        self.file_modules = 0
        self.matched = 0
        self.not_loaded = []  # module names of the file that match no module of this model/CLIP
        self.kinds = {}       # "branch"/"host" -> {weight kind: count} (fp8, gguf Q4_K, bf16, ...)
        # CPU casts of all factors share mappings that go back to the OS with this object (not ~hundreds of
        # small heap chunks glibc would keep after every unload)
        self.slabs = memory.Slabs()


def _strip_weight(key):
    return key[:-len(".weight")] if isinstance(key, str) and key.endswith(".weight") else None


def _with_peft_unet_keys(km_u):
    """ComfyUI maps diffusers UNet attention keys only in the attention-processor form
    (``unet.<block>.attn1.processor.to_q`` -> ``..._lora.down.weight``); PEFT files (diffusers >= 0.21) name the
    module itself (``unet.<block>.attn1.to_q.lora_A.weight``, ``...to_out.0...``).  Add those names for the same
    weights (the other modules, proj_in/ff, already map under ``unet.``)."""
    extra = {}
    for k, v in km_u.items():
        if k.startswith("unet.") and ".processor.to_" in k:
            alias = k.replace(".processor.to_", ".to_")
            extra[alias + ".0" if alias.endswith(".to_out") else alias] = v
    extra.update(km_u)
    return extra


def _target(key):
    """(module path, out_slice) of a patch key: 'x.weight' -> ('x', None); a sliced key
    ('x.weight', (0, offset, size)) -> ('x', (offset, size)); anything else -> (None, None)."""
    if isinstance(key, str):
        return _strip_weight(key), None
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], tuple) and len(key[1]) == 3 \
            and key[1][0] == 0:
        path = _strip_weight(key[0])
        return (path, (int(key[1][1]), int(key[1][2]))) if path is not None else (None, None)
    return None, None


def _merge_slices(parts):
    """Several sliced Factors of one Linear (to_q, to_k, to_v of a fused qkv) -> one: the downs stacked, the
    zero-padded ups side by side with each part's alpha folded in, so the module gets one hook."""
    if len(parts) == 1:
        return parts[0]
    down = torch.cat([p.down.float() for p in parts], 0)
    up = torch.cat([p.up.float() * p.alpha for p in parts], 1)
    return Factors(down, up, None, 1.0, "linear")


def map_lora(lf: LoraFile, model, clip):
    """Map with ComfyUI's key maps and adapters; split into branch factors and host patches."""
    objs = (model.model if model is not None else None, clip.cond_stage_model if clip is not None else None)
    sig = tuple(id(o) for o in objs)
    hit = lf.mapped.get(sig)
    if hit is not None and all((r() if r is not None else None) is o for r, o in zip(hit.refs, objs)):
        return hit
    if lf.sd is None:  # released after an earlier mapping: read again for this model
        lf.sd = comfy.lora_convert.convert_lora(comfy.utils.load_torch_file(lf.path, safe_load=True))
    km_u, km_c = {}, {}
    if model is not None:
        km_u = _with_peft_unet_keys(comfy.lora.model_lora_keys_unet(model.model, {}))
    if clip is not None:
        km_c = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    key_map = dict(km_c)
    key_map.update(km_u)
    loaded = comfy.lora.load_lora(lf.sd, key_map, log_missing=False)
    unet_targets = {v if isinstance(v, str) else v[0] for v in km_u.values()}
    m = Mapped()
    names = sorted(_module_names(lf.sd))
    m.file_modules = len(names)
    m.sample = names[0] if names else "?"
    m.matched = len(loaded)
    m.not_loaded = [n for n in names if n not in key_map]
    sliced = {}  # (is_unet, path) -> [Factors] of the slices of one module
    layout = lora_blocks.unet_layout(model.model.diffusion_model.state_dict().keys()) if model is not None else None
    for key, patch in loaded.items():
        k0 = key if isinstance(key, str) else key[0]
        is_unet = k0 in unet_targets
        root = model.model if is_unet else (clip.cond_stage_model if clip is not None else None)
        path, out_slice = _target(key)
        fac, why = None, "sliced key" if not isinstance(key, str) else "bias/other"
        module = None
        if path is not None and root is not None:
            try:
                module = root.get_submodule(path)
            except AttributeError:
                module = None
            if module is not None:
                fac, why = branch_factors(patch, module, out_slice)
        kind = _host.weight_kind(module) if module is not None else "?"
        side = m.kinds.setdefault("branch" if fac is not None else "host", {})
        side[kind] = side.get(kind, 0) + 1
        if fac is not None and out_slice is not None:
            sliced.setdefault((is_unet, path, k0), []).append(fac)
        elif fac is not None:
            fac.slabs = m.slabs
            (m.unet if is_unet else m.clip).append((path, fac, lora_blocks.block_of_key(k0, layout)) if is_unet
                                                     else (path, fac))
        else:
            (m.unet_host if is_unet else m.clip_host)[key] = patch
            m.why_host[why] = m.why_host.get(why, 0) + 1
    for (is_unet, path, k0), parts in sliced.items():
        fac = _merge_slices(parts)
        fac.slabs = m.slabs
        (m.unet if is_unet else m.clip).append((path, fac, lora_blocks.block_of_key(k0, layout)) if is_unet else (path, fac))
    m.refs = tuple(weakref.ref(o) if o is not None else None for o in objs)
    lf.sd = None  # the Mapped factors (and host-patch adapters) keep what is needed; nothing else is held
    if len(lf.mapped) > 4:
        lf.mapped.clear()
    lf.mapped[sig] = m
    return m


def not_loaded_text(names, first=5):
    """'a, b, c, d, e (+N more)'."""
    head = ", ".join(names[:first])
    return head + (f" (+{len(names) - first} more)" if len(names) > first else "")


# ------------------------------------------------------------------ step fraction from sigma

def sigma_to_percent(model_sampling, sigma, cache):
    """Step fraction of `sigma` for this model's sampling (inverse of model_sampling.percent_to_sigma by
    bisection, so it works for every model sampling), rounded to 1e-6 so step boundaries are stable."""
    s = float(sigma)
    p = cache.get(s)
    if p is not None:
        return p
    lo, hi = 0.0, 1.0
    if s >= float(model_sampling.percent_to_sigma(1e-7)):
        p = 0.0
    elif s <= 0.0:
        p = 1.0
    else:
        for _ in range(40):
            mid = (lo + hi) / 2
            if float(model_sampling.percent_to_sigma(mid)) > s:
                lo = mid
            else:
                hi = mid
        p = (lo + hi) / 2
    p = round(p, 6)
    if len(cache) > 4096:
        cache.clear()
    cache[s] = p
    return p


# ------------------------------------------------------------------ UNet wrapper

def strength_at(strength, schedule, start, end, model_sampling, sigma, pcache):
    """The strength of one LoRA use at `sigma`: 0 outside its start/end window, else strength x schedule."""
    if schedule is None and start <= 0.0 and end >= 1.0:
        return strength
    p = sigma_to_percent(model_sampling, sigma, pcache)
    if p < start or p > end:
        return 0.0
    return strength * (schedule(p) if schedule is not None else 1.0)


class UnetBranch:
    """APPLY_MODEL wrapper: installs this LoRA's hooks for one model call at the strength of that call."""

    def __init__(self, label, entries, strength, schedule=None, start=0.0, end=1.0, block_weights=None):
        self.label = label
        self.strength = float(strength)
        self.schedule = schedule
        self.start, self.end = float(start), float(end)
        self.hooks = []
        for path, fac, block in entries:
            w = block_weights.weight(block) if block_weights is not None else 1.0
            if w != 0.0:
                self.hooks.append((path, _Hook(fac), w))
        self._modules = (None, None)
        self._pcache = {}
        self.last = None  # (percent, strength) of the latest call, for logs and tests

    def strength_at(self, model_sampling, sigma):
        return strength_at(self.strength, self.schedule, self.start, self.end, model_sampling, sigma, self._pcache)

    def _resolve(self, base_model):
        ref, mods = self._modules
        if ref is not None and ref() is base_model:
            return mods
        mods = [base_model.get_submodule(path) for path, _, _ in self.hooks]
        self._modules = (weakref.ref(base_model), mods)
        return mods

    def __call__(self, executor, x, t, *args, **kwargs):
        base_model = executor.class_obj
        sigma = t.max() if torch.is_tensor(t) and t.numel() > 1 else t
        s = self.strength_at(base_model.model_sampling, sigma) if self.hooks else 0.0
        self.last = s
        if s == 0.0:
            return executor(x, t, *args, **kwargs)
        handles = []
        try:
            for (path, hook, w), mod in zip(self.hooks, self._resolve(base_model)):
                hook.scale = s * w
                handles.append(mod.register_forward_hook(hook))
            return executor(x, t, *args, **kwargs)
        finally:
            for h in handles:
                h.remove()


# ------------------------------------------------------------------ CLIP injection

class ClipBranch:
    """Registers this LoRA's text-encoder hooks while ComfyUI has the CLIP patcher patched."""

    def __init__(self, label, entries, scale):
        self.label = label
        self.entries = [(path, _Hook(fac)) for path, fac in entries]
        for _, h in self.entries:
            h.scale = scale
        self._handles = []
        self._owner = None

    def inject(self, patcher):
        self._remove()
        root = patcher.model
        self._handles = [root.get_submodule(path).register_forward_hook(h) for path, h in self.entries]
        self._owner = weakref.ref(patcher)

    def eject(self, patcher):
        # a stale clone (is_injected copied at clone time) must not remove the hooks another clone installed
        if self._owner is not None and self._owner() is patcher:
            self._remove()

    def _remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        self._owner = None

    def injection(self):
        return comfy.patcher_extension.PatcherInjection(inject=self.inject, eject=self.eject)


# ------------------------------------------------------------------ applying one LoRA

def apply_clip(clip, m, label, te_scale, name):
    """(clip with the mapped LoRA `m`'s text-encoder side at `te_scale` (a clone; the input when the scale is 0),
    report line)."""
    if te_scale == 0.0:
        return clip, f"{name}: text encoder strength 0, CLIP left unchanged"
    new_clip = clip.clone()
    if m.clip:
        cb = ClipBranch(label, m.clip, te_scale)
        new_clip.patcher.set_injections(f"{WRAPPER_KEY}_{next(_uid)}", [cb.injection()])
    if m.clip_host:
        new_clip.add_patches(m.clip_host, te_scale)
    return new_clip, (f"{name}: text encoder {len(m.clip)} modules as low-rank branch, {len(m.clip_host)} by "
                      f"host patching; strength {te_scale:g}")


def mapping_report(m, name):
    """Report lines for the modules of a mapped LoRA that found no place in this model (logged as warnings)."""
    lines = []
    if m.matched < m.file_modules:
        lines.append(f"{name}: only {m.matched} of {m.file_modules} modules matched this model "
                     "(made for another architecture or variant?)")
    if m.not_loaded:
        lines.append(f"{name}: not loaded: {not_loaded_text(m.not_loaded)}")
    for line in lines:
        log.warning("[Lean LoRA] %s", line)
    return lines


def apply_lora(model, clip, lf: LoraFile, label, strength_model, strength_clip, schedule=None, start=0.0,
               end=1.0, block_text="", block_what="block_weights", block_full=None, block_base=0,
               do_model=True, do_clip=True):
    """Returns (model', clip', report lines).  Clones; never mutates the inputs.  `do_model`/`do_clip`
    False returns that input unchanged (the caller re-uses a cached object)."""
    m = map_lora(lf, model, clip)
    layout = lora_blocks.unet_layout(model.model.diffusion_model.state_dict().keys()) if model is not None else None
    bw = lora_blocks.parse_block_weights(block_text, layout, block_what, block_full, block_base)
    name = os.path.basename(lf.path)
    if m.matched == 0:
        arch = type(model.model).__name__ if model is not None else "this model"
        sample = m.sample
        raise ValueError(f"LoRA '{name}' matched 0 of its {m.file_modules} modules on {arch}: it was made for "
                         f"another model architecture (its keys look like '{sample}'). Pick a LoRA trained for "
                         "this checkpoint.")
    lines = mapping_report(m, name)
    te_scale = strength_clip * (bw.base if bw is not None else 1.0)
    new_model, new_clip = model, clip
    if do_model and model is not None and (m.unet or m.unet_host):
        if strength_model == 0.0:
            lines.append(f"{name}: UNet strength 0, model left unchanged")
        else:
            new_model = model.clone()
            if m.unet:
                br = UnetBranch(label, m.unet, strength_model, schedule, start, end, bw)
                new_model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, br)
            if m.unet_host:
                groups = {}
                for key, patch in m.unet_host.items():
                    k0 = key if isinstance(key, str) else key[0]
                    w = bw.weight(lora_blocks.block_of_key(k0, layout)) if bw is not None else 1.0
                    groups.setdefault(w, {})[key] = patch
                for w, patches in groups.items():
                    if w != 0.0:
                        new_model.add_patches(patches, strength_model * w)
            sched = ""
            if schedule is not None or start > 0 or end < 1:
                sched = f", schedule {schedule or 'constant'} window {start:g}-{end:g}"
                if m.unet_host:
                    sched += " (host-patched modules use the constant strength)"
            lines.append(f"{name}: UNet {len(m.unet)} modules as low-rank branch, {len(m.unet_host)} by host "
                         f"patching; strength {strength_model:g}{sched}" +
                         (f", blocks {bw.source}" if bw is not None else ""))
    if do_clip and clip is not None and (m.clip or m.clip_host):
        new_clip, line = apply_clip(clip, m, label, te_scale, name)
        lines.append(line)
    if m.unet_host or m.clip_host:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(m.why_host.items()))
        lines.append(f"{name}: host patching used for formats without a cheap branch ({why})")
    if m.kinds:
        lines.append(f"{name}: weights by path: " + "; ".join(
            f"{side} " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
            for side, kinds in sorted(m.kinds.items())))
    for line in lines:
        log.info("[Lean LoRA] %s", line)
    return new_model, new_clip, lines


# ------------------------------------------------------------------ per-image LoRAs (Prompt Batch)

PER_ENTRY_KEY = "lean_lora_per_image"


class EntryUse:
    """One LoRA tag of one batch entry: its UNet strength, schedule, start/end window and block weights."""
    __slots__ = ("entry", "strength", "schedule", "start", "end", "bw", "pcache")

    def __init__(self, entry, strength, schedule=None, start=0.0, end=1.0, bw=None):
        self.entry, self.strength, self.schedule = int(entry), float(strength), schedule
        self.start, self.end, self.bw = float(start), float(end), bw
        self.pcache = {}


class _RowScales:
    """One LoRA's scales for the rows of one model call: a [rows, blocks] table, cast once per device/dtype.  Only the
    rows with a scale other than 0 (`index`; None when that is every row) go through the branch."""
    __slots__ = ("table", "label", "rows", "index", "_cast")

    def __init__(self, table, label):
        self.rows = table.shape[0]
        used = table.abs().sum(dim=1) != 0
        self.index = None if bool(used.all()) else used.nonzero().flatten()
        self.table = table if self.index is None else table[self.index]
        self.label = label
        self._cast = None

    def column(self, x, col, path):
        """(scales [k] of the used rows for this block, row index [k] on x's device or None for all rows)."""
        if x.shape[0] != self.rows:
            raise RuntimeError(f"per-image LoRA '{self.label}': module {path} got {x.shape[0]} rows where the sampler "
                               f"passed {self.rows}: this model does not keep the image batch on the first axis of its "
                               "layers, so each image's LoRAs cannot be told apart. Apply the LoRA to every image with "
                               "LoRA (dynamic) instead.")
        c = self._cast
        if c is None or c[0] != x.device or c[1] != x.dtype:
            index = None if self.index is None else self.index.to(x.device)
            c = (x.device, x.dtype, self.table.t().contiguous().to(x.device, x.dtype), index)
            self._cast = c
        return c[2][col], c[3]


class _RowHook:
    """Forward hook adding s_row * B(A x) to a module's output: one low-rank product per call for the rows that use
    the LoRA (all rows, or those gathered by index), scaled per row."""
    __slots__ = ("f", "col", "path", "rows")

    def __init__(self, f, col, path):
        self.f, self.col, self.path = f, col, path
        self.rows = None

    def __call__(self, module, args, output):
        x = args[0]
        s, index = self.rows.column(x, self.col, self.path)
        s = (s * self.f.alpha).view((-1,) + (1,) * (x.dim() - 1))
        if index is None:
            return _add_branch(module, x, output, self.f, s)
        part = _branch(module, x.index_select(0, index), self.f, s)
        return output.index_add(0, index, part.to(output.dtype))


class _PerLora:
    """One LoRA file of a batch: its hooks (each module once) and every use of it by the entries."""

    def __init__(self, label, entries, uses):
        self.label = label
        self.uses = list(uses)
        blocks = sorted({b for _, _, b in entries})
        col = {b: i for i, b in enumerate(blocks)}
        self.nblocks = len(blocks)
        self.weights = [[u.bw.weight(b) if u.bw is not None else 1.0 for b in blocks] for u in self.uses]
        self.hooks = [(path, _RowHook(fac, col[block], path)) for path, fac, block in entries
                      if any(w[col[block]] != 0.0 for w in self.weights)]

    def table(self, n, entry_of_row, model_sampling, sigma):
        """[rows, blocks] float32 scales of this call, or None when every row's scale is 0."""
        per_entry = {}
        for u, w in zip(self.uses, self.weights):
            s = strength_at(u.strength, u.schedule, u.start, u.end, model_sampling, sigma, u.pcache)
            if s == 0.0:
                continue
            row = per_entry.setdefault(u.entry % n, [0.0] * self.nblocks)
            for b in range(self.nblocks):
                row[b] += s * w[b]
        if not per_entry or not self.hooks:
            return None
        zero = [0.0] * self.nblocks
        rows = [per_entry.get(e, zero) for e in entry_of_row]
        if not any(any(r) for r in rows):
            return None
        return torch.tensor(rows, dtype=torch.float32)


class PerEntryBranch:
    """APPLY_MODEL wrapper of a prompt batch's per-image LoRAs: for each model call it reads from the host which
    input row belongs to which batch entry (nodes/_host.sampler_rows, core/lora_rows.py), installs each LoRA's hooks
    once, with a per-row scale (entry i's strength x schedule x block weight, 0 for the rows of entries that do not
    use it), runs the model, and removes them."""

    def __init__(self, n, loras):
        self.n = int(n)
        self.loras = [_PerLora(label, entries, uses) for label, entries, uses in loras]
        self._modules = (None, None)
        self.last = None  # entry of each row of the latest call (logs, tests)

    def _resolve(self, base_model):
        ref, mods = self._modules
        if ref is not None and ref() is base_model:
            return mods
        mods = [[base_model.get_submodule(path) for path, _ in lo.hooks] for lo in self.loras]
        self._modules = (weakref.ref(base_model), mods)
        return mods

    def __call__(self, executor, x, t, *args, **kwargs):
        topts = args[3] if len(args) > 3 else kwargs.get("transformer_options", {})
        given = topts.get(lora_rows.ROW_ENTRIES_KEY)  # a sub-call of Prompt Batch's length split
        if isinstance(given, list) and len(given) == x.shape[0]:
            return self._run(executor, x, t, [int(e) % self.n for e in given], *args, **kwargs)
        chunks, window = _host.sampler_rows(topts)
        if chunks is None:
            raise RuntimeError("per-image LoRAs: this model call does not come from ComfyUI's sampler (it does not "
                               "say which rows are which image), so each image's LoRAs cannot be applied. Sample "
                               "with KSampler / SamplerCustom, or use LoRA (dynamic) for one LoRA set on all images.")
        try:
            entry_of_row = lora_rows.row_entries(x.shape[0], chunks, self.n, window)
        except lora_rows.RowMappingError as e:
            raise RuntimeError(f"per-image LoRAs: {e}") from None
        return self._run(executor, x, t, entry_of_row, *args, **kwargs)

    def _run(self, executor, x, t, entry_of_row, *args, **kwargs):
        self.last = entry_of_row
        base_model = executor.class_obj
        sigma = t.max() if torch.is_tensor(t) and t.numel() > 1 else t
        handles = []
        try:
            for lo, mods in zip(self.loras, self._resolve(base_model)):
                table = lo.table(self.n, entry_of_row, base_model.model_sampling, sigma)
                if table is None:
                    continue
                scales = _RowScales(table, lo.label)
                for (path, hook), mod in zip(lo.hooks, mods):
                    hook.rows = scales
                    handles.append(mod.register_forward_hook(hook))
            return executor(x, t, *args, **kwargs)
        finally:
            for h in handles:
                h.remove()


def add_per_entry(model, branch):
    """A clone of `model` with the per-image branch as an APPLY_MODEL wrapper (the input model unchanged)."""
    new_model = model.clone()
    new_model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, PER_ENTRY_KEY, branch)
    return new_model
