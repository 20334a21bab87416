"""Tier 1 fuzz (Hypothesis): the safetensors header reader (core/st_header.py) on valid headers, mutated headers and
random bytes.  For every input: it returns or raises its own HeaderError -- never another exception -- within a
time bound for the input's size; and whatever it accepts, `safetensors.safe_open` (the independent reference)
accepts too, with the same tensor names, dtypes, shapes and bytes.  Where the library refuses, the reader must
refuse; the reader may refuse more (ndim > 8, dims >= 2**48, unknown entry fields, whitespace before the '{').

Fixed budget: EXAMPLES examples per test, no example database (nothing is written to the repo), derandomized under
CI=true so a CI run is reproducible; the seed varies elsewhere."""
import copy
import json
import os
import struct
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")   # tests/requirements.txt installs it
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from lean_nodes.core import st_header  # noqa: E402

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=os.environ.get("CI") == "true",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])

# dtypes whose tensors torch can give back from safe_open (the sub-byte ones only report dtype and shape)
SUB_BYTE = {"F4", "F6_E2M3", "F6_E3M2"}
DTYPES = sorted(st_header.DTYPE_BITS)


def _time_bound(nbytes):
    """Seconds any input of this size may take: a hang bound for a linear reader, generous for a shared machine."""
    return 1.0 + nbytes / 5e6


def _library_dtypes():
    """The dtypes this installed safetensors knows (an older one, at the requirements floor, knows fewer)."""
    import tempfile
    from safetensors import safe_open
    known = set()
    with tempfile.TemporaryDirectory() as d:
        for name, bits in st_header.DTYPE_BITS.items():
            n = 8 // bits if bits < 8 else 1
            hb = json.dumps({"a": {"dtype": name, "shape": [n * 2], "data_offsets": [0, n * 2 * bits // 8]}}).encode()
            p = os.path.join(d, "probe.safetensors")
            with open(p, "wb") as f:
                f.write(struct.pack("<Q", len(hb)) + hb + bytes(n * 2 * bits // 8))
            try:
                with safe_open(p, "pt") as f:
                    f.get_slice("a")
                known.add(name)
            except Exception:  # noqa: BLE001 -- refused: unknown to this version
                pass
    return known


LIB_DTYPES = _library_dtypes()


# ------------------------------------------------------------------ strategies

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=0, max_size=12)
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4)


@st.composite
def valid_files(draw):
    """(header dict, data bytes): tensors laid out back to back in a random order, optional metadata."""
    tensors = draw(st.dictionaries(names.filter(lambda k: k != "__metadata__"),
                                   st.tuples(st.sampled_from(DTYPES), shapes), max_size=6))
    order = draw(st.permutations(list(tensors)))
    header, off = {}, 0
    for k in order:
        dtype, shape = tensors[k]
        numel = 1
        for d in shape:
            numel *= d
        bits = numel * st_header.DTYPE_BITS[dtype]
        if bits % 8:
            shape = shape + [4]                    # F4/F6: a whole number of bytes needs a multiple of 4
            bits *= 4
        header[k] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + bits // 8]}
        off += bits // 8
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(names, names, max_size=3))
    keys = list(header)
    shuffled = draw(st.permutations(keys))
    header = {k: header[k] for k in shuffled}
    return header, draw(st.binary(min_size=off, max_size=off))


JSON_VALUES = st.one_of(
    st.integers(-2 ** 70, 2 ** 70), st.sampled_from([0, 1, -1, 2 ** 48, 2 ** 48 - 1, 2 ** 64, True, False, None]),
    st.floats(allow_nan=False), st.text(max_size=5), st.just([]), st.just({}), st.just([1, 2, 3]),
    st.just({"a": "b"}), st.sampled_from(DTYPES + ["Q7", "f32", ""]),
    st.lists(st.integers(0, 2 ** 20), max_size=10))


def _value(draw):
    """A JSON value to plant in a header: a fresh copy (st.just gives the same object every time, and the mutations
    below change what they plant into)."""
    return copy.deepcopy(draw(JSON_VALUES))


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON value, the root excluded."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((prefix + (k,), v))
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((prefix + (i,), v))
            out += _paths(v, prefix + (i,))
    return out


def _set(obj, path, value):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _delete(obj, path):
    for p in path[:-1]:
        obj = obj[p]
    del obj[path[-1]]


DEEP = "@@deep@@"   # a planted value later replaced by thousands of nested brackets


def _entries(header, pred=lambda v: True):
    """(name, entry) of the well-formed entries (integer offsets, a list shape) that satisfy `pred`."""
    return [(k, v) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("shape"), list)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2
            and all(type(x) is int for x in v["data_offsets"]) and pred(v)]


@st.composite
def mutated_files(draw):
    """A valid file with 1-3 (mostly 1) mutations of its JSON -- random ones, and crafted ones that keep every other rule
    intact so only one check stands in the way (an overlap of consistent size, negative dims whose product is
    right, true/1.0 for 1, deep nesting, a lone surrogate) -- then maybe a byte-level one."""
    header, data = draw(valid_files())
    header = json.loads(json.dumps(header))
    deep = 0
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):    # mostly one: one broken rule at a time
        paths = _paths(header)
        op = draw(st.sampled_from(["set", "delete", "add_field", "copy_offsets", "data", "overlap", "negate",
                                   "bool", "float", "deep", "surrogate"]))
        if op == "set" and paths:
            _set(header, draw(st.sampled_from(paths))[0], _value(draw))
        elif op == "delete" and paths:
            _delete(header, draw(st.sampled_from(paths))[0])
        elif op == "add_field":
            targets = [p for p, v in paths if isinstance(v, dict)] + [()]
            t = draw(st.sampled_from(targets))
            obj = header
            for p in t:
                obj = obj[p]
            obj[draw(st.sampled_from(["extra", "dtype", "shape", "data_offsets", "__metadata__", "z"]))] = _value(draw)
        elif op == "copy_offsets":
            entries = [v for k, v in header.items() if isinstance(v, dict) and "data_offsets" in v]
            if len(entries) >= 2:
                a, b = draw(st.sampled_from(entries)), draw(st.sampled_from(entries))
                b["data_offsets"] = a["data_offsets"]      # overlap (or the same range twice)
        elif op == "data":
            data = data + draw(st.binary(min_size=1, max_size=8)) if draw(st.booleans()) else data[:-1]
        elif op == "overlap":                              # start earlier, into the previous tensor's bytes
            es = _entries(header, lambda v: v["data_offsets"][0] > 0)
            if es:
                k, v = draw(st.sampled_from(es))
                a, b = v["data_offsets"]
                s = draw(st.integers(0, a - 1))
                header[k] = {"dtype": "U8", "shape": [b - s], "data_offsets": [s, b]}
        elif op == "negate":                               # two negative dims: the product is still right
            es = _entries(header)
            if es:
                k, v = draw(st.sampled_from(es))
                sh = v["shape"]
                v["shape"] = [-1, -sh[0]] + sh[1:] if sh and type(sh[0]) is int else [-1, -1] + sh
        elif op == "bool":                                 # true for 1, false for 0: equal to Python, not JSON
            es = _entries(header)
            if es:
                k, v = draw(st.sampled_from(es))
                v["shape"] = [bool(d) if d in (0, 1) and type(d) is int else d for d in v["shape"]] + [True]
        elif op == "float":                                # 2.0 for 2
            es = _entries(header)
            if es:
                k, v = draw(st.sampled_from(es))
                v["shape"] = [float(d) if type(d) is int else d for d in v["shape"]] or [1.0]
        elif op == "deep" and paths:
            _set(header, draw(st.sampled_from(paths))[0], DEEP)
            deep = draw(st.integers(500, 5000))
        elif op == "surrogate":                            # \ud800 in a name or a metadata value
            keys = list(header)
            if keys and draw(st.booleans()):
                k = draw(st.sampled_from(keys))
                header[k + "\ud800"] = header.pop(k)
            elif isinstance(header.get("__metadata__"), dict):
                header["__metadata__"]["k"] = "v\udc00"
    raw = json.dumps(header).encode()
    if deep:
        raw = raw.replace(json.dumps(DEEP).encode(), b"[" * deep + b"]" * deep)
    blob = struct.pack("<Q", len(raw)) + raw + data
    if draw(st.integers(0, 2)) == 0:                 # a third also get a byte-level mutation
        i = draw(st.integers(0, len(blob)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "length"]))
        if kind == "flip" and i < len(blob):
            blob = blob[:i] + bytes([blob[i] ^ (1 << draw(st.integers(0, 7)))]) + blob[i + 1:]
        elif kind == "insert":
            blob = blob[:i] + draw(st.binary(min_size=1, max_size=4)) + blob[i:]
        elif kind == "delete":
            blob = blob[:i] + blob[i + 1:]
        else:
            blob = struct.pack("<Q", max(0, len(raw) + draw(st.integers(-4, 4)))) + blob[8:]
    return blob


@st.composite
def random_files(draw):
    """Random bytes, often behind a plausible length field and a '{'."""
    body = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        n = draw(st.one_of(st.just(len(body) + 1), st.integers(0, 400), st.integers(0, 2 ** 64 - 1)))
        return struct.pack("<Q", n) + b"{" + body
    return body


# ------------------------------------------------------------------ the properties

def _library_view(path):
    """{name: (dtype, shape, bytes or None)} from safe_open, or None when the library refuses the file."""
    import torch
    from safetensors import safe_open
    try:
        out = {}
        with safe_open(str(path), "pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                dtype, shape = sl.get_dtype(), tuple(sl.get_shape())
                blob = None
                if dtype not in SUB_BYTE:
                    blob = f.get_tensor(k).reshape(-1).view(torch.uint8).numpy().tobytes()
                out[k] = (dtype, shape, blob)
            meta = f.metadata() or {}
        return out, meta
    except Exception:  # noqa: BLE001 -- any refusal by the library
        return None


def _dir(tmp_path_factory):
    d = tmp_path_factory.getbasetemp() / "st_header_fuzz"
    d.mkdir(exist_ok=True)
    return d


def check(tmp_path, blob):
    p = tmp_path / "fuzz.safetensors"
    p.write_bytes(blob)
    t0 = time.perf_counter()
    try:
        h = st_header.read_header(p)
    except st_header.HeaderError as e:
        h = None
        assert str(e).startswith("fuzz.safetensors: ") and str(tmp_path) not in str(e), str(e)
    # anything else (OverflowError, RecursionError, KeyError, TypeError, MemoryError ...) fails the test as raised
    took = time.perf_counter() - t0
    assert took < _time_bound(len(blob)), f"{took:.2f} s for {len(blob)} bytes"
    if h is None:
        return "refused"
    if {t.dtype for t in h.tensors.values()} - LIB_DTYPES:
        return "accepted (dtype unknown to this safetensors version)"
    lib = _library_view(p)
    assert lib is not None, f"the reader accepted a file the safetensors library refuses: {blob[:300]!r}"
    ref, meta = lib
    assert set(ref) == set(h.tensors) and meta == h.metadata
    for k, (dtype, shape, data) in ref.items():
        t = h.tensors[k]
        assert (t.dtype, t.shape) == (dtype, shape), k
        if data is not None:
            assert blob[h.data_start + t.start:h.data_start + t.end] == data, k
    return "accepted"


@FUZZ
@given(st.data())
def test_fuzz_valid_headers_are_accepted_as_the_library_reads_them(tmp_path_factory, data):
    header, blob_data = data.draw(valid_files())
    raw = json.dumps(header).encode()
    tmp = _dir(tmp_path_factory)
    assert check(tmp, struct.pack("<Q", len(raw)) + raw + blob_data).startswith("accepted")


@FUZZ
@given(st.data())
def test_fuzz_mutated_headers(tmp_path_factory, data):
    check(_dir(tmp_path_factory), data.draw(mutated_files()))


@FUZZ
@given(st.data())
def test_fuzz_random_bytes(tmp_path_factory, data):
    check(_dir(tmp_path_factory), data.draw(random_files()))


def test_fuzz_cases_really_reach_both_outcomes(tmp_path_factory):
    """The mutation strategy is not vacuous: over a fixed sample it yields both accepted and refused files."""
    seen = set()

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        seen.add(check(_dir(tmp_path_factory), data.draw(mutated_files())))
    run()
    assert "refused" in seen and any(s.startswith("accepted") for s in seen), seen
