"""Read the metadata of a GGUF file with the standard library only (no llama_cpp, no gguf package).

Used before loading so a wrong file gives a clear error ("not a GGUF file", "architecture 'x'") instead of
llama.cpp's bare "Failed to load model", and to read the chat template for the ``openai`` backend's docs/UI.
Large arrays (the vocabulary) are skipped, never materialised.
"""
import os
import struct

MAGIC = b"GGUF"

# value type -> struct format (scalars)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    pass


def is_gguf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def _read(f, n):
    b = f.read(n)
    if len(b) != n:
        raise GGUFError("file ends in the middle of its header (truncated download?)")
    return b


def _string(f):
    (n,) = struct.unpack("<Q", _read(f, 8))
    if n > 1 << 26:
        raise GGUFError("corrupt header (string length %d)" % n)
    return _read(f, n).decode("utf-8", errors="replace")


def _skip_value(f, vtype):
    if vtype in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[vtype]), os.SEEK_CUR)
    elif vtype == _STRING:
        (n,) = struct.unpack("<Q", _read(f, 8))
        f.seek(n, os.SEEK_CUR)
    elif vtype == _ARRAY:
        itype, count = struct.unpack("<IQ", _read(f, 12))
        if itype in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[itype]) * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(f, itype)
    else:
        raise GGUFError("corrupt header (value type %d)" % vtype)


def _value(f, vtype):
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _string(f)
    raise GGUFError("corrupt header (value type %d)" % vtype)


def read_metadata(path, keys=None):
    """Scalar and string metadata of a GGUF file as a dict (arrays are skipped).  `keys`: only these.
    Raises FileNotFoundError or GGUFError (a ValueError) with a message naming the file."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    out = {}
    with open(path, "rb") as f:
        head = f.read(4)
        if head != MAGIC:
            raise GGUFError(f"'{name}' is not a GGUF file (it starts with {head!r}, a GGUF file starts with "
                            f"b'GGUF'): convert it with llama.cpp's convert_hf_to_gguf.py or download the .gguf "
                            f"build of the model")
        try:
            version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            if version < 2:
                raise GGUFError(f"'{name}' is GGUF version {version}, which llama.cpp no longer reads: "
                                f"re-convert it with a current llama.cpp")
            out["__version__"] = version
            out["__n_tensors__"] = n_tensors
            for _ in range(n_kv):
                key = _string(f)
                (vtype,) = struct.unpack("<I", _read(f, 4))
                if vtype == _ARRAY or (keys is not None and key not in keys):
                    _skip_value(f, vtype)
                else:
                    out[key] = _value(f, vtype)
        except GGUFError as e:
            raise GGUFError(f"'{name}': {e}") from None
        except struct.error as e:
            raise GGUFError(f"'{name}': corrupt GGUF header ({e})") from None
    return out


def architecture(meta):
    return meta.get("general.architecture")
