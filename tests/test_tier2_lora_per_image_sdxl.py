"""Tier 2: a different LoRA for every image on SDXL's layout, with the tiny SDXL of lean_testlib.sdxl_unet_tiny (the
host's own model_base.SDXL and SDXLClipModel, shrunk, random weights; kohya LoRAs written for it), in a subprocess
with the host's modules.  The full-size SDXL fixture is not used (~14 GB as fp32; CI runs it on 0.33.0 only).

One KSampler pass (cfg 3, 4 steps) over five lines: no LoRA; one; two at other strengths; lbw=ALL0.5 (the tiny UNet
has no A1111 block layout, so only the flat presets apply: every block and the text encoder at half); a schedule
0 before step fraction 0.4.  Latent i equals the stock run of line i alone (stock LoraLoader node chain, stock
CLIPTextEncode of the text without tags, stock KSamplerAdvanced segments for the schedule, the same noise through
batch_index) within 1e-3 x max(1, |latent|), and each LoRA moves its row by far more than that."""
import pytest

from lean_testlib import inproc

# Both hosts in CI (about 10-20 s each).
pytestmark = pytest.mark.tier2

TOL, EFFECT = 1e-3, 10


def test_five_lines_one_pass_each_latent_equals_its_stock_run_on_tiny_sdxl():
    res = inproc.run_json("sdxl_unet_tiny")
    assert res["n"] == 5 and res["shape"] == [5, 4, 8, 8], res
    assert res["report"][:5] == ["1: no LoRA", "2: xt_a.safetensors 0.8",
                                 "3: xt_b.safetensors unet 0.6 te 0.3, xt_a.safetensors -0.5",
                                 "4: xt_a.safetensors unet 1 te 0.5 lbw ALL0.5",
                                 "5: xt_b.safetensors 1 sched 0:0,0.4:0,0.4:1,1:1"], res["report"]
    for i, row in enumerate(res["rows"]):
        bound = TOL * max(1.0, row["scale"])
        assert row["err"] <= bound, (i, row)
        if i:
            assert row["effect"] > EFFECT * bound, (i, row)
