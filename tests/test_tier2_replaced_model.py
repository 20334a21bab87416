"""Tier 2: a checkpoint changed on disk while its model is loaded (zero-copy weights mapped to the file).

Linux (and macOS): the file can be truncated in place.  A COPY of the SD1.5 fixture is loaded with weight_dtype fp16
(the file's dtype: a host that hands file tensors to the model by reference -- DynamicVRAM's assign -- keeps them
mapped; the CPU hosts here copy every tensor, the report says how many were kept as read) and sampled; the copy is
then truncated to half, as a re-download over it would do, and the same graph is queued again with another seed.  Before the fix the cached
model was sampled through the stale mapping: SIGBUS, the server died.  Now the loader sees the file changed
(IS_CHANGED: size, mtime, inode) and loads it again, which gives its clear "truncated" error; the server keeps
serving (a prompt on the intact fixture still works, and after /free too).

Windows (LEAN_WINDOWS_SEMANTICS=1: lean_testlib.windows_semantics locks a file the pack has mapped, as Windows
does): what a Windows user meets.  Truncating, deleting or replacing the loaded file is refused with Windows'
errors while the model is loaded, and the file stays as it was; after "unload first" (the /free the UI's Unload
Models button sends) the mapping is gone, replacing the file by a rename works, and the loader loads the new file
(a broken one: its clear error; a good one: the same pixels as before)."""
import os
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from lean_testlib import windows_semantics
from test_tier2_checkpoint import lean_txt2img

pytestmark = pytest.mark.tier2

COPY = "lean_copy_truncated.safetensors"


def _fresh_copy(host, src):
    dst = host.base / "models" / "checkpoints" / COPY
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    shutil.copyfile(src, dst)
    return dst


def _image(host, entry):
    files = host.output_files(entry)
    assert len(files) == 1, files
    return np.asarray(Image.open(files[0]))


def _unload_until_unmapped(host, path, timeout=60):
    """The user's "unload first": /free (unload models, drop cached outputs); the host collects garbage in its
    prompt loop soon after.  True once no mapping of ``path`` is left."""
    host.free()
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not windows_semantics.is_mapped(path):
            return True
        time.sleep(0.5)
    return False


def test_file_changed_while_loaded(comfy_sd15, sd15_ckpt):
    """One test, two platforms (no skip either way): the POSIX case, or Windows' under its semantics mode."""
    if windows_semantics.enabled():
        _windows_refuses_changing_a_loaded_file_until_unloaded_then_replace_by_rename_works(comfy_sd15, sd15_ckpt)
    else:
        _truncated_while_loaded_reloads_with_a_clear_error_and_the_server_survives(comfy_sd15, sd15_ckpt)


def _truncated_while_loaded_reloads_with_a_clear_error_and_the_server_survives(comfy_sd15, sd15_ckpt):
    host = comfy_sd15
    dst = _fresh_copy(host, sd15_ckpt)
    try:
        g = lean_txt2img("replaced_1", ckpt=COPY, weight_dtype="fp16")
        entry = host.run(g)
        assert re.search(r"\d+ tensors used as read", entry["outputs"]["1"]["text"][0])
        size = dst.stat().st_size
        os.truncate(dst, size // 2)  # in place: same inode, the mapped pages past the end are gone
        g2 = lean_txt2img("replaced_2", ckpt=COPY, weight_dtype="fp16")
        g2["5"]["inputs"]["seed"] = 2  # the sampler must run again, on whatever model the loader hands it
        entry = host.wait(host.submit(g2))  # raises if the server died
        assert host.alive()
        assert entry["status"]["status_str"] == "error", "a half-truncated checkpoint loaded"
        err = host.error_text(entry)
        assert "LeanCheckpointLoader" in err and COPY in err and "truncated" in err, err
        # the server keeps serving: the intact fixture samples, also after everything is freed
        host.run(lean_txt2img("replaced_3", weight_dtype="fp16"))
        host.free()
        host.run(lean_txt2img("replaced_4", weight_dtype="fp16"))
        assert host.alive()
    finally:
        if host.alive():
            host.free()
        dst.unlink(missing_ok=True)


def _windows_refuses_changing_a_loaded_file_until_unloaded_then_replace_by_rename_works(comfy_sd15, sd15_ckpt):
    host = comfy_sd15
    dst = _fresh_copy(host, sd15_ckpt)
    ckdir = dst.parent
    broken, good = ckdir / "download_broken.part", ckdir / "download_good.part"
    try:
        first = host.run(lean_txt2img("win_1", ckpt=COPY, weight_dtype="fp16"))
        report = first["outputs"]["1"]["text"][0]
        zero_copy = int(re.search(r"(\d+) tensors used as read", report).group(1))
        before = _image(host, first)
        size = dst.stat().st_size
        shutil.copyfile(sd15_ckpt, good)
        # the model keeps a mapping of the file exactly when it kept tensors as read (zero-copy); a model that
        # copied every tensor (the CPU hosts here: no assign) leaves the file free once the load is over
        assert windows_semantics.is_mapped(dst) == (zero_copy > 0), (zero_copy, report)
        if zero_copy:
            # the user's tools while the model is loaded: Windows' errors, and the file is left as it was
            refused = {}
            for what, fn in (("truncate", lambda: os.truncate(dst, size // 2)), ("delete", dst.unlink),
                             ("overwrite", lambda: open(dst, "wb").close()), ("replace", lambda: os.replace(good, dst))):
                with pytest.raises(PermissionError) as e:
                    fn()
                refused[what] = (e.value.winerror, str(e.value))
            assert refused["truncate"][0] == refused["overwrite"][0] == 1224, refused
            assert "user-mapped section open" in refused["truncate"][1] and COPY in refused["truncate"][1], refused
            assert refused["delete"][0] == 32 and "being used by another process" in refused["delete"][1], refused
            assert refused["replace"][0] == 5 and "Access is denied" in refused["replace"][1], refused
            assert dst.stat().st_size == size and good.exists()
            again = lean_txt2img("win_2", ckpt=COPY, weight_dtype="fp16")
            again["5"]["inputs"]["seed"] = 2
            host.run(again)  # the model stays usable meanwhile
        # unload first; then a broken download renamed over it gives the loader's clear error, the server lives on
        assert _unload_until_unmapped(host, dst), "after /free the pack still maps the file: Windows users cannot replace it"
        with open(sd15_ckpt, "rb") as f, open(broken, "wb") as out:
            out.write(f.read(size // 2))
        os.replace(broken, dst)
        entry = host.wait(host.submit(lean_txt2img("win_3", ckpt=COPY, weight_dtype="fp16")))
        assert host.alive() and entry["status"]["status_str"] == "error", "a half-copied checkpoint loaded"
        err = host.error_text(entry)
        assert "LeanCheckpointLoader" in err and COPY in err and "truncated" in err, err
        # a damaged file is never left mapped, and a good file renamed over it samples the first run's pixels
        assert _unload_until_unmapped(host, dst)
        os.replace(good, dst)
        after = _image(host, host.run(lean_txt2img("win_4", ckpt=COPY, weight_dtype="fp16")))
        assert np.array_equal(after, before)
    finally:
        if host.alive():
            _unload_until_unmapped(host, dst)
        for p in (dst, broken, good):
            p.unlink(missing_ok=True)
