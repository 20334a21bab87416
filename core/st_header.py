"""The one safetensors header reader: the checkpoint loader (ckpt.py), the System Check (doctor.py) and LoRA
metadata (lora_meta.py) all read headers here, with one set of limits.

A model file is untrusted input (users load files and workflows that strangers share), so every field is checked
**before** any arithmetic is done with it, and the work is linear in the header's size:

* the header length is at least 2 and at most ``MAX_HEADER`` (the safetensors library's own limit) and fits the
  file; the header is UTF-8 JSON starting with ``{``; integers longer than 20 digits are never converted (a 4 MB
  header of huge dimensions is refused in milliseconds), ``NaN``/``Infinity`` and lone surrogates are refused;
* each tensor entry has exactly ``dtype``, ``shape`` and ``data_offsets``; the dtype is one the format names;
  at most ``MAX_NDIM`` dimensions, each an integer ``0 <= d < 2**48`` (booleans refused); the offsets are two
  integers ``0 <= start <= end <= data size``; ``numel * bits / 8 == end - start``;
* sorted by offset, the tensors cover the data section exactly: no overlap, no gap, nothing after the last
  tensor (what the safetensors library requires too, so whatever this reader accepts, the library accepts);
* ``__metadata__`` is absent, ``null`` or an object of strings.

Every refusal is a ``HeaderError`` (a ``ValueError``) whose message names the file (base name only, never an
absolute path), the tensor where there is one, and what to do.  Reading uses plain ``read`` calls (Windows' Python
has no ``os.pread``).  Pure logic: no torch, no host.
"""
import json
import os
import struct

MAX_HEADER = 100_000_000   # bytes of JSON: the safetensors library refuses longer headers ("header too large")
MAX_NDIM = 8
MAX_DIM = 1 << 48
MAX_INT_DIGITS = 20        # 2**64 - 1 has 20 digits: no integer of a valid header is longer
_KEY_SHOWN = 80            # characters of a tensor name quoted in a message

# bits per element of every dtype the safetensors format names
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
              "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "C64": 64, "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_FIELDS = ("dtype", "shape", "data_offsets")

CORRUPT = "the file is damaged or was crafted: do not use this copy, download it again from a source you trust"
TRUNCATED = "the file is truncated or corrupt (an interrupted download or copy?): copy/download it again"


class HeaderError(ValueError):
    """A safetensors header that cannot be trusted.  ``file`` is the base name, ``tensor`` the tensor's name
    (or None); the message says both and what to do."""

    def __init__(self, file, message, tensor=None):
        self.file, self.tensor = file, tensor
        where = f"{file}: tensor {quote(tensor)}: " if tensor is not None else f"{file}: "
        super().__init__(where + message)


def quote(key):
    return repr(key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "...")


class BadNumber:
    """Stands in for a JSON integer that is negative or longer than MAX_INT_DIGITS digits: it is never turned into
    a Python int (converting 4000 digits, and multiplying such numbers, is what costs time)."""
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        t = self.text
        return t if len(t) <= 24 else f"{t[:12]}...({len(t)} digits)"


def _int(text):
    if text[0] == "-" or len(text) > MAX_INT_DIGITS:
        return BadNumber(text)
    return int(text)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads(text):
    """``json.loads`` that stays linear in ``len(text)``: integers that are negative or over 20 digits come back as
    ``BadNumber`` (never converted), ``NaN``/``Infinity`` are refused, and nesting too deep for Python's parser is a
    ``ValueError`` (not a ``RecursionError``)."""
    try:
        return json.loads(text, parse_int=_int, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _clean(s):
    """True when `s` is a str that is valid UTF-8 (JSON's \\ud800 escapes give lone surrogates, which the
    safetensors library refuses)."""
    if type(s) is not str:
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_uint(v):
    return type(v) is int and v >= 0  # type(), not isinstance: True/False are ints to Python, never to JSON


class TensorEntry:
    """One tensor of the header: dtype name (as in the file), shape, byte offsets relative to the data section."""
    __slots__ = ("key", "dtype", "shape", "start", "end")

    def __init__(self, key, dtype, shape, start, end):
        self.key, self.dtype, self.shape, self.start, self.end = key, dtype, shape, start, end

    @property
    def nbytes(self):
        return self.end - self.start

    def __repr__(self):
        return f"TensorEntry({self.key!r}, {self.dtype}, {self.shape}, [{self.start}:{self.end}])"


class Header:
    """``tensors``: {name: TensorEntry} in file order; ``metadata``: {str: str}; ``data_start``: the file offset of
    the data section (8 + header length); ``size``: the file size."""
    __slots__ = ("name", "tensors", "metadata", "data_start", "size")

    def __init__(self, name, tensors, metadata, data_start, size):
        self.name, self.tensors, self.metadata, self.data_start, self.size = name, tensors, metadata, data_start, size


def read_header(path, max_header=MAX_HEADER):
    """The validated header of the safetensors file at `path` (only the header is read).  Raises HeaderError for
    anything malformed, OSError when the file cannot be read (FileNotFoundError when it is not there)."""
    name = os.path.basename(os.fspath(path))
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise HeaderError(name, f"file is {size} bytes, too short to be a safetensors file (truncated or empty; "
                                    "copy/download it again)")
        (n,) = struct.unpack("<Q", head)
        if n > max_header:
            raise HeaderError(name, f"corrupt safetensors header: its length field says {n} bytes, over the limit of "
                                    f"{max_header} (the safetensors library's own); this is not a valid .safetensors "
                                    f"file -- {CORRUPT}, or if it is really a .ckpt/.pt file give it that extension")
        if n < 2 or 8 + n > size:
            raise HeaderError(name, f"corrupt or truncated safetensors header (header length {n}, file size {size}); "
                                    "this is not a valid .safetensors file -- copy/download it again, or if it is "
                                    "really a .ckpt/.pt file give it that extension")
        raw = f.read(n)
    if len(raw) != n:
        raise HeaderError(name, f"the file changed while it was read (header of {n} bytes, {len(raw)} read); "
                                "try again once nothing is writing to it")
    return parse(raw, size, name)


def parse(raw, size, name):
    """Validate the JSON header bytes `raw` of a file of `size` bytes named `name` (see read_header)."""
    n = len(raw)
    if raw[:1] != b"{":
        raise HeaderError(name, f"corrupt safetensors header (it does not start with '{{'); {CORRUPT}")
    try:
        header = loads(raw.decode("utf-8"))  # an object: the text starts with '{' and is one JSON value
    except UnicodeDecodeError as e:
        raise HeaderError(name, f"corrupt safetensors header (not UTF-8 at byte {e.start}); {CORRUPT}") from None
    except ValueError as e:
        raise HeaderError(name, f"corrupt safetensors header (not valid JSON: {str(e)[:200]}); {CORRUPT}") from None
    data_size = size - 8 - n
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif type(metadata) is not dict:
        raise HeaderError(name, f"__metadata__ is a JSON {_json_type(metadata)}, not an object of strings; {CORRUPT}")
    else:
        for k, v in metadata.items():
            if type(v) is not str:
                raise HeaderError(name, f"__metadata__ entry {quote(k)} is a JSON {_json_type(v)}, not a string (the "
                                        f"format allows only text there); {CORRUPT}")
            if not (_clean(k) and _clean(v)):
                raise HeaderError(name, f"__metadata__ entry {quote(k)} is not valid UTF-8 text (a lone surrogate "
                                        f"escape); {CORRUPT}")
    tensors = {}
    for key, e in header.items():
        tensors[key] = _entry(name, key, e, data_size)
    _check_layout(name, tensors, data_size)
    return Header(name, tensors, metadata, 8 + n, size)


def _json_type(v):
    if isinstance(v, BadNumber) or type(v) in (int, float):
        return "number"
    return {str: "string", list: "array", dict: "object", bool: "boolean", type(None): "null"}.get(type(v), "value")


def _entry(name, key, e, data_size):
    if not _clean(key):
        raise HeaderError(name, f"a tensor name is not valid UTF-8 text; {CORRUPT}")
    if type(e) is not dict:
        raise HeaderError(name, f"its header entry is a JSON {_json_type(e)}, not an object; {CORRUPT}", key)
    for f in _FIELDS:
        if f not in e:
            raise HeaderError(name, f"its header entry has no {f!r}; {CORRUPT}", key)
    if len(e) != len(_FIELDS):
        extra = next(k for k in e if k not in _FIELDS)
        raise HeaderError(name, f"its header entry has an unknown field {quote(extra)} (only dtype, shape and "
                                f"data_offsets exist); {CORRUPT}", key)
    dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
    if type(dtype) is not str or dtype not in DTYPE_BITS:
        shown = quote(dtype) if type(dtype) is str else f"a JSON {_json_type(dtype)}"
        raise HeaderError(name, f"unsupported dtype {shown} (known: {', '.join(DTYPE_BITS)}); the file is corrupt "
                                "or from a newer format", key)
    if type(shape) is not list:
        raise HeaderError(name, f"its shape is a JSON {_json_type(shape)}, not a list of sizes; {CORRUPT}", key)
    if len(shape) > MAX_NDIM:
        raise HeaderError(name, f"its shape has {len(shape)} dimensions, more than {MAX_NDIM} (no model tensor has "
                                f"that many); {CORRUPT}", key)
    for i, d in enumerate(shape):
        if not (_is_uint(d) and d < MAX_DIM):
            shown = repr(d) if type(d) in (int, float, BadNumber) else f"a JSON {_json_type(d)}"
            raise HeaderError(name, f"shape dimension {i} is {shown}: each dimension must be an integer from 0 to "
                                    f"2**48 - 1 (negative, fractional and huge sizes are impossible); {CORRUPT}", key)
    if type(offsets) is not list or len(offsets) != 2 or not all(_is_uint(x) for x in offsets):
        raise HeaderError(name, f"its data_offsets {short(offsets)} are not two byte offsets [start, end] (integers "
                                f">= 0); {CORRUPT}", key)
    a, b = offsets
    if a > b:
        raise HeaderError(name, f"its data_offsets [{a}, {b}] end before they start; {CORRUPT}", key)
    if b > data_size:
        raise HeaderError(name, f"lies outside the file (offsets {a}..{b}, file data {data_size} bytes): {TRUNCATED}",
                          key)
    # every factor is < 2**48 and there are at most 8: the product is bounded, and stops growing past the file
    numel = 0 if 0 in shape else 1
    for d in shape if numel else ():
        numel *= d
        if numel > 8 * data_size:
            break
    bits = numel * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != b - a:
        raise HeaderError(name, f"has the wrong size: shape {shape} of {dtype} is {_bytes(bits)}, but its data_offsets "
                                f"[{a}, {b}] hold {b - a} bytes; {CORRUPT}", key)
    return TensorEntry(key, dtype, tuple(shape), a, b)


def short(v):
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _bytes(bits):
    if bits % 8:
        return f"{bits} bits (not a whole number of bytes)"
    return f"{bits // 8} bytes" if bits < 1 << 70 else "more bytes than any file holds"


def _check_layout(name, tensors, data_size):
    """Sorted by (start, end), each tensor starts where the previous one ended, and the last ends at the file's end:
    no overlap, no gap, no trailing bytes (the safetensors library's own rule)."""
    order = sorted(tensors.values(), key=lambda t: (t.start, t.end))
    pos, prev = 0, None
    for t in order:
        if t.start < pos:
            raise HeaderError(name, f"its bytes {t.start}..{t.end} overlap tensor {quote(prev.key)} "
                                    f"({prev.start}..{prev.end}); {CORRUPT}", t.key)
        if t.start > pos:
            after = f"the previous tensor ends at {pos}" if prev is not None else "the data section starts at 0"
            raise HeaderError(name, f"its data starts at byte {t.start}, but {after}: bytes {pos}..{t.start} belong "
                                    f"to no tensor; {CORRUPT}", t.key)
        pos, prev = t.end, t
    if pos != data_size:
        raise HeaderError(name, f"the tensors end at byte {pos} of the data section, but it has {data_size} bytes "
                                f"(bytes after the last tensor); {CORRUPT}")
