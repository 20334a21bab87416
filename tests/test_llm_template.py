"""Tier 1: chat templates (code inside a stranger's GGUF) render within budgets (core/llm_template.py).

Each hostile template must end quickly with ChatTemplateError naming what it asked for; ordinary templates render
exactly as plain jinja2 renders them (the reference: jinja2's own ImmutableSandboxedEnvironment, no Lean code).
A Hypothesis fuzz test feeds token soup built from Jinja syntax and amplifying operators: every input returns text
or raises ChatTemplateError, never another exception, within a per-input bound."""
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lean_nodes.core import llm_template
from lean_nodes.core.llm_template import ChatTemplateError, ChatTemplateLimit, render
from lean_nodes.core.llm_text import CHATML_FALLBACK, render_chat

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a fox"}]
HANG_BOUND_S = 8.0  # a hostile template must be refused well within this (its time budget is MAX_SECONDS)


def plain_jinja(template, **ctx):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(**ctx)


QWEN_LIKE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content | trim + '<|im_end|>' + '\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
FEATURES = (
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ loop.index }}:{{ m.role|upper }}"
    "{{ '-' ~ m.content|replace('a', 'A')|center(12) ~ '|' }}{% if not loop.last %}, {% endif %}{% endfor %}"
    "{{ ns.n }} {{ messages|map(attribute='role')|join('/') }} {{ '%s=%d'|format('x', 3) }} {{ '{}!'.format('hi') }}"
    "{{ messages|tojson }} {{ (messages|length) * 3 }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }}"
    "{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m('y') }}{% for i in range(3) %}{{ i }}{% endfor %}"
    "{{ messages[0].content.split(' ')|list }} {{ 'x'.strip() }} {{ bos_token }}{{ eos_token }}")


@pytest.mark.parametrize("template", [CHATML_FALLBACK, QWEN_LIKE, FEATURES])
def test_ordinary_templates_render_like_plain_jinja(template):
    ctx = dict(messages=MSGS, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
    assert render(template, **ctx) == plain_jinja(template, **ctx)


HOSTILE = [
    ("{{ 'x' * 10**11 }}", "repeated string"),
    ("{{ 10**11 * 'x' }}", "repeated string"),
    ("{{ ['x'] * 10**9 }}", "repeated list"),
    ("{{ 9 ** (9 ** 9) }}", "power"),
    ("{{ 2 ** 100000 }}", "power"),
    ("{% set n = 2 ** 2000 %}{{ n * n * n }}", "product"),
    ("{{ 'x'|center(10**9) }}", "center"),
    ("{{ 'x'.center(10**9) }}", "str.center"),
    ("{{ 'x'.ljust(10**9) }}", "str.ljust"),
    ("{{ 'x'.zfill(10**9) }}", "str.zfill"),
    ("{{ ('a\n' * 400000)|indent(100) }}", "indent"),
    ("{{ ('x' * 1000)|replace('x', 'y' * 10000) }}", "replace"),
    ("{{ ('x' * 1000).replace('x', 'y' * 10000) }}", "replace"),
    ("{{ ('x' * 100000)|wordwrap(1, true, 'y' * 100) }}", "wordwrap"),
    ("{{ ('y' * 1000000)|join('-') }}", "joined string"),
    ("{% set a = 'x' * 1000000 %}{{ [a] * 100000 }}", "printed as text"),
    ("{% set a = 'x' * 1000000 %}{{ ([a] * 100000)|join }}", "characters"),
    ("{% set a = 'x' * 1000000 %}{{ ([a] * 100000)|tojson }}", "printed as text"),
    ("{% set a = 'x' * 1000000 %}{{ a ~ a }}", "concatenation"),
    ("{% set a = 'x' * 900000 %}{{ a + a }}", "joined value"),
    ("{{ '%0999999999d' % 1 }}", "format width"),
    ("{{ '%*d' % (10**9, 1) }}", "'*' width"),
    ("{{ '%0999999999d'|format(1) }}", "format width"),
    ("{{ '{:>999999999}'.format(1) }}", "format width"),
    ("{{ '{:{w}}'.format(1, w=999999999) }}", "format width"),
    ("{{ 'ab'.expandtabs(10**9) }}", "str.expandtabs"),
    ("{{ [1]|batch(10**9, 'x')|list }}", "batch"),
    ("{{ [1]|slice(10**9)|list }}", "slice"),
    ("{{ messages|tojson(indent=10**6) }}", "indent"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps"),
    ("{% for a in [1,2,3,4,5,6,7,8,9,10] %}{% for b in [1,2,3,4,5,6,7,8,9,10] %}{% for c in [1,2,3,4,5,6,7,8,9,10] %}"
     "{% for d in [1,2,3,4,5,6,7,8,9,10] %}{% for e in [1,2,3,4,5,6,7,8,9,10] %}{% for f in [1,2,3,4,5,6,7,8,9,10] %}"
     "{% for g in [1,2,3,4,5,6,7,8,9,10] %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
     "{% endfor %}", "steps"),
    ("{% set big = 'x' * 1000000 %}{% for i in range(100000) %}{{ big }}{% endfor %}", "output"),
    ("{% set s %}{% for i in range(100000) %}{{ 'x' * 999999 }}{% endfor %}{% endset %}{{ s|length }}", "output"),
    ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "recursed"),
    ("x" * (llm_template.MAX_TEMPLATE_CHARS + 1), "characters"),
]


@pytest.mark.parametrize("template, words", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_template_is_refused_quickly_naming_the_limit(template, words):
    t0 = time.monotonic()
    with pytest.raises(ChatTemplateLimit) as e:
        render(template, messages=MSGS)
    assert time.monotonic() - t0 < HANG_BOUND_S
    assert words in str(e.value), str(e.value)


@pytest.mark.parametrize("template, words", [
    ("{% for %}", "syntax error"), ("{{ 1/0 }}", "ZeroDivisionError"), ("{{ ''.__class__.__mro__ }}", "sandbox"),
    ("{{ lipsum(10**9) }}", "'lipsum' is undefined"), ("{{ raise_exception('no tools here') }}", "refused the messages"),
    ("{% include 'x.html' %}", "failed"),
])
def test_broken_templates_raise_the_packs_error(template, words):
    with pytest.raises(ChatTemplateError, match=words):
        render(template, messages=MSGS)


def test_render_chat_raises_the_limit_and_does_not_retry_it(monkeypatch):
    calls = []
    real = llm_template.render

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(llm_template, "render", counting)
    with pytest.raises(ChatTemplateLimit, match="repeated string"):
        render_chat("{{ 'x' * 10**11 }}", MSGS)
    assert len(calls) == 1
    # a template that refuses the system role still gets it folded (one retry)
    tpl = ("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
           "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}")
    assert render_chat(tpl, MSGS) == "[user]be brief\n\na fox"


# ------------------------------------------------------------------------------------------ fuzz

FRAGMENTS = [
    "{{", "}}", "{%", "%}", "{#", "#}", " ", "x", "'a'", '"b"', "1", "10", "99", "**", "*", "+", "-", "~", "%", "//",
    "/", "(", ")", "[", "]", ",", ".", ":", "|", "=", "==", "for", "in", "endfor", "if", "endif", "else", "set",
    "endset", "macro", "endmacro", "range(", "messages", "m", "loop.index", "center(", "indent(", "replace(",
    "join", "format(", "tojson", "wordwrap(", "batch(", "upper", "length", "list", "'%d'", "'{}'", ".format(",
    ".ljust(", ".replace(", "raise_exception(", "namespace(", "\n", "-%}", "{%-", "not", "and", "or", "is",
    "defined", "__class__", "_", "true", "none", "999999", "'x'*", "10**", "content", "role", "add_generation_prompt",
]

template_text = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=40).map("".join)

FUZZ_EXAMPLES = 200


@settings(max_examples=FUZZ_EXAMPLES, deadline=HANG_BOUND_S * 1000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(template=template_text)
def test_fuzz_renderer_returns_text_or_raises_its_own_error(template):
    t0 = time.monotonic()
    try:
        out = render(template, messages=MSGS, add_generation_prompt=True, bos_token="", eos_token="")
    except ChatTemplateError:
        pass
    else:
        assert isinstance(out, str) and len(out) <= llm_template.MAX_OUTPUT
    assert time.monotonic() - t0 < HANG_BOUND_S


@settings(max_examples=FUZZ_EXAMPLES // 2, deadline=HANG_BOUND_S * 1000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(template=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_fuzz_render_chat_on_any_text(template):
    try:
        out = render_chat(template, MSGS)
    except ChatTemplateError:
        return
    assert isinstance(out, str)
