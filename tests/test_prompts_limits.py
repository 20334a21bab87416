"""Tier 1: the prompt grammar and the text parsers are linear in their input, nest without recursion, and every
expansion has a budget (core/prompts.py, core/llm_text.clean_prompt, core/lora_tags.parse_tags; issue 21).

Hang checks run the code in a fresh interpreter (`bounded`) that is killed after a generous bound and limited
to 2 GiB of memory: the inputs below took hours (quadratic regex), never returned (fan-out recomputed) or
exhausted memory before these limits existed, so a regression fails here instead of hanging the suite.
The bounds are robustness checks (hang bounds), not speed claims: each input finishes far below them."""
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

from lean_nodes.core import prompts as P

REPO = pathlib.Path(__file__).resolve().parent.parent
MB = 1_000_000

PRELUDE = """
import importlib, resource, sys, types
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
core = types.ModuleType("lean_core_under_test")  # core/ alone, as a package (its modules import each other)
core.__path__ = [{core!r}]
sys.modules[core.__name__] = core
P = importlib.import_module("lean_core_under_test.prompts")
T = importlib.import_module("lean_core_under_test.llm_text")
L = importlib.import_module("lean_core_under_test.lora_tags")
"""


def bounded(seconds, body):
    """Run `body` (Python; P, T, L are core/prompts, core/llm_text, core/lora_tags) in a fresh interpreter with
    2 GiB of address space; fail if it does not finish within `seconds`.  Returns its stdout."""
    code = PRELUDE.format(core=str(REPO / "core")) + textwrap.dedent(body)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {seconds} s (hang bound):\n{textwrap.dedent(body)}")
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


# ----------------------------------------------------------------------------- 1. linear parsers

@pytest.mark.parametrize("text", [
    '"{" + " " * 1_000_000 + "a}"',                                  # after '{' (was quadratic: 8000 -> 1 s)
    '"{2" + " " * 1_000_000 + "a}"',                                 # after the count
    '"{2 -" + " " * 1_000_000 + "a}"',                               # after '-'
    '"{a|" + " " * 1_000_000 + "b}"',                                # before a weight
    '"{0.5" + " " * 1_000_000 + "b}"',                               # after a weight
    '"{1$$" + "x" * 1_000_000 + "|b}"',                              # a separator never closed by $$
    '"__a" + "_a" * 500_000',                                        # wildcard names never closed
])
def test_template_of_1mb_parses_in_linear_time(text):
    out = bounded(20, f"""
        import time
        text = {text}
        t = time.perf_counter()
        tree = P.parse(text)
        print(time.perf_counter() - t)
    """)
    assert float(out) < 5, f"1 MB took {float(out):.2f} s to parse"


def test_preview_sized_whitespace_answers_at_once():
    # "{" + 7900 spaces + "a}" is about all one request line carries; it took ~1 s on main (quadratic regex)
    text = "{" + " " * 7900 + "a}"
    assert P.count_prompts(text) == 1
    assert P.expand(text) == ["a"]
    out = bounded(20, """
        import time
        t = time.perf_counter()
        for _ in range(20):
            P.count_prompts("{" + " " * 7900 + "a}")
        print(time.perf_counter() - t)
    """)
    assert float(out) < 2, f"20 previews took {float(out):.2f} s"


@pytest.mark.parametrize("text", [
    '"prompt" + " " * 1_000_000 + "x"',
    '"**final prompt" + " " * 1_000_000 + "**" + " " * 1_000_000 + "x"',
    '"final" + " " * 1_000_000 + "x"',
])
def test_llm_label_strip_is_linear(text):
    out = bounded(20, f"""
        text = {text}
        print(T.clean_prompt(text) == text)
    """)
    assert out.strip() == "True"


def test_llm_label_strip_still_strips_labels():
    from lean_nodes.core.llm_text import clean_prompt
    assert clean_prompt("**Final Prompt:** a cat") == "a cat"
    assert clean_prompt("prompt :  \n a dog") == "a dog"
    assert clean_prompt("Prompt ** : ** \"a fox\"") == "a fox"
    assert clean_prompt("promptly: no") == "promptly: no"
    assert clean_prompt("final  answer: x") == "final  answer: x"


@pytest.mark.parametrize("text", [
    '"<" + " " * 1_000_000',
    '"<lora" + " " * 1_000_000 + ":x"',
    '"< lora:a:1> " * 80_000',
    '"a," + "\\n" * 1_000_000 + "<lora:x:1>"',
    '"<lora:" + "a:" * 500_000 + ">"',
    '"<lora:x:sched=" + "0:1," * 250_000 + ">"',
])
def test_lora_tag_parser_is_linear(text):
    bounded(20, f"""
        text = {text}
        try:
            L.parse_tags(text)
        except L.LoraSyntaxError:
            pass
    """)


# ----------------------------------------------------------------------------- 2. nesting as data

def test_400_nested_braces_are_a_clear_syntax_error():
    text = "{" * 400 + "a" + "}" * 400           # RecursionError (HTTP 500) on main
    with pytest.raises(P.PromptSyntaxError, match=f"nest deeper than {P.MAX_BRACE_DEPTH} levels"):
        P.expand(text)
    with pytest.raises(P.PromptSyntaxError, match="the limit"):
        P.count_prompts(text, mode="combinatorial")


def test_100_nested_braces_work_in_every_mode():
    text = "{" * P.MAX_BRACE_DEPTH + "a|b" + "}" * P.MAX_BRACE_DEPTH
    assert P.expand(text) in (["a"], ["b"])
    assert set(P.expand(text, mode="random", count=50, seed=1)) == {"a", "b"}
    assert P.expand(text, mode="combinatorial", count=2) == ["a", "b"]
    assert P.count_prompts(text, mode="combinatorial") == 2


def test_deep_braces_through_deep_wildcards_need_no_recursion(tmp_path):
    # 31 wildcard files, each a line of 100 nested braces around the next one: thousands of levels in all
    depth = P.MAX_BRACE_DEPTH
    for k in range(31):
        (tmp_path / f"d{k}.txt").write_text("{" * depth + f"x{k} __d{k + 1}__|y{k}" + "}" * depth + "\n")
    (tmp_path / "d31.txt").write_text("bottom\n")
    out = bounded(60, f"""
        sys.setrecursionlimit(1000)
        roots = [{str(tmp_path)!r}]
        got = P.expand("__d0__", mode="random", count=64, seed=3, wildcard_roots=roots)
        assert any(g.startswith("x0 x1") for g in got), got
        n = P.count_prompts("__d0__", mode="combinatorial", wildcard_roots=roots)
        assert n == 32, n
        assert len(P.expand("__d0__", mode="combinatorial", count=32, wildcard_roots=roots)) == 32
        print("ok")
    """)
    assert out.strip() == "ok"


# ----------------------------------------------------------------------------- 3. budgets

def _fanout(root, lines_per_file, files=21):
    """w0 .. w19 each refer to the next wildcard four times, w20 is `x` (issue 21's fan-out)."""
    for k in range(files - 1):
        ref = f"__w{k + 1}__"
        (root / f"w{k}.txt").write_text(" ".join([ref] * 4) + "\n" if lines_per_file == 1 else (ref + "\n") * 4)
    (root / f"w{files - 1}.txt").write_text("x\n")
    return str(root)


def test_wildcard_fanout_counts_at_once_and_expansion_hits_the_budget(tmp_path):
    root = _fanout(tmp_path, lines_per_file=1)      # one line, four references: 4**20 words per prompt
    out = bounded(30, f"""
        roots = [{root!r}]
        assert P.count_prompts("__w0__", mode="combinatorial", wildcard_roots=roots) == 1
        assert P.count_prompts("__w0__", mode="lines", wildcard_roots=roots) == 1
        for mode, budget in (("lines", P.EXPANSION_BUDGET), ("random", 200_000), ("combinatorial", 200_000)):
            try:
                P.expand("__w0__", mode=mode, count=4, wildcard_roots=roots, budget=budget)
                raise SystemExit("no error in " + mode)
            except P.PromptBudgetError as e:
                assert "expansion budget" in str(e), e
        print("ok")
    """)
    assert out.strip() == "ok"


def test_wildcard_fanout_of_lines_is_counted_once_per_wildcard(tmp_path):
    root = _fanout(tmp_path, lines_per_file=4)      # four lines each: 4**20 combinations
    out = bounded(20, f"""
        roots = [{root!r}]
        print(P.count_prompts("__w0__", mode="combinatorial", wildcard_roots=roots))
        try:
            P.expand("__w0__", mode="combinatorial", count=16, wildcard_roots=roots)
        except P.CombinatorialExplosion as e:
            print("refused")
    """)
    assert out.split() == [str(4 ** 20), "refused"]


def test_wide_multi_pick_counts_saturate():
    text = "{1-2000$$" + "|".join(f"o{k}" for k in range(2000)) + "}"
    out = bounded(20, f"""
        print(P.count_prompts({text!r}, mode="combinatorial"))
    """)
    assert int(out) == P.COUNT_CAP
    # below the cap the count is exact: sum of C(12, k), k = 2..5
    assert P.count_prompts("{2-5$$" + "|".join("abcdefghijkl") + "}", mode="combinatorial") == 66 + 220 + 495 + 792


def test_text_longer_than_the_limit_is_refused_naming_it():
    with pytest.raises(P.PromptBudgetError, match=f"{P.MAX_TEXT_CHARS:,}"):
        P.expand("a" * (P.MAX_TEXT_CHARS + 1))
    with pytest.raises(P.PromptBudgetError, match="prefix"):
        P.count_prompts("a", prefix="b" * (P.MAX_TEXT_CHARS + 1))


def test_wildcard_file_longer_than_the_limit_is_refused(tmp_path):
    (tmp_path / "big.txt").write_text("ab\n" * (P.MAX_TEXT_CHARS // 3 + 1))
    with pytest.raises(P.PromptBudgetError, match="__big__"):
        P.expand("__big__", wildcard_roots=[str(tmp_path)])


def test_lines_mode_is_capped_like_count():
    with pytest.raises(P.PromptBudgetError, match=f"{P.MAX_PROMPTS} prompts"):
        P.expand("a\n" * (P.MAX_PROMPTS + 1))
    assert len(P.expand("a\n" * P.MAX_PROMPTS)) == P.MAX_PROMPTS


@pytest.mark.parametrize("kw, what", [
    (dict(count=P.MAX_PROMPTS + 1), "count"), (dict(count=10 ** 9), "count"), (dict(count=0), "count"),
    (dict(seed=-1), "seed"), (dict(seed=2 ** 64), "seed"), (dict(seed=10 ** 5000), "seed"),
    (dict(count=2.5), "count"), (dict(seed="x"), "seed"),
])
def test_linked_numbers_are_rechecked(kw, what):
    # ComfyUI applies a widget's min/max only to typed values: a linked count or seed arrives unchecked
    with pytest.raises(ValueError, match=what):
        P.expand("{a|b}", mode="random", **kw)


def test_expansion_checks_cancel():
    calls = []

    class Interrupted(Exception):
        pass

    def cancel():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted()

    with pytest.raises(Interrupted):
        P.expand("{a|b|c} " * 400, mode="random", count=400, cancel=cancel)
    assert len(calls) == 3
    calls.clear()
    got = P.expand("{a|b|c} " * 40, mode="random", count=400, cancel=lambda: calls.append(1))
    assert len(got) == 400 and calls, "cancel was never checked"


def test_budget_error_names_the_budget_and_what_to_do():
    with pytest.raises(P.PromptBudgetError) as e:
        P.expand("x" * 10_000, mode="random", count=P.MAX_PROMPTS, budget=1_000_000)
    assert "1,000,000 steps" in str(e.value) and "expansion budget" in str(e.value) and "fewer" in str(e.value)


def test_long_text_errors_show_a_window_not_the_whole_text():
    with pytest.raises(P.PromptSyntaxError) as e:
        P.expand("a" * 100_000 + " } " + "b" * 100_000)
    assert len(str(e.value)) < 500 and "200,003 characters" in str(e.value)


# ----------------------------------------------------------------------------- determinism

def test_same_prompts_as_before_the_rewrite(tmp_path):
    """Outputs recorded from main's core/prompts.py (commit bca56f5, before this rewrite) for templates with
    choices, multi-picks, separators, weights, nesting and nested wildcards: the explicit-stack expansion
    consumes the random stream exactly as the recursive one did."""
    ref = json.loads((REPO / "tests" / "data" / "prompts_main_reference.json").read_text())
    for name, content in ref["files"].items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    roots, text, out = [str(tmp_path)], "\n".join(ref["templates"]), ref["out"]
    assert P.expand(text, mode="lines", seed=7, wildcard_roots=roots) == out["lines"]
    assert P.expand(text, mode="random", count=40, seed=12345, prefix="{best|good}", suffix="__colors__",
                    wildcard_roots=roots) == out["random"]
    assert P.expand(ref["templates"][3], mode="random", count=10, seed=2 ** 64 - 1,
                    wildcard_roots=roots) == out["random_big_seed"]
    assert P.expand("{a|b} {2$$x|y|z}\n__animals__", mode="combinatorial", count=4096, prefix="{p|q}",
                    wildcard_roots=roots) == out["combinatorial"]
    assert [P.count_prompts(t, mode="combinatorial", wildcard_roots=roots)
            for t in ref["templates"]] == out["counts"]
