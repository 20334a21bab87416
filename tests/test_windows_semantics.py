"""Tier 1: the Windows-semantics test mode itself (lean_testlib/windows_semantics.py), the pack's portable paths
under it, and the static check that every POSIX-only call in the pack sits behind a platform test."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

from lean_testlib import posix_check, windows_semantics

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def _run(code, prefixes, cwd):
    """Run ``code`` in a fresh python with the mode installed for files under ``prefixes``; its last stdout line
    is JSON."""
    boot = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(TESTS)!r})
        from lean_testlib import windows_semantics as w
        w.install({list(prefixes)!r})
    """)
    env = {k: v for k, v in os.environ.items() if k != windows_semantics.ENV}
    r = subprocess.run([sys.executable, "-c", boot + code], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


PROBE = '''
import json, mmap, os, signal
def outcome(fn):
    try:
        fn()
        return "ok"
    except Exception as e:
        return type(e).__name__
def mm_flags():
    return mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE)
def mm_flags_kw():
    return mmap.mmap(-1, 4096, flags=1)
def mm_plain():
    m = mmap.mmap(-1, 4096)
    m[0:1] = b"x"
    return m
def preadv():
    return os.preadv
def imp_resource():
    import resource
def imp_fcntl():
    import fcntl
def proc():
    open("/proc/self/status").close()
def sigkill():
    return signal.SIGKILL
def madvise():
    mmap.mmap(-1, 4096).madvise
def probe():
    return {k: outcome(f) for k, f in dict(mm_flags=mm_flags, mm_flags_kw=mm_flags_kw, mm_plain=mm_plain,
            preadv=preadv, imp_resource=imp_resource, imp_fcntl=imp_fcntl, proc=proc, sigkill=sigkill,
            madvise=madvise).items()}
'''


def test_mode_answers_the_pack_like_windows_and_everyone_else_like_linux(tmp_path):
    pack = tmp_path / "pack"
    other = tmp_path / "other"
    for d in (pack, other):
        d.mkdir()
        (d / "probe_mod.py").write_text(PROBE)
    code = textwrap.dedent(f"""
        import importlib.util, json
        def load(d, name):
            spec = importlib.util.spec_from_file_location(name, d + "/probe_mod.py")
            m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
        print(json.dumps({{"pack": load({str(pack)!r}, "p").probe(), "other": load({str(other)!r}, "o").probe()}}))
    """)
    got = _run(code, [str(pack) + os.sep], tmp_path)
    assert got["other"] == {k: "ok" for k in got["other"]}, got["other"]
    assert got["pack"] == {"mm_flags": "AttributeError", "mm_flags_kw": "TypeError", "mm_plain": "ok",
                           "preadv": "AttributeError", "imp_resource": "ModuleNotFoundError",
                           "imp_fcntl": "ModuleNotFoundError", "proc": "FileNotFoundError",
                           "sigkill": "AttributeError", "madvise": "AttributeError"}, got["pack"]


def test_pack_memory_direct_reads_and_figures_work_under_the_mode(tmp_path):
    """The pack's own core/ under the mode (whatever this process runs in): an own mapping, reads in each load mode
    (mmap, and read's seek + readinto) compared with safetensors' own reader, and RSS/io figures from psutil."""
    import numpy as np
    from safetensors.numpy import save_file
    f = tmp_path / "t.safetensors"
    rng = np.random.default_rng(0)
    ref = {"a": rng.standard_normal((300, 1000)).astype(np.float16), "b": rng.standard_normal(7).astype(np.float32)}
    save_file(ref, str(f))
    code = textwrap.dedent(f"""
        import json, sys, types
        pkg = types.ModuleType("lean_nodes"); pkg.__path__ = [{str(REPO)!r}]; sys.modules["lean_nodes"] = pkg
        import torch
        from lean_nodes.core import ckpt, memory
        t = memory.empty_own_mapping((1 << 20,), torch.float32)
        t.fill_(2.0)
        s = memory.Slabs(); small = s.copy_of(torch.ones(10), torch.float16)
        out = {{"own": float(t.sum()), "slab": float(small.sum())}}
        for mode in ("mmap", "read"):
            with ckpt.open_checkpoint({str(f)!r}, mode) as ck:
                out[mode] = {{k: ck.tensor(k).float().numpy().tolist() for k in ("b",)}}
                out[mode + "_a"] = float(ck.tensor("a").double().sum())
                ck.release("a")
        m = ckpt.LoadMeter(); fig = m.figures()
        out.update(rss=ckpt.rss_bytes(), peak=ckpt.peak_rss_bytes(), io=ckpt.io_read_bytes(), reset=m.peak_reset)
        print(json.dumps(out))
    """)
    got = _run(code, windows_semantics.default_prefixes(REPO), tmp_path)
    assert got["own"] == 2.0 * (1 << 20) and got["slab"] == 10.0
    a_sum = float(ref["a"].astype(np.float64).sum())
    for mode in ("mmap", "read"):
        assert np.allclose(got[mode]["b"], ref["b"]), mode
        assert abs(got[mode + "_a"] - a_sum) < 1e-6 * max(1.0, abs(a_sum)) + 1e-3, mode
    assert got["rss"] > 10 << 20 and got["peak"] >= got["rss"] // 2 and got["io"] >= 0
    assert got["reset"] is False  # /proc/self/clear_refs is out of reach, as on Windows


def test_static_check_finds_unguarded_posix_calls():
    bad = textwrap.dedent("""
        import mmap, os, signal
        import resource
        def f(fd, buf):
            m = mmap.mmap(-1, 10, flags=mmap.MAP_PRIVATE)
            os.preadv(fd, [buf], 0)
            open("/proc/self/status")
            os.kill(1, signal.SIGKILL)
            m.madvise(mmap.MADV_DONTNEED)
    """)
    found = posix_check.unguarded(bad, "bad.py")
    for text in ("import resource", "mmap.mmap(flags=/prot=)", "mmap.MAP_PRIVATE", "os.preadv", "'/proc/self/status'",
                 "signal.SIGKILL", ".madvise", "mmap.MADV_DONTNEED"):
        assert any(line.endswith(": " + text) for line in found), (text, found)
    good = textwrap.dedent("""
        import mmap, os, sys
        try:
            import resource
        except ImportError:
            resource = None
        def f(fd, buf, m):
            if hasattr(mmap, "MAP_PRIVATE"):
                m = mmap.mmap(-1, 10, flags=mmap.MAP_PRIVATE)
            n = os.preadv(fd, [buf], 0) if hasattr(os, "preadv") else 0
            try:
                open("/proc/self/status")
            except OSError:
                pass
            if not sys.platform.startswith("linux"):
                return
            m.madvise(mmap.MADV_DONTNEED)
    """)
    assert posix_check.unguarded(good, "good.py") == []


def test_every_posix_only_call_in_the_pack_is_behind_a_platform_test():
    assert posix_check.check_pack(REPO) == []


def test_a_file_the_pack_maps_is_locked_as_on_windows(tmp_path):
    """While the pack's mapping of a checkpoint lives (a loaded model keeps zero-copy views of it), Windows refuses
    to truncate, delete, rename or overwrite the file, with the errors its Python raises; writing in place without
    truncating stays allowed.  Once the last view is gone (the model unloaded), replacing it by a rename works."""
    import numpy as np
    from safetensors.numpy import save_file
    f = tmp_path / "model.safetensors"
    save_file({"w": np.ones((256, 256), dtype=np.float16)}, str(f))
    new = tmp_path / "new.safetensors"
    save_file({"w": np.zeros((4,), dtype=np.float16)}, str(new))
    code = textwrap.dedent(f"""
        import gc, json, os, sys, types
        pkg = types.ModuleType("lean_nodes"); pkg.__path__ = [{str(REPO)!r}]; sys.modules["lean_nodes"] = pkg
        from lean_nodes.core import ckpt
        f, new = {str(f)!r}, {str(new)!r}
        def outcome(fn):
            try:
                fn()
                return "ok"
            except PermissionError as e:
                return [getattr(e, "winerror", None), str(e)]
        ck = ckpt.open_checkpoint(f, "mmap")
        w = ck.tensor("w")  # a zero-copy weight, as a loaded model holds it
        ck.close()  # the loader forgets its handles; the mapping lives on in the weight
        out = {{"truncate": outcome(lambda: os.truncate(f, 10)), "remove": outcome(lambda: os.remove(f)),
               "rename": outcome(lambda: os.rename(f, f + ".old")), "replace": outcome(lambda: os.replace(new, f)),
               "open_w": outcome(lambda: open(f, "wb").close()), "open_rw": outcome(lambda: open(f, "r+b").close()),
               "weight": float(w.float().sum())}}
        del w, ck
        gc.collect()
        out["replace_after"] = outcome(lambda: os.replace(new, f))
        print(json.dumps(out))
    """)
    got = _run(code, windows_semantics.default_prefixes(REPO), tmp_path)
    assert got["weight"] == 256 * 256
    assert got["truncate"][0] == 1224 and "user-mapped section open" in got["truncate"][1], got
    assert got["open_w"][0] == 1224, got
    for op in ("remove", "rename"):
        assert got[op][0] == 32 and "being used by another process" in got[op][1], got
    assert got["replace"][0] == 5 and "Access is denied" in got["replace"][1], got
    assert got["open_rw"] == "ok" and got["replace_after"] == "ok", got
    assert not new.exists() and f.stat().st_size < 1000  # the new file took the name


def test_files_mapped_by_other_code_or_processes_are_not_locked(tmp_path):
    """Only the pack's own mappings are registered (the host's and torch's are outside the mode), and an entry of a
    process that has ended locks nothing."""
    f = tmp_path / "x.bin"
    f.write_bytes(b"x" * 8192)
    code = textwrap.dedent(f"""
        import json, mmap, os
        f = {str(f)!r}
        with open(f, "rb") as h:
            m = mmap.mmap(h.fileno(), 0, access=mmap.ACCESS_READ)  # this code is not the pack's
        os.truncate(f, 4096)
        print(json.dumps({{"ok": True}}))
    """)
    assert _run(code, windows_semantics.default_prefixes(REPO), tmp_path) == {"ok": True}
    d = tmp_path / "maps"
    d.mkdir()
    st = f.stat()
    (d / "999999999-0.json").write_text(json.dumps({"pid": 999999999, "dev": st.st_dev, "ino": st.st_ino}))
    old = os.environ.get(windows_semantics.MAPS_ENV)
    os.environ[windows_semantics.MAPS_ENV] = str(d)
    try:
        assert not windows_semantics.is_mapped(f)
    finally:
        if old is None:
            os.environ.pop(windows_semantics.MAPS_ENV)
        else:
            os.environ[windows_semantics.MAPS_ENV] = old
