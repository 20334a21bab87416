"""What the ComfyUI host this pack runs in can do, detected in one place.

ComfyUI changes how it builds and holds models between releases (DynamicVRAM / comfy-aimdo with lazily
built layers since 0.15 and 0.29, ``quant_config`` replacing ``scaled_fp8`` in 0.3.76, ``assign`` in
``load_model_weights``, a RAM-pressure cache in 0.33).  The node modules ask here instead of probing the
host themselves; every answer is read live (``main.py`` switches DynamicVRAM on after the pack may have
been imported), and nothing here changes the host.

Not a node module (the leading underscore keeps ``__init__.py`` from registering it).
"""
import inspect
import logging
import threading
import weakref

log = logging.getLogger("lean")


def _import(name):
    try:
        return __import__(name, fromlist=["_"])
    except Exception:
        return None


def dynamic_vram():
    """True when the host runs DynamicVRAM (comfy-aimdo): layers are built without weights and get them
    only when their state dict is loaded, and the host's memory manager maps weights itself."""
    mmgmt = _import("comfy.memory_management")
    return bool(getattr(mmgmt, "aimdo_enabled", False))


def patcher_class():
    """The ModelPatcher class the host's own checkpoint loaders use: ``CoreModelPatcher`` where the host
    has it (``ModelPatcherDynamic`` once DynamicVRAM is on), else ``ModelPatcher``."""
    import comfy.model_patcher as mp
    return getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher


def patcher_is_dynamic(patcher):
    is_dyn = getattr(patcher, "is_dynamic", None)
    return bool(is_dyn()) if callable(is_dyn) else False


def load_weights_takes_assign():
    """True when ``BaseModel.load_model_weights`` has the ``assign`` argument (the host hands file tensors
    to a dynamic patcher's model by reference)."""
    import comfy.model_base
    try:
        return "assign" in inspect.signature(comfy.model_base.BaseModel.load_model_weights).parameters
    except (TypeError, ValueError):
        return False


def convert_old_quants():
    """``comfy.utils.convert_old_quants`` (old scaled-fp8 files -> the host's mixed-precision layout) or None
    on hosts that still read ``scaled_fp8`` themselves during model detection."""
    import comfy.utils
    fn = getattr(comfy.utils, "convert_old_quants", None)
    return fn if callable(fn) else None


def quant_style():
    """'quant_config' (0.3.76 and later: per-layer quantization, MixedPrecisionOps) or 'scaled_fp8' (older
    hosts: one scaled-fp8 flag per model) or 'none'.  Read from the class, never from a model config
    instance: on new hosts reading ``scaled_fp8`` logs a warning."""
    import comfy.supported_models_base as smb
    names = set(dir(smb.BASE))
    if "quant_config" in names:
        return "quant_config"
    if "scaled_fp8" in names:
        return "scaled_fp8"
    return "none"


def model_is_quantized(model_config):
    """True when the detected model config says the file's diffusion model is stored quantized (its weight
    dtype is then not the dtype to keep weights in)."""
    style = quant_style()
    if style == "none":
        return False
    return getattr(model_config, style, None) is not None


def set_inference_dtype(model_config, dtype, manual_cast, device):
    try:
        takes_device = "device" in inspect.signature(model_config.set_inference_dtype).parameters
    except (TypeError, ValueError):
        takes_device = False
    if takes_device:
        model_config.set_inference_dtype(dtype, manual_cast, device=device)
    else:
        model_config.set_inference_dtype(dtype, manual_cast)


def ram_cache_release():
    """0.33's RAM-pressure cache entry point (``comfy.memory_management.extra_ram_release(target,
    free_active=False)``), else None.  The host calls it before it pins or loads weights; while a prompt runs on
    the RAM-pressure cache (``--cache-ram``, 0.33's default) it evicts cached node outputs until ``target`` bytes
    of RAM are available (``comfy_execution.caching.RAMPressureCache.ram_release``; the executor runs the same
    after every node with its ``--cache-ram`` thresholds).  There is no callback for a custom node to register:
    what the cache frees is what its outputs keep alive, so memory a node holds follows its output
    (``free_with_output``)."""
    mmgmt = _import("comfy.memory_management")
    fn = getattr(mmgmt, "extra_ram_release", None)
    return fn if callable(fn) else None


def free_hooks():
    """Names of the host functions through which memory is freed, present on this host."""
    import comfy.model_management as mm
    out = [n for n in ("free_memory", "unload_all_models", "load_models_gpu", "cleanup_models", "soft_empty_cache")
           if callable(getattr(mm, n, None))]
    if isinstance(getattr(mm, "current_loaded_models", None), list):
        out.append("current_loaded_models")
    if ram_cache_release() is not None:
        out.append("memory_management.extra_ram_release")
    return out


def capabilities():
    """Everything above as a plain dict (for the load report, logs and tests)."""
    pc = patcher_class()
    return {"dynamic_vram": dynamic_vram(), "patcher_class": pc.__name__,
            "load_weights_assign": load_weights_takes_assign(), "quant_style": quant_style(),
            "convert_old_quants": convert_old_quants() is not None, "free_hooks": free_hooks()}


# ---------------------------------------------------------------------- memory held outside torch models

class _ForeignPatcher:
    """The few ModelPatcher methods ComfyUI's memory manager calls on what ``current_loaded_models`` holds,
    for memory this pack holds outside a torch model (a llama.cpp model).  It can only be freed whole."""
    parent = None

    def __init__(self, name, size, device, free):
        self.model = type(name, (), {})()  # what the host's logs name ("Unloading <class name>")
        self.load_device = self.offload_device = device
        self.size = int(size)
        self._free = free
        self.freed = False

    def is_dynamic(self):
        return False

    def is_clone(self, other):
        return False

    def model_size(self):
        return self.size

    def loaded_size(self):
        return 0 if self.freed else self.size

    def current_loaded_device(self):
        return self.load_device

    def partially_unload(self, *args, **kwargs):
        return 0

    def partially_load(self, *args, **kwargs):
        return 0

    def model_patches_to(self, *args, **kwargs):
        return None

    def model_dtype(self):
        return None

    def lowvram_patch_counter(self):
        return 0

    def detach(self, *args, **kwargs):
        if not self.freed:
            self.freed = True
            self._free()


_ENTRY_CLASS = []


def _entry_class():
    """A subclass of the host's own ``LoadedModel`` whose model is a ``_ForeignPatcher``: the host's
    ``free_memory`` (called before an image model loads, by ``unload_all_models`` and so by POST /free with
    unload_models) sorts it with the other loaded models and unloads it the same way."""
    if not _ENTRY_CLASS:
        import comfy.model_management as mm

        class ForeignLoadedModel(mm.LoadedModel):
            def __init__(self, patcher):  # no torch model: none of LoadedModel's weakrefs/finalizers
                self._foreign = patcher
                self.device = patcher.load_device
                self.currently_used = False  # never handed to nodes asking for the models in use
                self.model_finalizer = None
                self._patcher_finalizer = None

            @property
            def model(self):
                return self._foreign

            def real_model(self):  # cleanup_models() drops an entry whose model is gone
                return None if self._foreign.freed else self._foreign.model

            def model_load(self, *args, **kwargs):
                return self._foreign.model

            def model_use_more_vram(self, *args, **kwargs):
                return 0

            def model_unload(self, memory_to_free=None, unpatch_weights=True):
                self._foreign.detach()
                return True

            def is_dead(self):
                return False

            def __del__(self):
                pass

        _ENTRY_CLASS.append(ForeignLoadedModel)
    return _ENTRY_CLASS[0]


_FOREIGN = {}  # key -> entry, for memory registered through register_foreign


def register_foreign(key, name, size, free, on_gpu=False):
    """Make memory this pack holds (``size`` bytes, freed by calling ``free()``) one of the host's loaded
    models, so its memory manager frees it when an image model needs room and on "unload models".  The
    entry sits on the torch device when ``on_gpu`` (VRAM), else on the CPU.  Idempotent per ``key``."""
    import comfy.model_management as mm
    loaded = getattr(mm, "current_loaded_models", None)
    if not isinstance(loaded, list):
        return False
    forget_freed()
    old = _FOREIGN.get(key)
    if old is not None and old in loaded and not old.model.freed:
        return True
    import torch
    device = mm.get_torch_device() if on_gpu else torch.device("cpu")

    def _free():
        _FOREIGN.pop(key, None)
        free()

    entry = _entry_class()(_ForeignPatcher(name, size, device, _free))
    _FOREIGN[key] = entry
    loaded.append(entry)
    return True


def unregister_foreign(key):
    """Take the entry of ``key`` out of the host's loaded models (the memory was freed by this pack)."""
    import comfy.model_management as mm
    entry = _FOREIGN.pop(key, None)
    if entry is None:
        return False
    entry.model.freed = True
    loaded = getattr(mm, "current_loaded_models", [])
    for i in range(len(loaded) - 1, -1, -1):
        if loaded[i] is entry:
            loaded.pop(i)
    return True


def forget_freed(is_loaded=None):
    """Drop entries whose memory is gone (``is_loaded(key)`` False, or freed through the host)."""
    for key in list(_FOREIGN):
        entry = _FOREIGN[key]
        if entry.model.freed or (is_loaded is not None and not is_loaded(key)):
            unregister_foreign(key)


def foreign_keys():
    return list(_FOREIGN)


# ---------------------------------------------------------------------- memory that lives as long as a node output

_TIED = weakref.WeakKeyDictionary()  # object -> key
_TIED_COUNT = {}  # key -> live objects tied to it
_TIED_LOCK = threading.RLock()  # re-entrant: a finalizer may run inside the lock's own thread (gc)


def free_with_output(obj, key, release):
    """Let the host's node-output cache decide how long memory held under ``key`` lives, as it does for its own
    loaders' models: ``release()`` runs once the last object tied to ``key`` (``obj``: what a loader node returned)
    is garbage, i.e. the host's cache dropped that output.  Every host drops cached outputs: 0.33's RAM-pressure
    cache when free RAM falls below its ``--cache-ram`` thresholds (after each node, and whenever the host calls
    ``comfy.memory_management.extra_ram_release``), the classic cache once the node leaves the prompt, the LRU
    cache past its size, POST /free with free_memory always.  ``release`` must not refer to ``obj``.  Returns
    False if ``obj`` was tied already."""
    with _TIED_LOCK:
        if obj in _TIED:
            return False
        _TIED[obj] = key
        _TIED_COUNT[key] = _TIED_COUNT.get(key, 0) + 1
    weakref.finalize(obj, _untie, key, release)
    return True


def _untie(key, release):
    with _TIED_LOCK:
        n = _TIED_COUNT.get(key, 0) - 1
        if n > 0:
            _TIED_COUNT[key] = n
            return
        _TIED_COUNT.pop(key, None)
    try:
        release()
    except Exception as e:  # runs from the garbage collector: never raise
        log.warning("[Lean] could not free memory of %r after ComfyUI dropped its output: %s", key, e)


def tied_keys():
    with _TIED_LOCK:
        return list(_TIED_COUNT)


# ---------------------------------------------------------------------- user settings, Cancel

SETTINGS_FILE = "comfy.settings.json"
SETTINGS_USER = "default"
MAX_SETTINGS_BYTES = 8 << 20


def user_settings_file():
    """The stored settings of the host's default user: ``<user directory>/default/comfy.settings.json`` (what
    ``app/app_settings.py`` writes when the Settings dialog changes a value; the same on 0.3.64 and 0.33, which
    also has ``folder_paths.get_public_user_directory``).  With ``--multi-user`` each user has a file; only the
    default user's is read (the server's owner; others may be anyone who reaches the server)."""
    import os
    import folder_paths
    get = getattr(folder_paths, "get_public_user_directory", None)
    user_dir = get(SETTINGS_USER) if callable(get) else None
    if not user_dir:
        user_dir = os.path.join(folder_paths.get_user_directory(), SETTINGS_USER)
    return os.path.join(user_dir, SETTINGS_FILE)


def read_user_setting(setting_id):
    """(value, problem) of one entry of the default user's stored settings, read from the file each time (the
    dialog saves it at once).  Absent file or entry: (None, "").  A file that is too big or not a JSON object:
    (None, a line saying so).  Never raises."""
    import json
    import os
    path = None
    try:
        path = user_settings_file()
        if not os.path.isfile(path):
            return None, ""
        with open(path, "rb") as f:
            raw = f.read(MAX_SETTINGS_BYTES + 1)
        if len(raw) > MAX_SETTINGS_BYTES:
            return None, f"ComfyUI's settings file (user/{SETTINGS_USER}/{SETTINGS_FILE}) is larger than " \
                         f"{MAX_SETTINGS_BYTES >> 20} MB: its {setting_id} entry is ignored"
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return None, (f"ComfyUI's settings file (user/{SETTINGS_USER}/{SETTINGS_FILE}) could not be read "
                      f"({type(e).__name__}): its {setting_id} entry is ignored; set it again in the Settings dialog")
    except Exception as e:  # the host's folder_paths missing or changed
        log.debug("[Lean] no user settings (%s): %s", path, e)
        return None, ""
    if not isinstance(data, dict):
        return None, (f"ComfyUI's settings file (user/{SETTINGS_USER}/{SETTINGS_FILE}) is not a JSON object: its "
                      f"{setting_id} entry is ignored")
    return data.get(setting_id), ""


def interrupt_check():
    """The host's Cancel check: a callable that raises the host's interrupt exception once the user pressed
    Cancel (POST /interrupt).  None outside a host."""
    mm = _import("comfy.model_management")
    fn = getattr(mm, "throw_exception_if_processing_interrupted", None)
    return fn if callable(fn) else None
