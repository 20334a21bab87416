"""Tier 2: a checkpoint truncated while its model is loaded (zero-copy weights mapped to the file) never kills the
server.  A COPY of the SD1.5 fixture is loaded with weight_dtype fp16 (the file's dtype: the UNet keeps the mapped
tensors as read) and sampled; the copy is then truncated to half, as a re-download over it would do, and the same
graph is queued again with another seed.  Before the fix the cached model was sampled through the stale mapping:
SIGBUS, the server died.  Now the loader sees the file changed (IS_CHANGED: size, mtime, inode) and loads it again,
which gives its clear "truncated" error; the server keeps serving (a prompt on the intact fixture still works,
and after /free too)."""
import os
import shutil

import pytest

from test_tier2_checkpoint import lean_txt2img

pytestmark = pytest.mark.tier2

COPY = "lean_copy_truncated.safetensors"


def test_truncated_while_loaded_reloads_with_a_clear_error_and_the_server_survives(comfy_sd15, sd15_ckpt):
    host = comfy_sd15
    dst = host.base / "models" / "checkpoints" / COPY
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    shutil.copyfile(sd15_ckpt, dst)
    try:
        g = lean_txt2img("replaced_1", ckpt=COPY, weight_dtype="fp16")
        entry = host.run(g)
        assert "used as read" in entry["outputs"]["1"]["text"][0]
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
