"""Tier 1: how Prompt Batch groups the prompts of a decoder-only text encoder into forward passes
(core/cond_batch.length_passes; the encode itself, against the host's encode of each prompt alone, is in
test_tier2_families.py)."""
import random
import time

import pytest

from lean_nodes.core import cond_batch


def _check(passes, lengths, pad_cost, max_rows):
    """The contract, written out: every prompt in exactly one pass; each pass longest first; no prompt padded by more
    than pad_cost; no pass over max_rows(its longest) rows."""
    flat = sorted(i for p in passes for i in p)
    assert flat == list(range(len(lengths)))
    for p in passes:
        longest = lengths[p[0]]
        assert all(lengths[i] <= longest for i in p), p
        assert all(longest - lengths[i] <= pad_cost for i in p), (p, [lengths[i] for i in p])
        assert len(p) <= max(1, max_rows(longest)), p


def test_the_benchmarks_prompts_group_as_the_cost_says():
    # the eight prompts of bench/prompt_batch.py --family zimage (their Qwen3 token counts) and the empty prompt
    lengths = [9, 11, 15, 35, 29, 51, 95, 139, 9]
    passes = cond_batch.length_passes(lengths, 32, lambda n: 512 // n)
    assert passes == [[7], [6], [5, 3, 4], [2, 1, 0, 8]]
    _check(passes, lengths, 32, lambda n: 512 // n)


def test_equal_lengths_share_a_pass_as_memory_allows():
    lengths = [512] * 8
    assert cond_batch.length_passes(lengths, 32, lambda n: 100) == [list(range(8))]
    assert cond_batch.length_passes(lengths, 32, lambda n: 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert cond_batch.length_passes(lengths, 32, lambda n: 0) == [[i] for i in range(8)]  # at least one row


def test_no_padding_allowed_gives_one_pass_per_length():
    lengths = [5, 7, 5, 9, 7]
    assert cond_batch.length_passes(lengths, 0, lambda n: 99) == [[3], [1, 4], [0, 2]]


@pytest.mark.parametrize("seed", range(5))
def test_random_batches_keep_the_contract(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 700) for _ in range(rng.randint(1, 300))]
    cost = rng.choice([0, 16, 32, 512])
    rows = rng.choice([lambda n: 512 // n, lambda n: 4, lambda n: 10 ** 6])
    _check(cond_batch.length_passes(lengths, cost, rows), lengths, cost, rows)


def test_grouping_is_n_log_n():
    lengths = [(i * 7919) % 2000 + 1 for i in range(200_000)]
    t = time.perf_counter()
    passes = cond_batch.length_passes(lengths, 32, lambda n: 64)
    assert time.perf_counter() - t < 5.0  # a quadratic grouping would take hours
    assert sum(len(p) for p in passes) == len(lengths)


def test_rows_per_pass_counts_the_attention_scores_of_long_prompts():
    gib = 1 << 30
    short = cond_batch.rows_per_pass(8 * gib, 64, 2560, 10 ** 6, cap=None, score_heads=64)
    long = cond_batch.rows_per_pass(8 * gib, 4096, 2560, 10 ** 6, cap=None, score_heads=64)
    # 64 tokens: 64*2560*96 + 64*64*64*4 bytes a row; 4096 tokens: the scores (4 GiB a row) dominate
    assert short == int(2 * gib // (64 * 2560 * 96 + 64 * 64 * 64 * 4))
    assert long == 1
    assert cond_batch.rows_per_pass(8 * gib, 64, 2560, 3, cap=None, score_heads=64) == 3


# ---------------------------------------------------------------- prompts side by side (cond_batch.token_packs)

def _check_packs(passes, lengths, budget):
    """The contract, written out: every prompt in exactly one pass; each pass longest first; no pass over `budget`
    tokens unless it is one prompt."""
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    for p in passes:
        assert [lengths[i] for i in p] == sorted((lengths[i] for i in p), reverse=True), p
        assert len(p) == 1 or sum(lengths[i] for i in p) <= budget, (p, [lengths[i] for i in p])


def test_the_benchmarks_prompts_fit_one_pass_side_by_side():
    lengths = [9, 11, 15, 35, 29, 51, 95, 139, 8]  # 392 tokens
    assert cond_batch.token_packs(lengths, 512) == [[7, 6, 5, 3, 4, 2, 1, 0, 8]]
    assert cond_batch.token_packs(lengths, 391) != [[7, 6, 5, 3, 4, 2, 1, 0, 8]]


def test_best_fit_beats_next_fit():
    # longest first, next fit would give [300], [300, 200], [200]; the best fit pairs each 300 with a 200
    assert cond_batch.token_packs([300, 300, 200, 200], 512) == [[0, 2], [1, 3]]
    # longest first: the 300 and the 200 fill one pass (12 tokens left), the 100 starts the next
    assert cond_batch.token_packs([100, 300, 200], 512) == [[1, 2], [0]]
    # of the passes with room, the one left fullest: the 30 joins the 480 (32 left), not the 400 (112 left)
    assert cond_batch.token_packs([480, 400, 30], 512) == [[0, 2], [1]]


def test_a_prompt_longer_than_a_pass_is_alone():
    assert cond_batch.token_packs([600, 10, 700, 20], 512) == [[2], [0], [3, 1]]
    assert cond_batch.token_packs([5, 5, 5], 0) == [[0], [1], [2]]  # at least one prompt a pass


@pytest.mark.parametrize("seed", range(5))
def test_random_packs_keep_the_contract(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 700) for _ in range(rng.randint(1, 300))]
    budget = rng.choice([1, 64, 512, 4096])
    passes = cond_batch.token_packs(lengths, budget)
    _check_packs(passes, lengths, budget)
    # never more passes than one per prompt, nor than twice the tokens' lower bound (any-fit packing) plus one
    short = [n for n in lengths if n <= budget]
    assert len(passes) <= len(lengths)
    assert len(passes) <= (len(lengths) - len(short)) + 2 * sum(short) / budget + 1


def test_packing_is_n_log_n():
    lengths = [(i * 7919) % 2000 + 1 for i in range(200_000)]
    t = time.perf_counter()
    passes = cond_batch.token_packs(lengths, 4096)
    assert time.perf_counter() - t < 5.0  # a quadratic packing would take hours
    _check_packs(passes, lengths, 4096)


def test_tokens_per_pass_is_the_largest_that_fits():
    gib = 1 << 30

    def estimate(s, width, heads):  # rows_per_pass's bytes for one row of s tokens
        return s * width * 4 * 24 + heads * s * s * 4
    for free, width, heads in ((8 * gib, 2560, 64), (2 * gib, 5120, 64), (gib, 768, 0), (100, 2560, 64)):
        s = cond_batch.tokens_per_pass(free, width, score_heads=heads)
        budget = free * 0.25
        assert s == 1 or estimate(s, width, heads) <= budget, (free, s)
        assert estimate(s + 1, width, heads) > budget, (free, s)
