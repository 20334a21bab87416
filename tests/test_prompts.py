"""Tier 1: prompt lists, wildcard syntax, determinism, errors (core/prompts.py) and batch assembly
(core/cond_batch.py).  No host needed."""
import collections
import itertools
import math
import os
import random
import subprocess
import sys

import pytest
import torch

from lean_nodes.core import cond_batch
from lean_nodes.core import prompts as P


@pytest.fixture
def wc(tmp_path):
    """A wildcards folder with a few files (nested folder included)."""
    root = tmp_path / "wildcards"
    (root / "styles").mkdir(parents=True)
    (root / "colors.txt").write_text("# colours\nred\n\ngreen\nblue\n")
    (root / "animals.txt").write_text("cat\ndog\n__colors__ bird\n")
    (root / "styles" / "paint.txt").write_text("oil painting\nwatercolor\n")
    (root / "empty.txt").write_text("# nothing here\n\n")
    return root


def store(root):
    return P.WildcardStore([str(root)])


# ----------------------------------------------------------------------------- lines mode

def test_lines_mode_one_prompt_per_line_comments_and_blanks_skipped():
    text = "a cat\n\n# a comment\n  a dog  \n#another\nthe end"
    assert P.expand(text, mode="lines") == ["a cat", "a dog", "the end"]


def test_lines_mode_ignores_count():
    assert len(P.expand("a\nb\nc", mode="lines", count=1)) == 3


def test_prefix_and_suffix_joined_with_comma():
    got = P.expand("a cat\na dog", prefix="masterpiece", suffix="4k, sharp")
    assert got == ["masterpiece, a cat, 4k, sharp", "masterpiece, a dog, 4k, sharp"]
    assert P.expand("a cat", prefix="  ", suffix="") == ["a cat"]


def test_comfy_weight_syntax_and_escapes_pass_through():
    got = P.expand(r"(red:1.3) cat, embedding:foo, \(x\), \{literal\} a\|b, snake_case", mode="lines")
    assert got == [r"(red:1.3) cat, embedding:foo, \(x\), {literal} a|b, snake_case"]


def test_top_level_pipe_is_literal():
    assert P.expand("a | b") == ["a | b"]


# ----------------------------------------------------------------------------- syntax

def test_choice_picks_one_of_the_options():
    seen = collections.Counter(P.expand("{red|green|blue} cube", mode="random", count=300, seed=1))
    assert set(seen) == {"red cube", "green cube", "blue cube"}
    assert min(seen.values()) > 60  # roughly uniform


def test_multi_pick_distinct_joined():
    for p in P.expand("{2$$a|b|c}", mode="random", count=200, seed=5):
        parts = p.split(", ")
        assert len(parts) == 2 and len(set(parts)) == 2 and set(parts) <= {"a", "b", "c"}


def test_multi_pick_range_and_custom_separator():
    lens = set()
    for p in P.expand("{1-3$$ and $$a|b|c}", mode="random", count=300, seed=2):
        parts = p.split(" and ")
        assert len(set(parts)) == len(parts) and set(parts) <= {"a", "b", "c"}
        lens.add(len(parts))
    assert lens == {1, 2, 3}


def test_pick_more_than_given_is_a_syntax_error():
    with pytest.raises(P.PromptSyntaxError, match="asks for 4 options but only 3"):
        P.expand("{4$$a|b|c}")


def test_weighted_options_follow_weights():
    n = 4000
    got = collections.Counter(P.expand("{0.25::a|0.75::b}", mode="random", count=n, seed=11))
    assert abs(got["a"] / n - 0.25) < 0.03, got
    got = collections.Counter(P.expand("{0.3::a|b}", mode="random", count=n, seed=12))  # b weighs 1
    assert abs(got["a"] / n - 0.3 / 1.3) < 0.03, got


def test_zero_weight_never_drawn():
    assert set(P.expand("{0::a|b}", mode="random", count=200, seed=3)) == {"b"}


def test_nesting():
    got = set(P.expand("{a {x|y}|b}", mode="random", count=300, seed=4))
    assert got == {"a x", "a y", "b"}


def test_empty_options():
    assert set(P.expand("cat{| hat}", mode="random", count=100, seed=4)) == {"cat", "cat hat"}
    assert P.expand("{}x", mode="lines") == ["x"]


@pytest.mark.parametrize("text, where", [
    ("a {b|c", "never closed"),
    ("a b} c", "without a matching"),
    ("{a|{b|c}", "never closed"),
    ("{$$a|b}", "needs a count"),
    ("{3-2$$a|b|c}", "backwards"),
    ("{0::a|0::b}", "weight 0"),
])
def test_syntax_errors_are_clear(text, where):
    with pytest.raises(P.PromptSyntaxError, match=where) as e:
        P.expand(text)
    assert "line 1" in str(e.value)


# ----------------------------------------------------------------------------- wildcards

def test_wildcard_takes_a_line(wc):
    got = set(P.expand("a __colors__ car", mode="random", count=200, seed=1, store=store(wc)))
    assert got == {"a red car", "a green car", "a blue car"}


def test_wildcard_nested_folder_and_nested_wildcards(wc):
    s = store(wc)
    assert set(P.expand("__styles/paint__", mode="random", count=100, seed=1, store=s)) == {"oil painting", "watercolor"}
    got = set(P.expand("__animals__", mode="random", count=400, seed=1, store=s))
    assert got == {"cat", "dog", "red bird", "green bird", "blue bird"}


def test_wildcard_roots_searched_in_order(wc, tmp_path):
    other = tmp_path / "more"
    other.mkdir()
    (other / "colors.txt").write_text("purple\n")
    (other / "sizes.txt").write_text("huge\n")
    s = P.WildcardStore([str(wc), str(other)])
    assert set(P.expand("__colors__ __sizes__", mode="random", count=50, store=s)) <= {
        "red huge", "green huge", "blue huge"}
    assert "sizes" in s.names() and "styles/paint" in s.names()


def test_unknown_wildcard_lists_close_matches(wc):
    with pytest.raises(P.WildcardNotFound, match=r"unknown wildcard __colours__.*Close matches: __colors__"):
        P.expand("__colours__", store=store(wc))
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for callers that catch that
        P.expand("__nothing_like_it__", store=store(wc))


@pytest.mark.parametrize("name", ["../../secret", "../wildcards/colors", "/etc/passwd", "a/../../b",
                                  "..", "dir//x", "c:\\x"])
def test_path_traversal_refused(wc, name, tmp_path):
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    with pytest.raises(P.WildcardError, match="refused"):
        P.expand(f"x __{name}__", store=store(wc))


def test_symlink_out_of_the_folder_refused(wc, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("leak\n")
    os.symlink(outside, wc / "sneaky.txt")
    with pytest.raises(P.WildcardError, match="outside the wildcards folder"):
        P.expand("__sneaky__", store=store(wc))


def test_cycle_named_whatever_the_seed(wc):
    (wc / "a.txt").write_text("plain\n__b__\n")
    (wc / "b.txt").write_text("x __a__\n")
    for seed in range(3):
        with pytest.raises(P.WildcardError, match=r"cycle: __a__ -> __b__ -> __a__"):
            P.expand("__a__", mode="random", count=4, seed=seed, store=store(wc))
    (wc / "self.txt").write_text("__self__\n")
    with pytest.raises(P.WildcardError, match=r"cycle: __self__ -> __self__"):
        P.expand("{x|__self__}", store=store(wc))


def test_deep_nesting_bounded(wc):
    for k in range(40):
        (wc / f"d{k}.txt").write_text(f"__d{k + 1}__\n")
    (wc / "d40.txt").write_text("bottom\n")
    with pytest.raises(P.WildcardError, match="nest deeper than 32"):
        P.expand("__d0__", store=store(wc))
    assert P.expand("__d20__", store=store(wc)) == ["bottom"]


def test_empty_wildcard_file_is_an_error(wc):
    with pytest.raises(P.WildcardError, match="__empty__.*no lines"):
        P.expand("__empty__", store=store(wc))


def test_no_wildcard_folder_at_all():
    with pytest.raises(P.WildcardNotFound, match="no wildcards folder registered"):
        P.expand("__colors__", store=P.WildcardStore([]))


def test_wildcard_file_syntax_error_names_file_and_line(wc):
    (wc / "broken.txt").write_text("ok\n{unclosed\n")
    with pytest.raises(P.PromptSyntaxError, match=r"wildcard __broken__ line 2"):
        P.expand("__broken__", store=store(wc))


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_prompts_different_seed_different(wc):
    text = "a {red|green|blue|pink} {cat|dog|fox} __styles/paint__\n{2$$big|small|old|new} __animals__"
    a = P.expand(text, mode="random", count=32, seed=123, store=store(wc))
    b = P.expand(text, mode="random", count=32, seed=123, store=store(wc))
    c = P.expand(text, mode="random", count=32, seed=124, store=store(wc))
    assert a == b
    assert a != c


def test_prompt_i_does_not_depend_on_count():
    text = "{a|b|c|d} {e|f|g|h}"
    short = P.expand(text, mode="random", count=4, seed=9)
    long = P.expand(text, mode="random", count=40, seed=9)
    assert long[:4] == short


def test_golden_values_pin_the_random_stream():
    """Pinned output: if this changes, saved workflows give other prompts than before."""
    got = P.expand("{a|b|c} {1|2|3|4}\n{x|y}", mode="random", count=6, seed=42)
    assert got == GOLDEN_42, got


GOLDEN_42 = ['y', 'c 3', 'a 3', 'b 3', 'y', 'a 3']


def test_stable_across_processes_and_hash_seeds():
    """hash() randomisation (PYTHONHASHSEED) must not leak into the draw."""
    code = ("import sys; sys.path.insert(0, %r); import conftest; from lean_nodes.core import prompts as P; "
            "print(P.expand('{a|b|c} {1|2|3|4} {2$$p|q|r|s}', mode='random', count=12, seed=7))"
            % os.path.dirname(__file__))
    outs = set()
    for hs in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           cwd=os.path.dirname(__file__))
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout.strip().splitlines()[-1])
    assert len(outs) == 1, outs


def test_rng_is_stdlib_random_seeded_with_a_string():
    """The documented contract: prompt i draws from random.Random('lean-prompt-batch/<seed>/<i>')."""
    r = random.Random("lean-prompt-batch/5/3")
    first = r.randrange(1)  # the line pick of prompt 3 (a single line: index 0), then the choice
    opts = ["a", "b", "c", "d"]
    expected = opts[int(r.random() * 4)]
    assert P.expand("{a|b|c|d}", mode="random", count=4, seed=5)[3] == expected
    assert first == 0


# ----------------------------------------------------------------------------- combinatorial

def test_combinatorial_order_and_content():
    assert P.expand("{a|b} {1|2}\nz", mode="combinatorial", count=5) == ["a 1", "a 2", "b 1", "b 2", "z"]


def test_combinatorial_multi_pick_enumerates_subsets():
    got = P.expand("{2$$a|b|c}", mode="combinatorial", count=10)
    assert got == ["a, b", "a, c", "b, c"]


def test_combinatorial_wildcards_and_prefix(wc):
    got = P.expand("__colors__ cube", mode="combinatorial", count=10, prefix="{photo|drawing}", store=store(wc))
    assert got == [f"{p}, {c} cube" for c in ("red", "green", "blue") for p in ("photo", "drawing")]


@pytest.mark.parametrize("text", [
    "{a|b|c}", "{a|b} {c|d|e}", "{2$$a|b|c|d}", "{1-3$$a|{b|c}|d {e|f}}", "{a|{b|c {d|e}}} {2$$x|y|z}",
    "plain", "{0.2::a|b}",
])
def test_count_matches_enumeration(text):
    n = P.count_prompts(text, mode="combinatorial")
    assert n == len(P.expand(text, mode="combinatorial", count=P.MAX_PROMPTS))


def test_count_by_formula():
    # C(4,2) subsets, one with a 2-way option inside: pairs with 'b'(2 variants) count double
    assert P.count_prompts("{2$$a|{b1|b2}|c|d}", mode="combinatorial") == (
        sum(math.prod(2 if x == "b" else 1 for x in pair) for pair in itertools.combinations("abcd", 2)))


def test_combinatorial_explosion_refused_before_enumerating():
    text = " ".join("{a|b|c|d|e|f|g|h|i|j}" for _ in range(30))  # 10**30 prompts
    with pytest.raises(P.CombinatorialExplosion, match=r"would make more than 1,0{3}(,0{3}){4} prompts, "
                                                       r"more than count=64"):
        P.expand(text, mode="combinatorial", count=64)
    # counts saturate at COUNT_CAP (10**15): no big-integer work past it
    assert P.count_prompts(text, mode="combinatorial") == P.COUNT_CAP == 10 ** 15
    small = " ".join("{a|b|c|d|e|f|g|h|i|j}" for _ in range(14))
    assert P.count_prompts(small, mode="combinatorial") == 10 ** 14


def test_combinatorial_at_the_cap_is_fine():
    assert len(P.expand("{a|b} {c|d}", mode="combinatorial", count=4)) == 4


# ----------------------------------------------------------------------------- input errors

@pytest.mark.parametrize("text", ["", "   \n\n", "# only\n# comments"])
def test_empty_text_is_an_error(text):
    with pytest.raises(ValueError, match="no prompt"):
        P.expand(text)


def test_bad_mode_and_count():
    with pytest.raises(ValueError, match="mode 'shuffle' is not one of lines, random, combinatorial"):
        P.expand("a", mode="shuffle")
    with pytest.raises(ValueError, match="count must be at least 1"):
        P.expand("a", mode="random", count=0)


def test_count_prompts_modes(wc):
    assert P.count_prompts("a\nb\n#c", mode="lines") == 2
    with pytest.raises(P.WildcardError, match="refused"):
        P.count_prompts("__../x__", mode="lines", store=store(wc))
    with pytest.raises(ValueError, match="not one of"):
        P.count_prompts("a", mode="nope")
    assert P.count_prompts("a", mode="random", count=7) == 7
    assert P.count_prompts("{a|b}\n{c|d|e}", mode="combinatorial") == 5


# ----------------------------------------------------------------------------- batch assembly

def test_plan_passes():
    rows = [(0, 0), (1, 0), (1, 1), (2, 0)]
    assert cond_batch.plan_passes(rows, 10) == [rows]
    assert cond_batch.plan_passes(rows, 3) == [rows[:3], rows[3:]]
    assert cond_batch.plan_passes(rows[:3], 1) == [[r] for r in rows[:3]]
    with pytest.raises(ValueError):
        cond_batch.plan_passes(rows, 0)


def test_unique_rows_and_chunk_keys():
    a = [(49406, 1.0), (320, 1.0), (49407, 1.0)]
    a_weighted = [(49406, 1.0), (320, 1.3), (49407, 1.0)]
    b = [(49406, 1.0), (321, 1.0), (49407, 1.0)]
    emb1, emb2 = torch.zeros(2, 4), torch.zeros(2, 4)
    keys = [cond_batch.chunk_key(c) for c in ([a], [b], [list(a)], [a_weighted], [a, b], [a, a],
                                            [[(emb1, 1.0)]], [[(emb2, 1.0)]], [[(emb1, 1.0, 3)]])]
    firsts, index = cond_batch.unique_rows(keys)
    assert index == [0, 1, 0, 2, 3, 4, 5, 6, 5]  # same tokens+weights share; embeddings by identity
    assert firsts == [0, 1, 3, 4, 5, 6, 7]


def test_rows_per_pass_bounds():
    assert cond_batch.rows_per_pass(64 << 30, 77, 768, 48) == 48
    assert cond_batch.rows_per_pass(0, 77, 768, 48) == 1
    assert 1 < cond_batch.rows_per_pass(100 << 20, 77, 768, 480) < 480


def test_assemble_pads_with_the_empty_chunk_never_zeros():
    L, C = 4, 3
    pad = torch.full((L, C), 7.0)
    chunks = {(0, 0): torch.ones(L, C), (1, 0): torch.full((L, C), 2.0), (1, 1): torch.full((L, C), 3.0),
              (1, 2): torch.full((L, C), 4.0)}
    pooled = {k: torch.full((5,), float(k[0] * 10 + k[1])) for k in chunks}
    cond, pl = cond_batch.assemble(chunks, pooled, [1, 3], pad)
    assert cond.shape == (2, 3 * L, C)
    assert torch.equal(cond[0, :L], torch.ones(L, C))
    assert torch.equal(cond[0, L:], pad.repeat(2, 1))
    assert torch.equal(cond[1], torch.cat([torch.full((L, C), v) for v in (2.0, 3.0, 4.0)]))
    assert torch.equal(pl, torch.stack([torch.full((5,), 0.0), torch.full((5,), 10.0)]))
    assert not (cond == 0).all(dim=-1).any()
    cond, pl = cond_batch.assemble(chunks, None, [1, 3], pad)
    assert pl is None


def test_stack_padded_repeats_and_cuts():
    a = torch.ones(1, 5, 2)
    b = torch.zeros(1, 2, 2)
    pad = torch.arange(4.0).reshape(1, 2, 2)
    out = cond_batch.stack_padded([a, b], pad)
    assert out.shape == (2, 5, 2)
    assert torch.equal(out[1, 2:4], pad[0]) and torch.equal(out[1, 4], pad[0, 0])


def test_stack_masked_pads_with_masked_zeros():
    """LLM encoders whose model reads the text mask (Qwen-Image): shorter prompts are zero-padded at the end and
    masked; a prompt's own mask is kept for its tokens; no mask when nothing is padded or masked."""
    a, b = torch.randn(1, 3, 4), torch.randn(1, 5, 4)
    cond, mask = cond_batch.stack_masked([a, b], [None, None])
    assert cond.shape == (2, 5, 4)
    assert torch.equal(cond[0, :3], a[0]) and torch.equal(cond[0, 3:], torch.zeros(2, 4))
    assert torch.equal(cond[1], b[0])
    assert mask.dtype == torch.long and mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    own = torch.tensor([[1, 1, 0]])
    _, mask = cond_batch.stack_masked([a, b], [own, None])
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    cond, mask = cond_batch.stack_masked([a, a.clone()], [None, None])
    assert mask is None and cond.shape == (2, 3, 4)
