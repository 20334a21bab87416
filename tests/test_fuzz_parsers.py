"""Tier 1 fuzz (Hypothesis): the prompt grammar (parse, expand in every mode, count) and the <lora:...> tag parser
either return or raise the pack's own error type, within a time bound per input size, never another exception.
Also: clean_prompt's by-hand label reader agrees with the regex it replaced (on short inputs, where that regex's
quadratic backtracking does not matter).

Fixed example budget (EXAMPLES per target, derandomized: the same inputs on every run, no example database
written), so the run is reproducible in CI; about 15 s for all targets on the CI machine."""
import re
import shutil
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lean_nodes.core import llm_text, lora_tags
from lean_nodes.core import prompts as P

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROMPT_ERRORS = (P.PromptSyntaxError, P.WildcardError, P.CombinatorialExplosion, P.PromptBudgetError)


def time_bound(text):
    """Per-input deadline: generous (a hang bound, not a speed claim), growing linearly with the input."""
    return 2.0 + 20e-6 * len(text)


# ----------------------------------------------------------------------------- prompt grammar

PROMPT_TOKENS = ["{", "}", "|", "$$", "::", "-", " ", "  ", "\t", "\n", "#", "\\", "\\{", "\\|", "_", "__", "a",
                 "cat", "0", "1", "2", "10", "0.5", ".5", "3.", "2$$", "1-3$$", " and $$", "0::", "0.3::",
                 "__w__", "__dir/x__", "__cyc1__", "__missing__", "__../up__", "__wide__", "$", "é", "٣", "\u00a0",
                 "{" * 5, "}" * 5, "99999999999999999999999$$", "\x00"]

prompt_text = st.one_of(
    st.lists(st.sampled_from(PROMPT_TOKENS), max_size=60).map("".join),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200),
    # deep and wide structures
    st.integers(min_value=0, max_value=1000).map(lambda d: "{" * d + "a|b" + "}" * d),
    st.integers(min_value=0, max_value=30_000).map(lambda n: "{" + " " * n + "a}"),
    st.integers(min_value=1, max_value=300).map(lambda n: "{1-%d$$" % n + "|".join("x" * n) + "}"),
)


@pytest.fixture(scope="module")
def store():
    root = tempfile.mkdtemp(prefix="lean_fuzz_wc_")
    files = {"w.txt": "x\n{y|z}\n__dir/x__ w\n", "dir/x.txt": "deep {1|2}\n", "cyc1.txt": "__cyc2__\n",
             "cyc2.txt": "a __cyc1__\n", "wide.txt": " ".join(["__w__"] * 4) + "\n{2$$__w__|__dir/x__|q}\n"}
    import os
    for name, content in files.items():
        path = os.path.join(root, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _prompt_target(text, roots):
    start = time.perf_counter()
    for call in (lambda: P.count_prompts(text, mode="combinatorial", wildcard_roots=roots),
                 lambda: P.count_prompts(text, mode="lines", wildcard_roots=roots),
                 lambda: P.expand(text, mode="lines", seed=1, wildcard_roots=roots, budget=200_000),
                 lambda: P.expand(text, mode="random", count=3, seed=2, wildcard_roots=roots, budget=200_000),
                 lambda: P.expand(text, mode="combinatorial", count=64, wildcard_roots=roots, budget=200_000)):
        try:
            got = call()
        except PROMPT_ERRORS:
            continue
        assert isinstance(got, (int, list))
        if isinstance(got, list):
            assert all(isinstance(g, str) for g in got)
    elapsed = time.perf_counter() - start
    assert elapsed < time_bound(text), f"{elapsed:.2f} s for {len(text)} characters: {text[:200]!r}"


@FUZZ
@given(text=prompt_text)
def test_fuzz_prompt_grammar(store, text):
    _prompt_target(text, [store])


@FUZZ
@given(prefix=prompt_text, suffix=prompt_text)
def test_fuzz_prefix_suffix(store, prefix, suffix):
    start = time.perf_counter()
    for mode in P.MODES:
        try:
            P.count_prompts("a {b|c}", mode=mode, prefix=prefix, suffix=suffix, wildcard_roots=[store])
            P.expand("a {b|c}", mode=mode, count=16, prefix=prefix, suffix=suffix, wildcard_roots=[store],
                     budget=200_000)
        except PROMPT_ERRORS:
            pass
    assert time.perf_counter() - start < time_bound(prefix + suffix)


# ----------------------------------------------------------------------------- <lora:...> tags

LORA_TOKENS = ["<", ">", "lora", "LyCo", ":", "=", ",", " ", "\n", "\t", "a", "name", "0.5", "-1", "1e999", "nan",
               "inf", "1e3", "unet", "te", "unet_w", "sched", "schedule", "lbw", "start", "end", "stop", "D0-D18",
               "S0-S37", "BASE", "MIDD", "0:1", "1:0", "\x00", "..", "/", "\\", "é", "<lora:", "<lyco:x:", ":0.8>"]

lora_text = st.one_of(
    st.lists(st.sampled_from(LORA_TOKENS), max_size=60).map("".join),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200),
    st.integers(min_value=0, max_value=30_000).map(lambda n: "<lora" + " " * n + "x"),
)


@FUZZ
@given(text=lora_text)
def test_fuzz_lora_tags(text):
    start = time.perf_counter()
    try:
        rest, tags = lora_tags.parse_tags(text)
        assert isinstance(rest, str)
        for t in tags:
            assert isinstance(t.name, str) and t.name
    except lora_tags.LoraSyntaxError:
        pass
    elapsed = time.perf_counter() - start
    assert elapsed < time_bound(text), f"{elapsed:.2f} s for {len(text)} characters: {text[:200]!r}"


# ----------------------------------------------------------------------------- LLM answer label

_OLD_LABEL = re.compile(r"^\s*(?:\*\*)?(?:final\s+)?prompt\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.IGNORECASE)
LABEL_TOKENS = [" ", "\n", "\t", "\u00a0", "*", "**", ":", "prompt", "Prompt", "PROMPT", "final", "Final ", "x",
                "\"", "'", "`", "```", "promp", "ſ", "K", "İ", "ı"]


@FUZZ
@given(text=st.lists(st.sampled_from(LABEL_TOKENS), max_size=14).map("".join))
def test_fuzz_llm_label_matches_the_old_regex(text):
    t = text.strip()
    assert t[llm_text._label_end(t):] == _OLD_LABEL.sub("", t, count=1)
