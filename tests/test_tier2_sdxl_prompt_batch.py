"""Tier 2: LeanPromptBatch on the narrow SDXL fixture (lean_testlib.sdxl_ckpt: every key of SDXL, the text
encoders at full size, the UNet at 320 channels on every level; the claim is the encode and the rows) in a real
ComfyUI: three prompts of
one and two CLIP chunks -> one batched conditioning (CLIP-L + OpenCLIP-G, pooled output per entry) -> one KSampler
pass -> three different images.  Entries 0 and 1 equal the stock path: the prompt encoded alone by CLIPTextEncode,
padded to the batch's length with stock ConditioningConcat(""), sampled on the same noise (LatentFromBatch keeps the
batch index).  cfg 1 (the host then skips the negative) and one step keep the SDXL CPU time low."""
import itertools

import numpy as np
import pytest
from PIL import Image

from lean_testlib import graphs, probe_node, sdxl_host

pytestmark = [pytest.mark.tier2, pytest.mark.sdxl_ckpt]  # CI runs SDXL checkpoints on ComfyUI 0.33.0 only

LONG = ", ".join(["word"] * 45)  # 90 tokens: 2 chunks of 77
PROMPTS = [LONG, "a red cube on a table", "a blue sphere at night"]


def probe(name, src, out=0, kind="latent"):
    return {"class_type": "TestProbe_lean", "inputs": {"name": name, kind: [src, out]}}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with sdxl_host.own(tmp_path_factory, "prompt_batch", narrow=True) as h:
        yield h


def test_three_prompts_one_pass_three_images_each_equal_to_stock(host):
    g = graphs.prompt_batch_txt2img("\n".join(PROMPTS), ckpt=sdxl_host.CKPT_NARROW, width=128, height=128, cfg=1.0,
                                    prefix="sdxl_pb")
    g["pc"] = probe("sdxl_pb_cond", "pb", 0, "conditioning")
    g["lp"] = probe("sdxl_pb_out", "5")
    chunks = {0: 2, 1: 1}
    graphs.add_stock_references(g, PROMPTS, chunks, 2, "sdxl_ref_")
    for i in chunks:
        g[f"r{i}q"] = probe(f"sdxl_ref_cond_{i}", f"r{i}c0", 0, "conditioning")
    entry = host.run(g, timeout=1800)

    files = sorted(f for f in host.output_files(entry) if f.name.startswith("sdxl_pb"))
    assert len(files) == 3, files
    imgs = [np.asarray(Image.open(f), dtype=np.int16) for f in files]
    assert all(im.shape == (128, 128, 3) for im in imgs)
    for a, b in itertools.combinations(range(3), 2):
        assert np.abs(imgs[a] - imgs[b]).mean() > 0.5, f"images {a} and {b} are the same"

    cond, _ = probe_node.read(host.base, "sdxl_pb_cond")
    # SDXL: CLIP-L (768) + OpenCLIP-G (1280) per token, OpenCLIP-G's pooled output (1280) per entry
    assert cond["cond.0.0"].shape == (3, 154, 2048), cond["cond.0.0"].shape
    pooled = cond["pooled.0.0"]
    assert pooled.shape == (3, 1280), pooled.shape
    for i in chunks:
        ref_cond, _ = probe_node.read(host.base, f"sdxl_ref_cond_{i}")
        ref_pooled = ref_cond["pooled.0.0"][0]
        assert (pooled[i] - ref_pooled).abs().max().item() < 1e-4 * max(1.0, ref_pooled.abs().max().item())

    lat, meta = probe_node.read(host.base, "sdxl_pb_out")
    assert meta["executions"]["latent"] == 1, "KSampler ran more than once"
    batch = lat["latent.0"]
    assert batch.shape == (3, 4, 16, 16), batch.shape
    for i in chunks:
        ref = probe_node.read(host.base, f"sdxl_ref_{i}")[0]["latent.0"][0]
        err = (batch[i] - ref).abs().max().item()
        assert err < 1e-3 * max(1.0, ref.abs().max().item()), f"latent {i} differs from the stock path by {err}"
        other = (batch[2] - ref).abs().max().item()
        assert other > 100 * max(err, 1e-6), "the reference would also match another entry"
