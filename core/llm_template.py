"""Bounded rendering of GGUF / Hugging Face Jinja chat templates.  Pure logic.

A chat template is code that comes with a model file: a stranger's file.  Jinja's sandbox stops attribute tricks,
but not work: ``{{ 'x' * 10**11 }}`` asks for 100 GB, ``{{ 'x'|center(10**9) }}`` for 1 GB, and two nested loops
over ``range(100000)`` run for hours.  Here every operation that can make a big value is checked *before* it
runs (string/list repetition, ``+``, ``**``, printf ``%``, padding and replacing filters and methods, ``~``
concatenation), every step of a loop, call, filter and output counts against a step budget and a time budget,
and all text a template emits (into the result or into ``{% set %}`` blocks) counts against an output budget.
Anything past a budget, and any error inside the template, raises ``ChatTemplateError`` naming what was wrong.
"""
import re
import time

MAX_TEMPLATE_CHARS = 256 * 1024     # the template itself (real ones are under 20 KB)
MAX_STR = 1_000_000                 # any one string a template makes
MAX_ITEMS = 100_000                 # any one list/tuple a template makes
MAX_OUTPUT = 4_000_000              # all text emitted, captured blocks included
MAX_STEPS = 2_000_000               # loop iterations + calls + filters + outputs + operators
MAX_SECONDS = 5.0                   # wall time of one rendering
MAX_INT_BITS = 4096                 # integers a template computes
MAX_PAD = 10_000                    # widths in format strings, tojson indent


class ChatTemplateError(ValueError):
    """The model's chat template is broken, refused the messages, or asked for more than the budget."""


class ChatTemplateLimit(ChatTemplateError):
    """The template asked for more than a budget allows (size, steps, time)."""


class ChatTemplateRaised(ChatTemplateError):
    """The template itself called raise_exception (e.g. it does not accept a system message)."""


def raise_exception(message):
    raise ChatTemplateRaised(f"the chat template refused the messages: {str(message)[:300]}")


class _Budget:
    __slots__ = ("steps", "out", "t_end")

    def __init__(self):
        self.steps = 0
        self.out = 0
        self.t_end = time.monotonic() + MAX_SECONDS

    def step(self, n=1):
        self.steps += n
        if self.steps > MAX_STEPS:
            raise ChatTemplateLimit(f"the chat template takes more than {MAX_STEPS} steps (loops, calls, filters): "
                                    f"refused; a chat template only needs a few thousand")
        if not self.steps & 255 and time.monotonic() > self.t_end:
            raise ChatTemplateLimit(f"the chat template ran for more than {MAX_SECONDS:g} s: refused")


def _too_big(what, n, limit):
    return ChatTemplateLimit(f"the chat template asks for {what} of {n} (limit {limit}): refused; the template in "
                             f"this model file is broken or hostile, use another GGUF")


def _size(v):
    return len(v) if isinstance(v, (str, bytes, list, tuple, dict)) else 0


def _check_value(v, what="a value"):
    if isinstance(v, str) and len(v) > MAX_STR:
        raise _too_big(f"{what}: a string", f"{len(v)} characters", MAX_STR)
    if isinstance(v, (list, tuple, dict)) and len(v) > MAX_ITEMS:
        raise _too_big(f"{what}: a list", f"{len(v)} items", MAX_ITEMS)
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > MAX_INT_BITS:
        raise _too_big(f"{what}: a number", f"{v.bit_length()} bits", MAX_INT_BITS)
    return v


def _rendered_size(v):
    """About how many characters str(v) makes, walking containers without building the string; raises when more
    than MAX_STR (a list holding one 1 MB string 100,000 times is small in memory, 100 GB as text)."""
    total, seen, stack = 0, 0, [v]
    while stack:
        x = stack.pop()
        seen += 1
        if seen > 4 * MAX_ITEMS:
            raise _too_big("a value to print", f"more than {4 * MAX_ITEMS} parts", 4 * MAX_ITEMS)
        if isinstance(x, str):
            total += len(x) + 2
        elif isinstance(x, dict):
            total += 2 + 4 * len(x)
            if len(x) > MAX_ITEMS:
                raise _too_big("a dict to print", len(x), MAX_ITEMS)
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(x)
            if len(x) > MAX_ITEMS:
                raise _too_big("a list to print", len(x), MAX_ITEMS)
            stack.extend(x)
        else:
            total += 24
        if total > MAX_STR:
            raise _too_big("a value printed as text", f"more than {MAX_STR} characters", MAX_STR)
    return total


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


_PRINTF = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(fmt, args):
    """A printf-style format (``%`` operator, ``format`` filter): no ``*`` widths, widths <= MAX_PAD."""
    for m in _PRINTF.finditer(fmt):
        for g in m.groups():
            if g == "*":
                raise ChatTemplateLimit("the chat template uses a '*' width in a % format: refused")
            if g and len(g) > 5 or (g and int(g) > MAX_PAD):
                raise _too_big("a % format width", g, MAX_PAD)
    total = len(fmt) + _rendered_size(args)
    if total > MAX_STR:
        raise _too_big("a formatted string", f"{total} characters", MAX_STR)


_FORMAT_SPEC_NUM = re.compile(r"\d+")


def _check_format_spec(fmt):
    """str.format: no nested fields in a spec, every number in a spec <= MAX_PAD."""
    import string
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError as e:
        raise ChatTemplateError(f"the chat template has a bad format string: {e}") from None
    for _, _, spec, _ in fields:
        if spec and ("{" in spec or any(len(n) > 5 or int(n) > MAX_PAD for n in _FORMAT_SPEC_NUM.findall(spec))):
            raise _too_big("a format width", spec[:40], MAX_PAD)


def _binop_check(op, a, b):
    if op == "*":
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, list, tuple)) and _is_int(n):
                if len(seq) * max(n, 0) > (MAX_STR if isinstance(seq, str) else MAX_ITEMS):
                    raise _too_big("a repeated " + ("string" if isinstance(seq, str) else "list"),
                                   f"{len(seq)} x {n}", MAX_STR if isinstance(seq, str) else MAX_ITEMS)
        if _is_int(a) and _is_int(b) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise _too_big("a product", f"about {a.bit_length() + b.bit_length()} bits", MAX_INT_BITS)
    elif op == "**":
        if _is_int(a) and _is_int(b) and b > 0 and a not in (0, 1, -1):
            if b > MAX_INT_BITS or a.bit_length() * b > MAX_INT_BITS:
                raise _too_big("a power", f"{a.bit_length()}-bit ** {b}", f"{MAX_INT_BITS} bits")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not (_is_int(a) and _is_int(b)):
            if abs(b) > 10_000:
                raise _too_big("a power's exponent", b, 10_000)
    elif op == "+":
        if isinstance(a, (str, list, tuple)) and isinstance(b, (str, list, tuple)):
            limit = MAX_STR if isinstance(a, str) else MAX_ITEMS
            if len(a) + len(b) > limit:
                raise _too_big("a joined value", len(a) + len(b), limit)
    elif op == "%":
        if isinstance(a, str):
            _check_printf(a, b)


def _join_size(seq, sep):
    total, n = 0, 0
    for item in seq:
        n += 1
        total += len(item) if isinstance(item, str) else (len(str(item)) if isinstance(item, (int, float)) else 8)
        if total + n * len(sep) > MAX_STR or n > MAX_ITEMS:
            raise _too_big("a joined string", f"more than {MAX_STR} characters", MAX_STR)


_STR_METHODS_PAD = {"center", "ljust", "rjust", "zfill"}
_STR_METHODS_FORBIDDEN = {"expandtabs", "translate", "maketrans", "encode"}


def _check_call(obj, args, kwargs):
    """Pre-checks for methods of str that can make a big string from a small one."""
    target = getattr(obj, "__wrapped__", obj)  # jinja >= 3.1.5 hands out str.format wrapped
    owner = getattr(target, "__self__", None)
    name = getattr(target, "__name__", "")
    if isinstance(owner, str):
        if name in _STR_METHODS_FORBIDDEN:
            raise ChatTemplateLimit(f"the chat template calls str.{name}, which Lean does not allow in templates")
        if name in _STR_METHODS_PAD and args and _is_int(args[0]) and args[0] > MAX_STR:
            raise _too_big(f"str.{name}", args[0], MAX_STR)
        if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            count = owner.count(args[0]) if args[0] else len(owner) + 1
            if len(owner) + count * max(0, len(args[1]) - len(args[0])) > MAX_STR:
                raise _too_big("str.replace's result", "more characters", MAX_STR)
        if name == "join" and args:
            seq = args[0]
            if isinstance(seq, (list, tuple, str)):
                _join_size(seq, owner)
        if name in ("format", "format_map"):
            _check_format_spec(owner)


def _guard_filter(name, fn):
    import functools

    def pre(args, kwargs):
        value = args[0] if args else None
        rest = list(args[1:])
        if not isinstance(value, str):
            _rendered_size(value)
        if name in ("batch", "slice"):
            n = rest[0] if rest else kwargs.get("linecount", kwargs.get("slices"))
            if _is_int(n) and n > MAX_ITEMS:
                raise _too_big(f"the {name} filter's count", n, MAX_ITEMS)
        if name == "center":
            width = rest[0] if rest else kwargs.get("width", 80)
            if _is_int(width) and width > MAX_STR:
                raise _too_big("the center filter's width", width, MAX_STR)
        elif name == "indent":
            width = rest[0] if rest else kwargs.get("width", 4)
            w = len(width) if isinstance(width, str) else (width if _is_int(width) else 0)
            lines = str(value).count("\n") + 1 if value is not None else 1
            if w * lines > MAX_STR:
                raise _too_big("the indent filter's result", f"{w} x {lines} lines", MAX_STR)
        elif name == "wordwrap":
            width = rest[0] if rest else kwargs.get("width", 79)
            wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring") or "\n"
            n = len(str(value)) if value is not None else 0
            if _is_int(width) and width < 1:
                raise ChatTemplateLimit("the chat template's wordwrap width is below 1")
            if isinstance(wrap, str) and n * (1 + len(wrap)) > MAX_STR:
                raise _too_big("the wordwrap filter's result", n * (1 + len(wrap)), MAX_STR)
        elif name == "replace":
            if isinstance(value, str) and len(rest) >= 2:
                old, new = str(rest[0]), str(rest[1])
                count = value.count(old) if old else len(value) + 1
                if len(value) + count * max(0, len(new) - len(old)) > MAX_STR:
                    raise _too_big("the replace filter's result", "more characters", MAX_STR)
        elif name == "join":
            sep = rest[0] if rest else kwargs.get("d", "")
            if isinstance(value, (list, tuple, str)):
                _join_size(value, sep if isinstance(sep, str) else "")
        elif name == "format":
            if isinstance(value, str):
                _check_printf(value, tuple(rest))
        elif name == "tojson":
            indent = rest[0] if rest else kwargs.get("indent")
            if indent is not None and (not _is_int(indent) or indent > 64):
                raise _too_big("tojson's indent", indent, 64)
        elif name == "truncate":
            end = rest[2] if len(rest) > 2 else kwargs.get("end", "...")
            if isinstance(end, str) and len(end) > MAX_STR:
                raise _too_big("truncate's end", len(end), MAX_STR)

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        budget = _current()
        budget.step()
        pre(args[1:] if getattr(fn, "jinja_pass_arg", None) else args, kwargs)
        return _check_value(fn(*args, **kwargs), f"the {name} filter's result")

    return guarded


_FORBIDDEN_FILTERS = {"urlize", "pprint", "filesizeformat", "xmlattr"}

_STATE = []  # the budget of the rendering in progress (a stack; renders are short and synchronous)


def _current():
    import threading
    me = threading.get_ident()
    for ident, budget in reversed(_STATE):
        if ident == me:
            return budget
    return _Budget()  # compile-time constant folding outside a render: a fresh budget


def _environment():
    from jinja2 import nodes  # noqa: F401
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Env(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "+", "%", "//"])

        def call_binop(self, context, operator, left, right):
            _current().step()
            _binop_check(operator, left, right)
            return _check_value(super().call_binop(context, operator, left, right), f"'{operator}'")

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
            _current().step()
            _check_call(__obj, args, kwargs)
            return _check_value(super().call(__context, __obj, *args, **kwargs), "a call's result")

        def getattr(self, obj, attribute):
            _current().step()
            return super().getattr(obj, attribute)

        def getitem(self, obj, argument):
            _current().step()
            return super().getitem(obj, argument)

    env = Env(trim_blocks=True, lstrip_blocks=True)
    filters = {}
    for name, fn in env.filters.items():
        if name in _FORBIDDEN_FILTERS:
            continue
        filters[name] = _guard_filter(name, fn)
    env.filters.clear()
    env.filters.update(filters)
    for name in ("lipsum", "cycler", "joiner"):
        env.globals.pop(name, None)
    safe_range = env.globals["range"]  # the sandbox's range (at most MAX_RANGE items)
    env.globals["range"] = lambda *a: _Counted(iter(safe_range(*a)), _current())  # counted even in `loop(...)`
    env.globals["raise_exception"] = raise_exception
    env.globals["__lean_iter"] = _lean_iter
    env.globals["__lean_concat"] = _lean_concat
    env.globals["__lean_out"] = _lean_out
    return env


def _lean_iter(iterable):
    budget = _current()
    if isinstance(iterable, (str, list, tuple, dict)) and len(iterable) > MAX_ITEMS and not isinstance(iterable, str):
        raise _too_big("a loop", f"{len(iterable)} items", MAX_ITEMS)
    try:
        it = iter(iterable)
    except TypeError:
        return iterable  # jinja raises its own error for a non-iterable
    return _Counted(it, budget)


class _Counted:
    __slots__ = ("it", "budget")

    def __init__(self, it, budget):
        self.it, self.budget = it, budget

    def __iter__(self):
        return self

    def __next__(self):
        self.budget.step()
        return next(self.it)


def _lean_concat(*parts):
    total = 0
    for p in parts:
        total += len(p) if isinstance(p, str) else _rendered_size(p)
        if total > MAX_STR:
            raise _too_big("a '~' concatenation", f"more than {MAX_STR} characters", MAX_STR)
    _current().step()
    return "".join(str(p) for p in parts)


def _lean_out(value):
    budget = _current()
    budget.step()
    budget.out += len(value) if isinstance(value, str) else _rendered_size(value)
    if budget.out > MAX_OUTPUT:
        raise _too_big("output", f"more than {MAX_OUTPUT} characters", MAX_OUTPUT)
    return value


def _instrument(tree):
    """Route every loop's iterable, every '~' and every emitted value through the budget counters."""
    from jinja2 import nodes
    from jinja2.visitor import NodeTransformer

    def call(name, args, lineno):
        return nodes.Call(nodes.Name(name, "load", lineno=lineno), args, [], None, None, lineno=lineno)

    class Instrument(NodeTransformer):
        def visit_For(self, node):
            node = self.generic_visit(node)
            node.iter = call("__lean_iter", [node.iter], node.lineno)
            return node

        def visit_Concat(self, node):
            node = self.generic_visit(node)
            return call("__lean_concat", list(node.nodes), node.lineno)

        def visit_Output(self, node):
            node = self.generic_visit(node)
            node.nodes = [n if isinstance(n, nodes.TemplateData) else call("__lean_out", [n], n.lineno)
                          for n in node.nodes]
            return node

    return Instrument().visit(tree)


def render(template, **context):
    """Render ``template`` with ``context`` within the budgets above.  Raises ChatTemplateError, never another
    exception type (for ``raise_exception`` inside the template too)."""
    import threading
    from jinja2 import TemplateError, TemplateSyntaxError
    from jinja2.exceptions import SecurityError
    if not isinstance(template, str):
        raise ChatTemplateError(f"the chat template is not text ({type(template).__name__})")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ChatTemplateLimit(f"the chat template is {len(template)} characters (limit {MAX_TEMPLATE_CHARS}): "
                                f"refused; use another GGUF")
    budget = _Budget()
    entry = (threading.get_ident(), budget)
    _STATE.append(entry)
    try:
        env = _environment()
        env.globals.update(context.pop("_globals", {}))
        tree = _instrument(env.parse(template))
        tpl = env.from_string(tree)
        out, n = [], 0
        for piece in tpl.generate(**context):
            n += len(piece)
            if n > MAX_OUTPUT:
                raise _too_big("output", f"more than {MAX_OUTPUT} characters", MAX_OUTPUT)
            out.append(piece)
        return "".join(out)
    except ChatTemplateError:
        raise
    except TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template has a syntax error (line {e.lineno}): {e.message}") from None
    except SecurityError as e:
        raise ChatTemplateError(f"the chat template tried something the sandbox forbids: {e}") from None
    except TemplateError as e:
        raise ChatTemplateError(f"the chat template failed: {type(e).__name__}: {str(e)[:300]}") from None
    except RecursionError:
        raise ChatTemplateLimit("the chat template recursed too deeply: refused") from None
    except MemoryError:
        raise ChatTemplateLimit("the chat template ran out of memory: refused") from None
    except Exception as e:  # anything a template can raise: TypeError, ZeroDivisionError, OverflowError...
        raise ChatTemplateError(f"the chat template failed: {type(e).__name__}: {str(e)[:300]}") from None
    finally:
        _STATE.remove(entry)
