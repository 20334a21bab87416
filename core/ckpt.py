"""Format-independent checkpoint access: open, list keys/shapes, read a subset, report.

Two ways to get at the tensors of a file (``mode``):

* ``mmap``   -- the file is mapped once (private, copy-on-write: the file is never written) and
  tensors are zero-copy views into the mapping.  Nothing is read from disk until a tensor's bytes
  are used; a part of the file nobody touches is never read.
* ``read``   -- the byte ranges of the wanted tensors are read with a few large sequential reads
  (good for network drives, where page faults are slow), then viewed.

``direct`` (each tensor pread into a buffer of its own) is retired: its name promised loading straight to the
GPU, which the host's loading does not offer (ComfyUI's memory manager places every model, partially on small
VRAM).  Saved workflows holding it load as ``mmap``, the nearest mode (see ``resolve_load_mode``).

``CheckpointFile.release(key)`` (mmap mode) drops a tensor's file pages from this process's
resident set once a converted copy of it exists (``madvise(MADV_DONTNEED)``; the page cache keeps
them, nothing is written).  Windows' ``mmap`` has no ``madvise``: there the pages stay in the working set
until Windows trims it (clean file pages, dropped without any write when memory is short).

Process figures (RSS, peak RSS, disk bytes) come from ``/proc`` on Linux and from ``psutil`` elsewhere
(Windows: peak working set; no reset of the peak, so the report says "peak RSS of the process").  Every tensor whose bytes were used is recorded in ``keys_read`` and
``bytes_read``.

Formats: ``.safetensors``/``.sft`` (the header is parsed once here, with strict validation, so a
truncated or corrupt file gives an error naming the file); ``.ckpt/.pt/.pth/.bin`` through
``torch.load(mmap=True, weights_only=True)`` only -- never an unrestricted unpickle.

Pure logic: imports torch only (inside functions), never comfy.
"""
import contextlib
import mmap
import os
import time

from . import st_header
from .memory import OWN_MAPPING_MIN, empty_own_mapping

SAFETENSORS_EXT = (".safetensors", ".sft")
TORCH_EXT = (".ckpt", ".pt", ".pth", ".bin")
MODES = ("mmap", "read")
# Retired load_mode values a saved workflow may still hold -> (the mode used instead, why).
RETIRED_MODES = {
    "direct": ("mmap", "load_mode 'direct' is retired: it promised loading straight to the GPU, which ComfyUI's "
                       "loading does not offer (its memory manager places every model, partially on small VRAM); "
                       "loaded as mmap, which also reads only the used tensors, one at a time, without a second "
                       "copy. Pick mmap in the node to drop this note"),
}
PAGE = mmap.PAGESIZE


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what to do."""


def resolve_load_mode(mode):
    """(mode to load with, note or None) for a node's ``load_mode`` value: a retired value (a saved workflow may
    hold one) gets the nearest mode and a note for the load report; an unknown value is an error naming them."""
    if mode in MODES:
        return mode, None
    if mode in RETIRED_MODES:
        return RETIRED_MODES[mode]
    raise ValueError(f"load_mode must be one of {MODES}, got {mode!r}")


def _st_dtypes():
    import torch
    table = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
    for name, attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"),
                       ("U32", "uint32"), ("U64", "uint64"), ("F8_E8M0", "float8_e8m0fnu")):
        if hasattr(torch, attr):
            table[name] = getattr(torch, attr)
    return table


class TensorInfo:
    __slots__ = ("key", "dtype", "shape", "start", "end")

    def __init__(self, key, dtype, shape, start, end):
        self.key, self.dtype, self.shape, self.start, self.end = key, dtype, tuple(shape), start, end

    @property
    def nbytes(self):
        return self.end - self.start

    def __repr__(self):
        return f"TensorInfo({self.key!r}, {self.dtype}, {self.shape}, [{self.start}:{self.end}])"


def parse_safetensors_header(path):
    """(infos: dict key -> TensorInfo with absolute file offsets, metadata dict).  The header is read and validated
    by the pack's one safetensors header reader (st_header.py), so that a damaged or crafted file fails here, with
    its name, and not deep inside a model; a dtype torch does not have is refused here too."""
    try:
        h = st_header.read_header(path)
    except st_header.HeaderError as e:
        raise CheckpointError(str(e)) from None
    dtypes = _st_dtypes()
    infos = {}
    for key, t in h.tensors.items():
        dt = dtypes.get(t.dtype)
        if dt is None:
            raise CheckpointError(f"{h.name}: tensor {key!r} has an unsupported dtype for this loader ({t.dtype}: this "
                                  f"torch has no such type); the file is from a newer format -- use a version of the "
                                  f"model in F16/BF16/F32/FP8")
        infos[key] = TensorInfo(key, dt, t.shape, h.data_start + t.start, h.data_start + t.end)
    return infos, h.metadata


def _unwrap_torch_state_dict(obj):
    """The same nesting rules the host uses for .ckpt files ("state_dict", or a single nested dict)."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"]
    if isinstance(obj, dict) and len(obj) == 1:
        inner = next(iter(obj.values()))
        if isinstance(inner, dict):
            return inner
    return obj


class CheckpointFile:
    """An open checkpoint.  ``infos``: key -> TensorInfo (shape, dtype, byte range); nothing is read
    until ``tensor``/``read_subset`` asks for it."""

    def __init__(self, path, mode="mmap"):
        if mode not in MODES:
            raise ValueError(f"load_mode must be one of {MODES}, got {mode!r}")
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        self.mode = mode
        self.metadata = {}
        self.keys_read = set()
        self.bytes_read = 0
        self.format = None
        self._mm = None
        self._mm_base = 0
        self._mm_len = 0
        self._buffers = {}  # read mode: key -> uint8 tensor holding its bytes
        self._torch_sd = None
        self._ptr_key = {}  # data_ptr of a handed-out view -> key
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"checkpoint not found: {self.path} (put it in models/checkpoints and refresh)")
        low = self.path.lower()
        if low.endswith(SAFETENSORS_EXT):
            self.format = "safetensors"
            self.infos, self.metadata = parse_safetensors_header(self.path)
            self._open_safetensors()
        elif low.endswith(TORCH_EXT):
            self.format = "torch"
            self._open_torch()
        else:
            raise CheckpointError(f"{self.name}: unknown checkpoint extension; expected one of "
                                  f"{', '.join(SAFETENSORS_EXT + TORCH_EXT)}")

    # ------------------------------------------------------------------ opening
    def _open_safetensors(self):
        import torch
        if os.path.getsize(self.path) == 0:
            raise CheckpointError(f"{self.name}: empty file")
        # The mapping is what ``views()`` hands out (shapes and the odd value for model detection)
        # in every mode: mapping costs nothing until a page is touched.
        with open(self.path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        self._mm_len = len(self._mm)
        probe = torch.frombuffer(self._mm, dtype=torch.uint8, count=1)
        self._mm_base = probe.data_ptr()
        del probe

    def _open_torch(self):
        import pickle
        import torch
        try:
            obj = torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)
        except pickle.UnpicklingError as e:
            import re
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
            m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            why = f"it references {m.group(1)}" if m else "it references code, not just tensors"
            raise CheckpointError(f"{self.name}: refused to load: the file's pickle asks for more than tensors "
                                  f"({why}). It may be malicious; get a .safetensors version of the model, or "
                                  f"convert it with a tool you trust") from None
        except RuntimeError as e:
            msg = str(e)
            if "mmap" in msg or "zip" in msg.lower():
                raise CheckpointError(f"{self.name}: not a loadable torch checkpoint ({msg.splitlines()[0]}); "
                                      f"old-format or damaged .ckpt files cannot be memory-mapped -- use a "
                                      f".safetensors version of the model") from None
            raise CheckpointError(f"{self.name}: cannot read this torch checkpoint: {msg.splitlines()[0]}") from None
        except Exception as e:  # EOFError, zip errors, ...
            raise CheckpointError(f"{self.name}: not a readable torch checkpoint ({type(e).__name__}: {e}); "
                                  f"the file is damaged or not a model") from None
        sd = _unwrap_torch_state_dict(obj)
        if not isinstance(sd, dict):
            raise CheckpointError(f"{self.name}: holds a {type(sd).__name__}, not a state dict of tensors; "
                                  f"not a checkpoint")
        self._torch_sd = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        self.infos = {k: TensorInfo(k, v.dtype, v.shape, 0, v.numel() * v.element_size())
                      for k, v in self._torch_sd.items()}

    # ------------------------------------------------------------------ listing
    def keys(self):
        return list(self.infos)

    def shape(self, key):
        return self.infos[key].shape

    def dtype(self, key):
        return self.infos[key].dtype

    def nbytes(self, keys=None):
        keys = self.infos if keys is None else keys
        return sum(self.infos[k].nbytes for k in keys)

    def __contains__(self, key):
        return key in self.infos

    def __len__(self):
        return len(self.infos)

    # ------------------------------------------------------------------ reading
    def _record(self, key):
        if key not in self.keys_read:
            self.keys_read.add(key)
            self.bytes_read += self.infos[key].nbytes

    def _view(self, key):
        """Zero-copy tensor over the mapping (safetensors) or torch's own mmap (torch format)."""
        import torch
        if self._torch_sd is not None:
            return self._torch_sd[key]
        info = self.infos[key]
        numel = info.nbytes // info.dtype.itemsize if info.dtype.itemsize else 0
        if numel == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        if info.start % info.dtype.itemsize:
            # misaligned for its dtype: view the bytes, then copy into an aligned tensor
            raw = torch.frombuffer(self._mm, dtype=torch.uint8, count=info.nbytes, offset=info.start)
            return raw.clone().view(info.dtype).reshape(info.shape)
        return torch.frombuffer(self._mm, dtype=info.dtype, count=numel, offset=info.start).reshape(info.shape)

    def views(self):
        """key -> tensor that costs nothing until its values are used (mmap views, or torch's mmap).
        Meant for code that inspects shapes/dtypes (model detection); reading a value through a view
        is not counted in ``bytes_read`` -- use ``tensor`` for weights."""
        out = {k: self._view(k) for k in self.infos}
        for k, t in out.items():
            if t.numel():
                self._ptr_key.setdefault(t.data_ptr(), k)
        return out

    def read_subset(self, keys):
        """Read mode: fetch the byte ranges of ``keys`` with large sequential reads (neighbouring
        tensors merged into one read).  Returns key -> tensor.  Other modes: same result, each in
        its own way."""
        import torch
        keys = list(keys)
        if self.mode != "read" or self._torch_sd is not None:
            return {k: self.tensor(k) for k in keys}
        todo = sorted((self.infos[k] for k in keys if k not in self._buffers), key=lambda i: i.start)
        spans = []
        for info in todo:
            if spans and info.start - spans[-1][1] <= 1 << 20 and spans[-1][1] - spans[-1][0] < 256 << 20:
                spans[-1][1] = max(spans[-1][1], info.end)
                spans[-1][2].append(info)
            else:
                spans.append([info.start, info.end, [info]])
        with open(self.path, "rb", buffering=0) as f:
            for a, b, infos in spans:
                buf = torch.empty(b - a, dtype=torch.uint8)
                f.seek(a)
                mv = memoryview(buf.numpy())
                got = 0
                while got < b - a:
                    n = f.readinto(mv[got:])
                    if not n:
                        raise CheckpointError(f"{self.name}: file ended early; it is truncated")
                    got += n
                for info in infos:
                    self._buffers[info.key] = buf[info.start - a:info.end - a]
        return {k: self.tensor(k) for k in keys}

    def tensor(self, key):
        """The tensor for ``key`` in the file's own dtype, on the CPU, making no copy (mmap: a view of the
        mapping; read: a view of the read buffer)."""
        import torch
        info = self.infos.get(key)
        if info is None:
            raise KeyError(f"{self.name}: no tensor {key!r}")
        self._record(key)
        if self._torch_sd is not None:
            return self._torch_sd[key]
        if self.mode == "mmap":
            return self._view(key)
        if key not in self._buffers:  # read mode
            self.read_subset([key])
        raw = self._buffers[key]
        if raw.numel() == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        if raw.storage_offset() % info.dtype.itemsize:
            raw = raw.clone()
        return raw.view(info.dtype).reshape(info.shape)

    def release(self, key):
        """Drop the pages of ``key`` from the resident set (mmap mode; private read-only use, so the
        page cache keeps them and nothing is lost).  Partial pages at both ends are kept."""
        if self._mm is None or self.mode != "mmap" or self._torch_sd is not None:
            self._buffers.pop(key, None)
            return
        info = self.infos[key]
        a = -(-info.start // PAGE) * PAGE
        b = (info.end // PAGE) * PAGE
        # POSIX only: Windows' mmap has neither madvise nor MADV_*; there the clean file pages stay in the
        # working set until Windows trims it (no write, nothing lost), so RSS can read higher there.
        if b > a and hasattr(mmap, "MADV_DONTNEED") and hasattr(self._mm, "madvise"):
            try:
                self._mm.madvise(mmap.MADV_DONTNEED, a, b - a)
            except (OSError, ValueError):
                pass

    def key_of_view(self, t):
        """The key whose file tensor ``t`` is (a view handed out by ``views``/``tensor`` with the
        same data pointer, shape and dtype), else None (e.g. a tensor some code built itself)."""
        if t.device.type != "cpu":
            return None
        try:
            key = self._ptr_key.get(t.data_ptr())
        except RuntimeError:
            return None
        if key is not None:
            info = self.infos[key]
            if tuple(t.shape) == info.shape and t.dtype == info.dtype and t.is_contiguous():
                return key
        return None

    def keys_viewed_by(self, tensors):
        """File keys whose handed-out views (from ``views``) ``tensors`` are, or are slices, reshapes or
        renamed entries of (a host's key processing: prefix replacement, an ``in_proj`` split into q/k/v).
        Tensors not over this file's mapping are skipped."""
        out = set()
        for t in tensors:
            try:
                if t.device.type != "cpu" or not t.numel():
                    continue
                key = self._ptr_key.get(t.untyped_storage().data_ptr())
            except (RuntimeError, TypeError, NotImplementedError, AttributeError):
                continue
            if key is not None:
                out.add(key)
        return out

    def close(self):
        """Forget this object's handles.  The mapping itself goes away when the last tensor viewing
        it is freed (a model that kept zero-copy weights keeps exactly those pages)."""
        self._buffers = {}
        self._torch_sd = None
        self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_checkpoint(path, mode="mmap"):
    return CheckpointFile(path, mode)


def file_identity(path):
    """What says "this is still the file that was loaded": (size, mtime_ns, inode, device) -- on Windows os.stat
    fills st_ino/st_dev with the file index and volume serial.  A file rewritten in place (a re-download over it:
    truncated, then written) changes size or mtime; a file replaced by another changes inode.  None when the file
    cannot be stat'ed (gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


# ---------------------------------------------------------------------- process figures

def _status_kb(field):
    """A field of /proc/self/status in bytes (Linux), or None where /proc cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _psutil_memory():
    """psutil's memory_info() of this process (the host depends on psutil), or None."""
    try:
        import psutil
        return psutil.Process().memory_info()
    except Exception:
        return None


def rss_bytes():
    v = _status_kb("VmRSS")
    if v is None:
        mi = _psutil_memory()
        v = int(mi.rss) if mi is not None else 0
    return v


def peak_rss_bytes():
    """Peak RSS: VmHWM (Linux), else psutil's peak working set (Windows), else the current RSS."""
    v = _status_kb("VmHWM")
    if v is None:
        mi = _psutil_memory()
        peak = getattr(mi, "peak_wset", None) if mi is not None else None
        v = int(peak) if peak else rss_bytes()
    return v


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible (Windows: the peak
    working set cannot be reset, the report then says it is the process's peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def io_read_bytes():
    """Bytes this process caused to be fetched from storage (/proc/self/io read_bytes), else psutil's
    io_counters().read_bytes (Windows: every read, page cache hits included), or -1."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        import psutil
        return int(psutil.Process().io_counters().read_bytes)
    except Exception:
        return -1


class LoadMeter:
    """Seconds, disk bytes and peak RSS of one load."""

    def __init__(self):
        self.peak_reset = reset_peak_rss()
        self.rss0 = rss_bytes()
        self.io0 = io_read_bytes()
        self.t0 = time.perf_counter()

    def figures(self):
        io = io_read_bytes()
        return {"seconds": time.perf_counter() - self.t0,
                "disk_read_bytes": (io - self.io0) if io >= 0 and self.io0 >= 0 else None,
                "peak_rss_bytes": peak_rss_bytes(), "peak_is_for_this_load": self.peak_reset,
                "rss_before_bytes": self.rss0, "rss_after_bytes": rss_bytes()}


def gib(n):
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def format_report(r):
    """The one-paragraph load report the node outputs (and shows in the browser)."""
    lines = [f"{r['file']} ({r['format']}, {gib(r['file_bytes'])}) loaded in {r['seconds']:.2f} s, mode {r['mode']}",
             f"tensor bytes read: {gib(r['bytes_read'])} of {gib(r['file_bytes'])} "
             f"({r['keys_read']} of {r['keys_total']} tensors); from disk (not page cache): {gib(r['disk_read_bytes'])}",
             f"peak RSS {'during load' if r.get('peak_is_for_this_load') else 'of the process'}: "
             f"{gib(r['peak_rss_bytes'])} (RSS {gib(r['rss_before_bytes'])} -> {gib(r['rss_after_bytes'])})"]
    if r.get("mode_note"):
        lines.append(f"note: {r['mode_note']}")
    for part in ("model", "clip", "vae"):
        p = r["parts"].get(part)
        if p is None:
            lines.append(f"{part}: off (not read)")
        else:
            lines.append(f"{part}: {p}")
    return "\n".join(lines)


@contextlib.contextmanager
def weights_in_own_mappings(is_uninitialised):
    """While active, a parameter of at least ``OWN_MAPPING_MIN`` bytes on the CPU that a module registers
    is swapped for an uninitialised one of the same shape, dtype and ``requires_grad`` in its own mapping
    (``empty_own_mapping``), when ``is_uninitialised(module)`` says that module's parameters carry no values
    yet (e.g. ComfyUI's ops, which skip weight init).  Meant around model construction: the load that
    follows (``load_state_dict``) then writes into memory that goes back to the OS
    when the model is freed.  Buffers are never swapped (they may hold computed values)."""
    import torch
    from torch.nn.modules import module as nn_module

    def on_param(module, name, param):
        if (param is None or param.device.type != "cpu" or param.numel() * param.element_size() < OWN_MAPPING_MIN
                or not is_uninitialised(module)):
            return None
        return torch.nn.Parameter(empty_own_mapping(param.shape, param.dtype), requires_grad=param.requires_grad)

    handle = nn_module.register_module_parameter_registration_hook(on_param)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def release_as_loaded(files):
    """While active, every module built registers a ``load_state_dict`` pre-hook (torch's own module hook) that,
    as the load reaches it, drops from the resident set the file pages (``CheckpointFile.release``) of the
    tensors the modules visited before it were handed (their values are copied by then): when some host code
    builds a model and loads a whole state dict of mapped views into it in one call, the mapped file and the
    model's copy never add up beyond one module's tensors.  ``files``: the open CheckpointFiles the views come
    from.  On exit the hooks are removed and the last module's pages released.  Views that no file handed out
    (tensors host code built itself) are skipped."""
    from torch.nn.modules import module as nn_module

    pending, handles, seen = [], [], set()

    def flush():
        while pending:
            ck, key = pending.pop()
            ck.release(key)

    def file_key(t):
        for ck in files:
            try:
                key = ck.key_of_view(t)
            except (RuntimeError, TypeError, AttributeError):
                key = None
            if key is not None:
                return ck, key
        return None

    def pre_hook(module, state_dict, prefix, *args):
        flush()
        for name in list(module._parameters) + list(module._buffers):
            t = state_dict.get(prefix + name)
            if t is not None and hasattr(t, "data_ptr"):
                found = file_key(t)
                if found is not None:
                    pending.append(found)

    def on_param(module, name, param):
        if id(module) not in seen:
            seen.add(id(module))
            register = getattr(module, "register_load_state_dict_pre_hook", None)
            if register is not None:  # torch >= 2.5
                handles.append(register(pre_hook))
            else:
                handles.append(module._register_load_state_dict_pre_hook(pre_hook, with_module=True))
        return None

    reg = nn_module.register_module_parameter_registration_hook(on_param)
    try:
        yield
    finally:
        reg.remove()
        for h in handles:
            h.remove()
        flush()
