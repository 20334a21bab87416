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
import math
import os
import random
import re
from dataclasses import dataclass, field

MODES = ("lines", "random", "combinatorial")
MAX_NESTING = 32              # wildcards inside wildcards
MAX_BRACE_DEPTH = 100         # {...} inside {...} within one line
MAX_TEXT_CHARS = 1 << 20      # characters of a template (text + text_file), of prefix, suffix, one wildcard file
MAX_PROMPTS = 4096            # prompts of one run, in every mode (the node's `count` maximum)
MAX_SEED = 0xffffffffffffffff
EXPANSION_BUDGET = 4_000_000  # steps of one run: characters written plus options and wildcards visited
COUNT_CAP = 10 ** 15          # counts saturate here: a count of COUNT_CAP means "at least COUNT_CAP"
MAX_PICK_WORK = 4_000_000     # options x pick size a multi-pick may need to be counted
MAX_NAME_CHARS = 1000         # characters of a wildcard name
CANCEL_EVERY = 4096           # steps between two checks of Cancel
ESCAPABLE = "{}|_$\\"
WILDCARD_EXTENSIONS = (".txt",)

_NAME_RE = re.compile(r"__(?P<name>[^\s{}|]+?)__")
# The pick prefix `lo-hi$$sep$$` and the weight prefix `w::` are read by hand, each piece with a regex made of
# one greedy character class (which has nothing to backtrack into), so reading them is linear in the input.
# (A single regex `\s*(\d+)?\s*...` is quadratic on whitespace: the two \s* split a run of spaces every way.)
_SPACES = re.compile(r"\s*")
_DIGITS = re.compile(r"\d*")
_SEP = re.compile(r"[^{}|$]*")
_SPECIAL = re.compile(r"[\\{}|_]")
_BIG = 10 ** 18               # pick counts with more digits are read as this (always more than the options)


class PromptSyntaxError(ValueError):
    """The template cannot be parsed (unbalanced braces, bad pick count, braces nested too deep...)."""


class WildcardError(ValueError):
    """Unknown wildcard, refused wildcard name, cycle, too deep nesting."""


class WildcardNotFound(WildcardError, FileNotFoundError):
    pass


class CombinatorialExplosion(ValueError):
    pass


class PromptBudgetError(ValueError):
    """A limit of the expansion was reached: text length, prompt count, expansion budget."""


class _Budget:
    """Steps left to one run (characters written plus nodes visited), with Cancel checked every CANCEL_EVERY
    steps.  Raises PromptBudgetError naming the budget when it is spent."""

    def __init__(self, limit=EXPANSION_BUDGET, cancel=None):
        self.left = self.limit = limit
        self.cancel = cancel
        self._until_check = CANCEL_EVERY

    def spend(self, n=1):
        self.left -= n
        if self.left < 0:
            raise PromptBudgetError(
                f"expanding these prompts takes more than {self.limit:,} steps (characters written plus options "
                "and wildcards visited), the expansion budget; use fewer or smaller wildcards and multi-picks, "
                "or fewer prompts")
        self._until_check -= n
        if self._until_check <= 0:
            self._until_check = CANCEL_EVERY
            if self.cancel is not None:
                self.cancel()


def _snippet(s, i, width=60):
    """`s` as repr, or for a long text a window around position i."""
    if len(s) <= 3 * width:
        return repr(s)
    a, b = max(0, i - width), min(len(s), i + width)
    return f"{'...' if a else ''}{s[a:b]!r}{'...' if b < len(s) else ''} ({len(s):,} characters)"


def check_length(text, what):
    """Refuse a text longer than MAX_TEXT_CHARS (PromptBudgetError naming the limit)."""
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise PromptBudgetError(f"{what} has {len(text):,} characters, more than the limit of {MAX_TEXT_CHARS:,}; "
                                "split it into smaller texts or wildcard files")
    return text


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


def _number(digits):
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < 18 else _BIG


class _Parser:
    """One left-to-right scan; open braces live on an explicit stack (no recursion), at most MAX_BRACE_DEPTH."""

    def __init__(self, text, where):
        self.s = text
        self.i = 0
        self.where = where

    def error(self, msg):
        return PromptSyntaxError(f"{self.where}: {msg} (at character {self.i + 1} of {_snippet(self.s, self.i)})")

    def parse(self):
        s, n = self.s, len(self.s)
        stack = []          # open choices: [start, lo, hi, sep, options, weights, parts of the enclosing seq]
        parts, buf = [], []
        i = 0
        while True:
            m = _SPECIAL.search(s, i)
            j = m.start() if m else n
            if j > i:
                buf.append(s[i:j])
            if j >= n:
                break
            c = s[j]
            if c == "\\":
                if j + 1 < n and s[j + 1] in ESCAPABLE:
                    buf.append(s[j + 1])
                    i = j + 2
                else:
                    buf.append(c)
                    i = j + 1
            elif c == "{":
                if buf:
                    parts.append(Text("".join(buf)))
                    buf = []
                if len(stack) >= MAX_BRACE_DEPTH:
                    self.i = j
                    raise self.error(f"braces nest deeper than {MAX_BRACE_DEPTH} levels (the limit); "
                                     "flatten the choices or move inner ones into a __wildcard__ file")
                lo, hi, sep, i = self.pick(j + 1)
                w, i = self.weight(i)
                stack.append([j, lo, hi, sep, [], [w], parts])
                parts = []
            elif c == "}" and not stack:
                self.i = j
                raise self.error("'}' without a matching '{'; write \\} for a literal brace")
            elif c == "|" and not stack:
                buf.append(c)
                i = j + 1
            elif c == "}" or c == "|":
                if buf:
                    parts.append(Text("".join(buf)))
                    buf = []
                frame = stack[-1]
                frame[4].append(Seq(parts))
                parts = []
                if c == "|":
                    w, i = self.weight(j + 1)
                    frame[5].append(w)
                else:
                    stack.pop()
                    parts = frame[6]
                    parts.append(self.finish(frame))
                    i = j + 1
            else:  # "_"
                wm = _NAME_RE.match(s, j) if s.startswith("__", j) else None
                if wm:
                    if buf:
                        parts.append(Text("".join(buf)))
                        buf = []
                    parts.append(Wildcard(wm.group("name")))
                    i = wm.end()
                else:
                    buf.append(c)
                    i = j + 1
        if buf:
            parts.append(Text("".join(buf)))
        if stack:
            self.i = stack[-1][0]
            raise self.error("'{' is never closed; add '}' or write \\{ for a literal brace")
        return Seq(parts)

    def pick(self, k):
        """The optional `lo-hi$$sep$$` after '{' at k: (lo, hi, sep, position after it)."""
        s = self.s
        if k >= len(s) or not (s[k] in "$-" or s[k].isspace() or s[k].isdecimal()):
            return None, None, ", ", k
        p = _SPACES.match(s, k).end()
        q = _DIGITS.match(s, p).end()
        lo_s = s[p:q] or None
        p = _SPACES.match(s, q).end()
        hi_s = None
        if s.startswith("-", p):
            a = _SPACES.match(s, p + 1).end()
            b = _DIGITS.match(s, a).end()
            if b == a:
                return None, None, ", ", k
            hi_s = s[a:b]
            p = _SPACES.match(s, b).end()
        if not s.startswith("$$", p):
            return None, None, ", ", k
        p += 2
        sep = ", "
        e = _SEP.match(s, p).end()
        if s.startswith("$$", e):
            sep = s[p:e]
            p = e + 2
        self.i = k
        if lo_s is None and hi_s is None:
            raise self.error("'$$' needs a count before it, e.g. {2$$a|b|c}")
        lo = _number(lo_s or "1")
        hi = _number(hi_s) if hi_s is not None else lo
        if hi < lo:
            raise self.error(f"pick range {lo}-{hi} is backwards")
        return lo, hi, sep, p

    def weight(self, k):
        """The optional `w::` at k: (weight, position after it)."""
        s = self.s
        if k >= len(s) or not (s[k] == "." or s[k].isspace() or s[k].isdecimal()):
            return 1.0, k
        p = _SPACES.match(s, k).end()
        if p >= len(s) or not (s[p] == "." or s[p].isdecimal()):
            return 1.0, k
        q = _DIGITS.match(s, p).end()
        if q > p:
            if s.startswith(".", q):
                q = _DIGITS.match(s, q + 1).end()
        elif s.startswith(".", p):
            q = _DIGITS.match(s, p + 1).end()
            if q == p + 1:
                return 1.0, k
        else:
            return 1.0, k
        r = _SPACES.match(s, q).end()
        if not s.startswith("::", r):
            return 1.0, k
        return float(s[p:q]), r + 2

    def finish(self, frame):
        start, lo, hi, sep, options, weights, _ = frame
        if lo is not None and lo > len(options):
            self.i = start
            many = f"{lo}" if lo < _BIG else f"more than {_BIG:,}"
            raise self.error(f"asks for {many} options but only {len(options)} are given")
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
        bad = (len(name) > MAX_NAME_CHARS or not _SAFE_NAME.match(name) or any(p in ("", ".", "..") for p in name.split("/"))
               or name.startswith("/"))
        if bad:
            shown = name if len(name) <= 80 else name[:80] + "..."
            raise WildcardError(
                f"wildcard name __{shown}__ is refused: use a plain name such as __colors__ or __dir/colors__ "
                "(letters, digits, '_', '-', '.', spaces, '/' between folders; no '..' and no absolute paths; "
                f"at most {MAX_NAME_CHARS} characters)")

    @staticmethod
    def inside(root, path):
        """True when `path`'s real path (links resolved) lies inside `root`'s: the rule for every wildcard file read."""
        return WildcardStore.real_inside(os.path.realpath(root), os.path.realpath(path))

    @staticmethod
    def real_inside(real_root, real_path):
        """inside() for paths already resolved (a walk resolves its folder once, each file once)."""
        return os.path.commonpath([real_root, real_path]) == real_root

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
                    if not self.inside(root, p):
                        raise WildcardError(f"wildcard __{name}__ is a link that leads outside the wildcards "
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
                data = f.read(MAX_TEXT_CHARS + 1)
            check_length(data, f"wildcard __{name}__")
            raw = split_lines(data)
            if not raw:
                raise WildcardError(f"wildcard __{name}__ ({p}) has no lines (blank lines and # comments "
                                    "are ignored); add one option per line")
            self._cache[name] = [parse(line, where=f"wildcard __{name}__ line {k + 1}") for k, line in enumerate(raw)]
        return self._cache[name]


class _NoWildcards(WildcardStore):
    def __init__(self):
        super().__init__([])


# ----------------------------------------------------------------------------- walking the tree
#
# Every walk below keeps its own stack (no Python recursion), so nesting depth is bounded only by the limits
# above, never by the interpreter's recursion limit.

def _children(node, store):
    if isinstance(node, Seq):
        return node.parts
    if isinstance(node, Choice):
        if node.lo is not None and min(node.hi, len(node.options)) == 0:
            return ()           # {0$$...}: always empty, the options are never used
        return node.options
    if isinstance(node, Wildcard):
        return store.lines(node.name)
    return ()


def _bottom_up(node, store, combine, memo, cancel=None):
    """combine(node, [value of each child]) for node and everything below it, children first, with an explicit
    stack.  Trees are trees, so only wildcards are shared: memo (name -> value) computes each wildcard once."""
    if isinstance(node, Text):
        return combine(node, ())
    stack = [[node, _children(node, store), 0, []]]
    busy = set()
    steps = 0
    while True:
        frame = stack[-1]
        n, kids, i, vals = frame
        if i < len(kids):
            frame[2] = i + 1
            k = kids[i]
            if type(k) is Text:
                vals.append(combine(k, ()))
                continue
            if type(k) is Wildcard:
                if k.name in memo:
                    vals.append(memo[k.name])
                    continue
                if k.name in busy:
                    raise WildcardError(f"wildcard cycle through __{k.name}__; remove the reference that leads back")
                busy.add(k.name)
            steps += 1
            if cancel is not None and steps % CANCEL_EVERY == 0:
                cancel()
            stack.append([k, _children(k, store), 0, []])
            continue
        stack.pop()
        v = combine(n, vals)
        if type(n) is Wildcard:
            memo[n.name] = v
            busy.discard(n.name)
        if not stack:
            return v
        stack[-1][3].append(v)


# ----------------------------------------------------------------------------- checks

def check_cycles(tree, store, stack=(), done=None, cancel=None):
    """Raise WildcardError if any reachable wildcard refers back to itself (seed-independent).  `done`: names
    already checked (shared between the lines of one template)."""
    done = set() if done is None else done
    end = object()
    frames = [(iter((tree,)), tuple(stack), None)]   # (nodes to visit, wildcard path, name done when exhausted)
    steps = 0
    while frames:
        it, path, finishing = frames[-1]
        node = next(it, end)
        if node is end:
            frames.pop()
            if finishing is not None:
                done.add(finishing)
            continue
        steps += 1
        if cancel is not None and steps % CANCEL_EVERY == 0:
            cancel()
        if isinstance(node, Seq):
            frames.append((iter(node.parts), path, None))
        elif isinstance(node, Choice):
            frames.append((iter(node.options), path, None))
        elif isinstance(node, Wildcard):
            name = node.name
            if name in path:
                cycle = " -> ".join(f"__{n}__" for n in path[path.index(name):] + (name,))
                raise WildcardError(f"wildcard cycle: {cycle}; remove the reference that leads back")
            if len(path) >= MAX_NESTING:
                raise WildcardError(f"wildcards nest deeper than {MAX_NESTING}: "
                                    + " -> ".join(f"__{n}__" for n in path + (name,)))
            if name in done:
                continue
            frames.append((iter(store.lines(name)), path + (name,), name))


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


def expand_random(node, rng, store, budget=None):
    """One random expansion of node.  The random stream is consumed exactly as a depth-first walk would
    (options drawn, then expanded left to right), with an explicit stack."""
    budget = budget if budget is not None else _Budget()
    out = []
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, str):          # a multi-pick separator
            out.append(n)
            budget.spend(1 + len(n))
        elif isinstance(n, Text):
            out.append(n.text)
            budget.spend(1 + len(n.text))
        elif isinstance(n, Seq):
            budget.spend(1)
            todo.extend(reversed(n.parts))
        elif isinstance(n, Choice):
            if n.lo is None:
                budget.spend(1 + len(n.weights))
                todo.append(n.options[_weighted_index(rng, n.weights)])
            else:
                k = rng.randint(n.lo, min(n.hi, len(n.options)))
                budget.spend(1 + len(n.weights) * (k + 1))
                picked = _sample(rng, n.weights, k)
                for pos in range(len(picked) - 1, -1, -1):
                    todo.append(n.options[picked[pos]])
                    if pos:
                        todo.append(n.sep)
        elif isinstance(n, Wildcard):
            budget.spend(1)
            lines = store.lines(n.name)
            todo.append(lines[rng.randrange(len(lines))])
        else:
            raise TypeError(n)
    return "".join(out)


# ----------------------------------------------------------------------------- combinatorial expansion

def _pick_count(values, lo, hi):
    """Ways to pick lo..hi of the options (each counted with its own variants), saturating at COUNT_CAP."""
    n = len(values)
    hi = min(hi, n)
    if lo > hi:
        return 0
    # every value is >= 1, so e_k >= C(n, k): when the largest binomial in [lo, hi] is past the cap, so is the sum
    k = min(max(n // 2, lo), hi)
    if math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) > math.log(COUNT_CAP) + 1:
        return COUNT_CAP
    if n * hi > MAX_PICK_WORK:
        raise CombinatorialExplosion(
            f"a {{{lo}-{hi}$$...}} pick from {n} options is too large to count (more than {MAX_PICK_WORK:,} "
            "steps); pick fewer, or from fewer options")
    e = [1] + [0] * hi           # elementary symmetric polynomials e_0..e_hi of the values
    for v in values:
        for j in range(hi, 0, -1):
            if e[j - 1]:
                e[j] = min(e[j] + e[j - 1] * v, COUNT_CAP)
    return min(sum(e[lo:hi + 1]), COUNT_CAP)


def _count_node(node, counts):
    if isinstance(node, Text):
        return 1
    if isinstance(node, Seq):
        n = 1
        for c in counts:
            n = min(n * c, COUNT_CAP)
        return n
    if isinstance(node, Choice) and node.lo is not None:
        return _pick_count(counts, node.lo, node.hi)
    return min(sum(counts), COUNT_CAP)        # one option, or one wildcard line


def count_combinations(node, store, memo=None, cancel=None):
    """How many expansions node has, saturating at COUNT_CAP (each subtree and wildcard counted once)."""
    return _bottom_up(node, store, _count_node, {} if memo is None else memo, cancel)


def combinations(node, store, budget=None):
    """Every expansion of node, in order (first option first, rightmost part varying fastest).  Call only
    after count_combinations said the number is small: every subtree's list is at most that long."""
    budget = budget if budget is not None else _Budget()

    def combine(n, lists):
        if isinstance(n, Text):
            budget.spend(1 + len(n.text))
            return [n.text]
        if isinstance(n, Seq):
            if not lists:
                return [""]
            out = ["".join(c) for c in itertools.product(*lists)]
        elif isinstance(n, Choice) and n.lo is not None:
            out = []
            for k in range(n.lo, min(n.hi, len(n.options)) + 1):
                for subset in itertools.combinations(lists, k):
                    for combo in itertools.product(*subset):
                        out.append(n.sep.join(combo))
                        budget.spend(1)
        else:                       # one option or one wildcard line: the strings are shared, not copied
            out = [x for sub in lists for x in sub]
            budget.spend(len(out))
            return out
        budget.spend(len(out) + sum(map(len, out)))   # new strings were written
        return out

    return _bottom_up(node, store, combine, {}, budget.cancel)


def iter_combinations(node, store):
    """Every expansion, in order (see combinations)."""
    return iter(combinations(node, store))


# ----------------------------------------------------------------------------- public API

def join_parts(prefix, prompt, suffix):
    """prefix, prompt, suffix joined by ', ' (empty parts skipped)."""
    return ", ".join(p.strip() for p in (prefix, prompt, suffix) if p and p.strip())


def rng_for(seed, index):
    """The random stream of prompt `index` (platform-stable: str seeds are hashed with SHA-512)."""
    return random.Random(f"lean-prompt-batch/{int(seed)}/{int(index)}")


def _whole(value, what, lo, hi):
    """An integer input re-checked here (a value that comes through a link skips the widget's min/max)."""
    try:
        v = int(value)
        if isinstance(value, float) and v != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be a whole number from {lo} to {hi} (got {value!r})") from None
    if not lo <= v <= hi:
        shown = f"{v}" if abs(v) < 10 ** 30 else "a number with more than 30 digits"
        raise ValueError(f"{what} must be at least {lo} and at most {hi} (got {shown}); if it comes through a "
                         "link, check the node that makes it")
    return v


def _prepare(text, mode, prefix, suffix, store, wildcard_roots, cancel):
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    check_length(text or "", "the prompt text")
    check_length(prefix or "", "prefix")
    check_length(suffix or "", "suffix")
    lines = split_lines(text or "")
    store = store if store is not None else WildcardStore(wildcard_roots)
    trees = [parse(l, where=f"line {k + 1}") for k, l in enumerate(lines)]
    pre = parse(prefix or "", where="prefix")
    suf = parse(suffix or "", where="suffix")
    done = set()
    for t in trees + [pre, suf]:
        check_cycles(t, store, done=done, cancel=cancel)
    return lines, trees, pre, suf, store


def _total(trees, pre, suf, store, cancel):
    """Prompts of every line with prefix and suffix, saturating at COUNT_CAP (one memo: shared subtrees and
    wildcards are counted once)."""
    memo = {}
    around = min(count_combinations(pre, store, memo, cancel) * count_combinations(suf, store, memo, cancel),
                 COUNT_CAP)
    total = 0
    for t in trees:
        total = min(total + min(count_combinations(t, store, memo, cancel) * around, COUNT_CAP), COUNT_CAP)
    return total


def _too_many_lines(n):
    return PromptBudgetError(f"lines mode makes one prompt per line: {n:,} lines are more than the limit of "
                             f"{MAX_PROMPTS} prompts per run; split the text, or use mode 'random' to draw some")


def expand(text, mode="lines", count=16, seed=0, prefix="", suffix="", wildcard_roots=(), store=None,
           cancel=None, budget=EXPANSION_BUDGET):
    """The prompts of a template.

    lines:          one prompt per line (count is ignored), wildcards drawn with the seed
    random:         `count` prompts, each from a line picked at random, wildcards drawn
    combinatorial:  every combination of every line, in order; more than `count` is an error

    Limits: MAX_TEXT_CHARS per text, MAX_PROMPTS prompts, `budget` steps of expansion (PromptBudgetError);
    `cancel()` (raising to stop) is called every CANCEL_EVERY steps.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    count = _whole(count, "count", 1, MAX_PROMPTS)
    seed = _whole(seed, "seed", 0, MAX_SEED)
    lines, trees, pre, suf, store = _prepare(text, mode, prefix, suffix, store, wildcard_roots, cancel)
    if not lines:
        raise PromptSyntaxError("no prompt: the text is empty (blank lines and # comments are ignored); "
                         "write one prompt per line")
    steps = _Budget(budget, cancel)

    if mode == "combinatorial":
        total = _total(trees, pre, suf, store, cancel)
        if total > count:
            many = f"{total}" if total < COUNT_CAP else f"more than {COUNT_CAP:,}"
            raise CombinatorialExplosion(
                f"combinatorial mode would make {many} prompts, more than count={count}; raise count to "
                f"{total} (if you mean it), remove options, or use mode 'random' to draw {count} of them"
                if total < COUNT_CAP else
                f"combinatorial mode would make {many} prompts, more than count={count}; remove options, or use "
                f"mode 'random' to draw {count} of them")
        out = []
        pools = [combinations(x, store, steps) for x in (pre, suf)]
        for t in trees:
            for body in combinations(t, store, steps):
                for p in pools[0]:
                    for s in pools[1]:
                        out.append(join_parts(p, body, s))
        return out

    if mode == "lines" and len(trees) > MAX_PROMPTS:
        raise _too_many_lines(len(trees))
    out = []
    n = len(trees) if mode == "lines" else count
    for i in range(n):
        rng = rng_for(seed, i)
        tree = trees[i] if mode == "lines" else trees[rng.randrange(len(trees))]
        body = expand_random(tree, rng, store, steps)
        out.append(join_parts(expand_random(pre, rng, store, steps), body, expand_random(suf, rng, store, steps)))
    return out


def count_prompts(text, mode="lines", count=16, wildcard_roots=(), store=None, prefix="", suffix="", cancel=None):
    """How many prompts `expand` would make (combinatorial: the full total, even past the cap, saturating at
    COUNT_CAP).  Every line is parsed and its wildcards checked, so a bad template raises here too."""
    lines, trees, pre, suf, store = _prepare(text, mode, prefix, suffix, store, wildcard_roots, cancel)
    if mode == "lines":
        if len(trees) > MAX_PROMPTS:
            raise _too_many_lines(len(trees))
        return len(trees)
    if mode == "random":
        return int(count) if trees else 0
    return _total(trees, pre, suf, store, cancel)
