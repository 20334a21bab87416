"""Prompt lists and wildcards: turn a multi-line template into N concrete prompts.

Pure logic (no ComfyUI imports).  Syntax, per line of the template:

    {a|b|c}            one of the options
    {2$$a|b|c}         two different options, joined by ", "
    {1-3$$a|b|c}       one to three options
    {2$$ and $$a|b|c}  two options joined by " and "
    {0.3::a|b}         weighted: a has weight 0.3, b the default 1
    __name__           one line of <wildcards>/name.txt   (__dir/name__ for nested folders)
    \\{ \\} \\| \\_ \\$     a literal character (other backslashes are kept, so ComfyUI's \\( stays)

Options and wildcard lines nest freely.  A wildcard that (directly or through others) refers to
itself is refused up front, whatever the seed, with the cycle named.

Determinism: prompt i of a run depends only on (seed, i, template, wildcard files).  Every prompt
gets its own ``random.Random("<seed>/<i>")`` (string seeds go through SHA-512 in CPython, so the
stream is the same on every platform and Python >= 3.2; ``hash()`` is never used).
"""
from __future__ import annotations

import difflib
import itertools
import os
import random
import re
from dataclasses import dataclass, field

MODES = ("lines", "random", "combinatorial")
MAX_NESTING = 32
ESCAPABLE = "{}|_$\\"
WILDCARD_EXTENSIONS = (".txt",)

_NAME_RE = re.compile(r"__(?P<name>[^\s{}|]+?)__")
_PICK_RE = re.compile(r"\s*(?P<lo>\d+)?\s*(?:-\s*(?P<hi>\d+)\s*)?\$\$(?:(?P<sep>[^{}|$]*)\$\$)?")
_WEIGHT_RE = re.compile(r"\s*(?P<w>\d+(?:\.\d*)?|\.\d+)\s*::")


class PromptSyntaxError(ValueError):
    """The template cannot be parsed (unbalanced braces, bad pick count...)."""


class WildcardError(ValueError):
    """Unknown wildcard, refused wildcard name, cycle, too deep nesting."""


class WildcardNotFound(WildcardError, FileNotFoundError):
    pass


class CombinatorialExplosion(ValueError):
    pass


# ----------------------------------------------------------------------------- syntax tree

@dataclass
class Text:
    text: str


@dataclass
class Seq:
    parts: list = field(default_factory=list)


@dataclass
class Choice:
    options: list            # [Seq]
    weights: list            # [float]
    lo: int | None = None    # None: pick exactly one
    hi: int | None = None
    sep: str = ", "


@dataclass
class Wildcard:
    name: str


class _Parser:
    def __init__(self, text, where):
        self.s = text
        self.i = 0
        self.where = where

    def error(self, msg):
        return PromptSyntaxError(f"{self.where}: {msg} (at character {self.i + 1} of {self.s!r})")

    def parse(self):
        seq = self.seq(top=True)
        return seq

    def seq(self, top=False):
        parts, buf = [], []
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == "\\" and self.i + 1 < len(s) and s[self.i + 1] in ESCAPABLE:
                buf.append(s[self.i + 1])
                self.i += 2
            elif c == "{":
                if buf:
                    parts.append(Text("".join(buf)))
                    buf = []
                parts.append(self.choice())
            elif c == "}" and top:
                raise self.error("'}' without a matching '{'; write \\} for a literal brace")
            elif (c == "}" or c == "|") and not top:
                break
            elif c == "_" and s.startswith("__", self.i):
                m = _NAME_RE.match(s, self.i)
                if m:
                    if buf:
                        parts.append(Text("".join(buf)))
                        buf = []
                    parts.append(Wildcard(m.group("name")))
                    self.i = m.end()
                else:
                    buf.append(c)
                    self.i += 1
            else:
                buf.append(c)
                self.i += 1
        if buf:
            parts.append(Text("".join(buf)))
        return Seq(parts)

    def choice(self):
        start = self.i
        self.i += 1  # '{'
        lo = hi = None
        sep = ", "
        m = _PICK_RE.match(self.s, self.i)
        if m:
            if m.group("lo") is None and m.group("hi") is None:
                raise self.error("'$$' needs a count before it, e.g. {2$$a|b|c}")
            lo = int(m.group("lo") or 1)
            hi = int(m.group("hi")) if m.group("hi") is not None else lo
            if hi < lo:
                raise self.error(f"pick range {lo}-{hi} is backwards")
            if m.group("sep") is not None:
                sep = m.group("sep")
            self.i = m.end()
        options, weights = [], []
        while True:
            w = 1.0
            wm = _WEIGHT_RE.match(self.s, self.i)
            if wm:
                w = float(wm.group("w"))
                self.i = wm.end()
            options.append(self.seq())
            weights.append(w)
            if self.i >= len(self.s):
                self.i = start
                raise self.error("'{' is never closed; add '}' or write \\{ for a literal brace")
            c = self.s[self.i]
            self.i += 1
            if c == "}":
                break
            # c == '|': next option
        if lo is not None and lo > len(options):
            self.i = start
            raise self.error(f"asks for {lo} options but only {len(options)} are given")
        if lo is None and not any(weights):
            self.i = start
            raise self.error("every option has weight 0")
        return Choice(options, weights, lo, hi, sep)


def parse(text, where="prompt"):
    """Parse one template line into a syntax tree (raises PromptSyntaxError)."""
    return _Parser(text, where).parse()


# ----------------------------------------------------------------------------- wildcard files

_SAFE_NAME = re.compile(r"^[\w\- .]+(/[\w\- .]+)*$")


def split_lines(text):
    """Prompt lines of a text: stripped, blank lines and '#' comments dropped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


class WildcardStore:
    """Resolves ``__name__`` to lines of ``name.txt`` inside the given root folders (first match wins).

    Names are refused unless they are plain relative paths ('/'-separated words, no '..', no
    absolute path, no backslash), and the resolved file must lie inside its root (a symlink that
    leads out of the registered folders is refused too)."""

    def __init__(self, roots):
        self.roots = [os.path.abspath(r) for r in roots if r]
        self._cache = {}

    @staticmethod
    def check_name(name):
        bad = (not _SAFE_NAME.match(name) or any(p in ("", ".", "..") for p in name.split("/"))
               or name.startswith("/"))
        if bad:
            raise WildcardError(
                f"wildcard name __{name}__ is refused: use a plain name such as __colors__ or __dir/colors__ "
                "(letters, digits, '_', '-', '.', spaces, '/' between folders; no '..' and no absolute paths)")

    def names(self):
        """Every wildcard name available (sorted)."""
        found = set()
        for root in self.roots:
            if not os.path.isdir(root):
                continue
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                dirnames.sort()
                for f in filenames:
                    stem, ext = os.path.splitext(f)
                    if ext.lower() in WILDCARD_EXTENSIONS:
                        rel = os.path.relpath(os.path.join(dirpath, stem), root)
                        found.add(rel.replace(os.sep, "/"))
        return sorted(found)

    def path(self, name):
        self.check_name(name)
        for root in self.roots:
            for ext in WILDCARD_EXTENSIONS:
                p = os.path.join(root, *name.split("/")) + ext
                if os.path.isfile(p):
                    real_root = os.path.realpath(root)
                    real = os.path.realpath(p)
                    if os.path.commonpath([real_root, real]) != real_root:
                        raise WildcardError(f"wildcard __{name}__ resolves to {real}, outside the wildcards "
                                            f"folder {root}; copy the file into the folder instead of linking it")
                    return p
        close = difflib.get_close_matches(name, self.names(), n=5, cutoff=0.5)
        hint = f" Close matches: {', '.join('__%s__' % c for c in close)}." if close else ""
        where = ", ".join(self.roots) if self.roots else "(no wildcards folder registered)"
        raise WildcardNotFound(f"unknown wildcard __{name}__: no {name}.txt in {where}.{hint}")

    def lines(self, name):
        """Parsed lines of wildcard `name` (cached)."""
        if name not in self._cache:
            p = self.path(name)
            with open(p, encoding="utf-8-sig") as f:
                raw = split_lines(f.read())
            if not raw:
                raise WildcardError(f"wildcard __{name}__ ({p}) has no lines (blank lines and # comments "
                                    "are ignored); add one option per line")
            self._cache[name] = [parse(line, where=f"wildcard __{name}__ line {k + 1}") for k, line in enumerate(raw)]
        return self._cache[name]


class _NoWildcards(WildcardStore):
    def __init__(self):
        super().__init__([])


# ----------------------------------------------------------------------------- checks

def check_cycles(tree, store, stack=()):
    """Raise WildcardError if any reachable wildcard refers back to itself (seed-independent)."""
    done = set()

    def visit(node, stack):
        if isinstance(node, Text):
            return
        if isinstance(node, Seq):
            for p in node.parts:
                visit(p, stack)
        elif isinstance(node, Choice):
            for o in node.options:
                visit(o, stack)
        elif isinstance(node, Wildcard):
            name = node.name
            if name in stack:
                cycle = " -> ".join(f"__{n}__" for n in stack[stack.index(name):] + (name,))
                raise WildcardError(f"wildcard cycle: {cycle}; remove the reference that leads back")
            if len(stack) >= MAX_NESTING:
                raise WildcardError(f"wildcards nest deeper than {MAX_NESTING}: "
                                    + " -> ".join(f"__{n}__" for n in stack + (name,)))
            if name in done:
                return
            for line in store.lines(name):
                visit(line, stack + (name,))
            done.add(name)

    visit(tree, tuple(stack))


# ----------------------------------------------------------------------------- random expansion

def _weighted_index(rng, weights):
    total = sum(weights)
    if total <= 0:
        return rng.randrange(len(weights))
    x = rng.random() * total
    acc = 0.0
    for k, w in enumerate(weights):
        acc += w
        if x < acc:
            return k
    return len(weights) - 1


def _sample(rng, weights, k):
    """k distinct indices, drawn with probability proportional to weight (0-weight last)."""
    idx = list(range(len(weights)))
    w = list(weights)
    out = []
    for _ in range(k):
        if sum(w) > 0:
            j = _weighted_index(rng, w)
        else:
            j = rng.randrange(len(idx))
        out.append(idx.pop(j))
        w.pop(j)
    return out


def expand_random(node, rng, store):
    if isinstance(node, Text):
        return node.text
    if isinstance(node, Seq):
        return "".join(expand_random(p, rng, store) for p in node.parts)
    if isinstance(node, Choice):
        if node.lo is None:
            return expand_random(node.options[_weighted_index(rng, node.weights)], rng, store)
        k = rng.randint(node.lo, min(node.hi, len(node.options)))
        picked = [expand_random(node.options[j], rng, store) for j in _sample(rng, node.weights, k)]
        return node.sep.join(p for p in picked)
    if isinstance(node, Wildcard):
        lines = store.lines(node.name)
        return expand_random(lines[rng.randrange(len(lines))], rng, store)
    raise TypeError(node)


# ----------------------------------------------------------------------------- combinatorial expansion

def _elementary_symmetric(values, kmax):
    """e_0..e_kmax of values: number of ways to pick k options times their own variants."""
    e = [1] + [0] * kmax
    for v in values:
        for k in range(kmax, 0, -1):
            e[k] += e[k - 1] * v
    return e


def count_combinations(node, store):
    if isinstance(node, Text):
        return 1
    if isinstance(node, Seq):
        n = 1
        for p in node.parts:
            n *= count_combinations(p, store)
        return n
    if isinstance(node, Choice):
        counts = [count_combinations(o, store) for o in node.options]
        if node.lo is None:
            return sum(counts)
        hi = min(node.hi, len(counts))
        e = _elementary_symmetric(counts, hi)
        return sum(e[node.lo:hi + 1])
    if isinstance(node, Wildcard):
        return sum(count_combinations(l, store) for l in store.lines(node.name))
    raise TypeError(node)


def iter_combinations(node, store):
    """Every expansion, in order (first option first, rightmost part varying fastest)."""
    if isinstance(node, Text):
        yield node.text
    elif isinstance(node, Seq):
        if not node.parts:
            yield ""
            return
        pools = [_Lazy(p, store) for p in node.parts]
        for combo in itertools.product(*pools):
            yield "".join(combo)
    elif isinstance(node, Choice):
        if node.lo is None:
            for o in node.options:
                yield from iter_combinations(o, store)
        else:
            hi = min(node.hi, len(node.options))
            for k in range(node.lo, hi + 1):
                for subset in itertools.combinations(node.options, k):
                    for combo in itertools.product(*[_Lazy(o, store) for o in subset]):
                        yield node.sep.join(combo)
    elif isinstance(node, Wildcard):
        for line in store.lines(node.name):
            yield from iter_combinations(line, store)
    else:
        raise TypeError(node)


class _Lazy:
    """Re-iterable view of a node's combinations (itertools.product materialises its inputs;
    the count check before enumeration keeps that bounded)."""

    def __init__(self, node, store):
        self.node, self.store = node, store

    def __iter__(self):
        return iter_combinations(self.node, self.store)


# ----------------------------------------------------------------------------- public API

def join_parts(prefix, prompt, suffix):
    """prefix, prompt, suffix joined by ', ' (empty parts skipped)."""
    return ", ".join(p.strip() for p in (prefix, prompt, suffix) if p and p.strip())


def rng_for(seed, index):
    """The random stream of prompt `index` (platform-stable: str seeds are hashed with SHA-512)."""
    return random.Random(f"lean-prompt-batch/{int(seed)}/{int(index)}")


def expand(text, mode="lines", count=16, seed=0, prefix="", suffix="", wildcard_roots=(), store=None):
    """The prompts of a template.

    lines:          one prompt per line (count is ignored), wildcards drawn with the seed
    random:         `count` prompts, each from a line picked at random, wildcards drawn
    combinatorial:  every combination of every line, in order; more than `count` is an error
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    count = int(count)
    if count < 1:
        raise ValueError(f"count must be at least 1 (got {count})")
    lines = split_lines(text or "")
    if not lines:
        raise ValueError("no prompt: the text is empty (blank lines and # comments are ignored); "
                         "write one prompt per line")
    store = store if store is not None else WildcardStore(wildcard_roots)
    trees = [parse(l, where=f"line {k + 1}") for k, l in enumerate(lines)]
    pre = parse(prefix or "", where="prefix")
    suf = parse(suffix or "", where="suffix")
    for t in trees + [pre, suf]:
        check_cycles(t, store)

    if mode == "combinatorial":
        total = 0
        for t in trees:
            total += count_combinations(Seq([pre, t, suf]), store)
        if total > count:
            raise CombinatorialExplosion(
                f"combinatorial mode would make {total} prompts, more than count={count}; raise count to "
                f"{total} (if you mean it), remove options, or use mode 'random' to draw {count} of them")
        out = []
        for t in trees:
            pools = [list(iter_combinations(x, store)) for x in (pre, suf)]
            for body in iter_combinations(t, store):
                for p in pools[0]:
                    for s in pools[1]:
                        out.append(join_parts(p, body, s))
        return out

    out = []
    n = len(trees) if mode == "lines" else count
    for i in range(n):
        rng = rng_for(seed, i)
        tree = trees[i] if mode == "lines" else trees[rng.randrange(len(trees))]
        body = expand_random(tree, rng, store)
        out.append(join_parts(expand_random(pre, rng, store), body, expand_random(suf, rng, store)))
    return out


def count_prompts(text, mode="lines", count=16, wildcard_roots=(), store=None, prefix="", suffix=""):
    """How many prompts `expand` would make (combinatorial: the full total, even past the cap).
    Every line is parsed and its wildcards checked, so a bad template raises here too."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    lines = split_lines(text or "")
    store = store if store is not None else WildcardStore(wildcard_roots)
    pre, suf = parse(prefix or "", "prefix"), parse(suffix or "", "suffix")
    trees = [parse(l, where=f"line {k + 1}") for k, l in enumerate(lines)]
    for t in trees + [pre, suf]:
        check_cycles(t, store)
    if mode == "lines":
        return len(trees)
    if mode == "random":
        return int(count) if trees else 0
    return sum(count_combinations(Seq([pre, t, suf]), store) for t in trees)
