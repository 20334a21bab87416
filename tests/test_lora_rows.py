"""Tier 1: core/lora_rows.py (which batch entry a row of one model call belongs to) and cond_batch.merge_groups.

The expected layouts are written out by hand from the host's sampler (comfy/samplers.py _calc_cond_batch: chunks of
the whole latent batch, concatenated; comfy.utils.repeat_to_batch_size: latent j gets conditioning entry j % N)."""
import pytest
import torch

from lean_nodes.core import cond_batch, lora_rows


@pytest.mark.parametrize("rows, chunks, n, window, want", [
    (4, 1, 4, None, [0, 1, 2, 3]),                      # cfg 1: the cond chunk only
    (8, 2, 4, None, [0, 1, 2, 3, 0, 1, 2, 3]),          # cond + uncond in one call: both get entry j's LoRAs
    (4, 1, 2, None, [0, 1, 0, 1]),                      # 4 latents, 2 prompts: the conditioning repeats
    (6, 3, 4, None, [0, 1, 0, 1, 0, 1]),                # 2 latents, 4 prompts (cut), 3 chunks (area conds)
    (4, 2, 4, [2, 3], [2, 3, 2, 3]),                    # a context window over latents 2 and 3
    (6, 2, 2, [1, 2, 3], [1, 0, 1, 1, 0, 1]),           # a window with entries repeating
])
def test_row_entries(rows, chunks, n, window, want):
    assert lora_rows.row_entries(rows, chunks, n, window) == want


@pytest.mark.parametrize("rows, chunks, n, window, msg", [
    (5, 2, 4, None, "not a whole number"),
    (4, 0, 4, None, "not a whole number"),
    (4, 1, 0, None, "no batch entries"),
    (4, 2, 4, [0, 1, 2], "context window has 3"),
])
def test_row_entries_refuses_what_it_cannot_map(rows, chunks, n, window, msg):
    with pytest.raises(lora_rows.RowMappingError, match=msg):
        lora_rows.row_entries(rows, chunks, n, window)


def test_merge_groups_puts_entries_back_in_order_each_padded_with_its_own_empty_prompt():
    a_cond = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)     # entries 0 and 2, 3 tokens
    b_cond = 100 + torch.arange(1 * 6 * 2, dtype=torch.float32).reshape(1, 6, 2)  # entry 1, 6 tokens
    a_pad, b_pad = torch.full((1, 3, 2), -1.0), torch.full((1, 3, 2), -2.0)
    a_pool, b_pool = torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0]])
    cond, pooled = cond_batch.merge_groups(3, [([0, 2], a_cond, a_pool, a_pad), ([1], b_cond, b_pool, b_pad)])
    assert cond.shape == (3, 6, 2)
    assert torch.equal(cond[0, :3], a_cond[0]) and torch.equal(cond[0, 3:], a_pad[0])
    assert torch.equal(cond[2, :3], a_cond[1]) and torch.equal(cond[2, 3:], a_pad[0])
    assert torch.equal(cond[1], b_cond[0])
    assert pooled.flatten().tolist() == [1.0, 2.0, 3.0]
    cond, pooled = cond_batch.merge_groups(3, [([0, 2], a_cond, None, a_pad), ([1], b_cond, b_pool, b_pad)])
    assert pooled is None
    with pytest.raises(ValueError, match="no group"):
        cond_batch.merge_groups(4, [([0, 2], a_cond, a_pool, a_pad), ([1], b_cond, b_pool, b_pad)])


def test_left_zero_padding_is_what_flux2_prepends_to_a_short_prompt():
    """Flux.2's model_base.Flux2.extra_conds: torch.nn.functional.pad(cross_attn, (0, 0, 512 - T, 0)), written out
    independently here; Prompt Batch's left padding composed with it gives the prompt alone's tokens."""
    a = torch.arange(1 * 3 * 2, dtype=torch.float32).reshape(1, 3, 2) + 1
    b = torch.arange(1 * 5 * 2, dtype=torch.float32).reshape(1, 5, 2) + 100

    def model_pads(c, floor=8):
        return torch.nn.functional.pad(c, (0, 0, floor - c.shape[1], 0)) if c.shape[1] < floor else c
    stacked = cond_batch.stack_padded([a, b], None)
    assert stacked.shape == (2, 5, 2)
    assert torch.equal(stacked[0, :2], torch.zeros(2, 2)) and torch.equal(stacked[0, 2:], a[0])
    assert torch.equal(stacked[1], b[0])
    assert torch.equal(model_pads(stacked[0:1]), model_pads(a))  # under the model's floor: one call is exact
    # over the floor, a row's last max(own, floor) tokens are what the model gives its prompt alone
    assert torch.equal(model_pads(stacked[0:1][:, 5 - 4:], floor=4), model_pads(a, floor=4))
    cond, _ = cond_batch.merge_groups(2, [([1], b, None, None), ([0], a, None, None)])
    assert torch.equal(cond, stacked)
    with pytest.raises(ValueError, match="cannot pad"):
        cond_batch.pad_tokens(b, 4, None)


def test_merge_masked_gives_each_entry_its_own_tokens_zero_padded_and_masked_as_one_encoder_would():
    # Qwen-Image reads the text mask: groups of prompts encoded with different text-encoder LoRAs are merged with
    # zero padding masked out (what stack_masked gives one encoder's prompts), each group's own padding kept
    a = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3) + 1  # entries 0, 2; entry 2 has 4 real tokens
    a_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    b = -torch.arange(1 * 3 * 3, dtype=torch.float32).reshape(1, 3, 3) - 1  # entry 1, 3 tokens, no mask
    cond, mask, pooled = cond_batch.merge_masked(3, [([0, 2], a, None, a_mask), ([1], b, None, None)])
    assert pooled is None
    assert cond.shape == (3, 5, 3)
    assert torch.equal(cond[0], a[0]) and torch.equal(cond[2], a[1])
    assert torch.equal(cond[1, :3], b[0]) and torch.equal(cond[1, 3:], torch.zeros(2, 3))
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
    # all of one length and unmasked: no mask, as the host's encoder gives for one prompt
    _, mask, pooled = cond_batch.merge_masked(2, [([1], a[:1], torch.ones(1, 4), None),
                                                  ([0], a[:1] * 2, torch.zeros(1, 4), None)])
    assert mask is None and pooled.tolist() == [[0.0] * 4, [1.0] * 4]
    with pytest.raises(ValueError, match="no group"):
        cond_batch.merge_masked(3, [([0], b, None, None)])
