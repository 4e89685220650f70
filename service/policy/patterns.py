"""Rule keys: parsing `tool`, `server/tool` and globs, ranking them, and finding overlaps.

A key is split at its first `/` into a server part and a tool part; a key without `/` has the
server part `*` (any server), so `delete-file` and `*/delete-file` are the same pattern.
Each part is literal text or a glob: `*` (any run of characters), `?` (one character), `[abc]`,
`[a-z]`, `[!abc]` / `[^abc]` (one character in / not in the set). There is no escape character;
write `[*]` for a literal star.

Specificity (higher wins), compared in this order:
  1. the server part is exact (no glob characters),
  2. the tool part is exact,
  3. more literal characters in the server part,
  4. more literal characters in the tool part.
So `everything/delete-file` > `everything/delete-*` > `delete-file` (= `*/delete-file`) >
`ev*/delete-*` > `delete-*` > `*`. Two keys with equal specificity that can match the same
(server, tool) are ambiguous; `overlap()` decides that exactly for literals, `?` and `*`, and for
character classes it answers "may overlap" unless the sets are provably disjoint.

This module also owns `GlobSet`, the compiled matcher used on the hot path: rules are bucketed by
the first literal character of their tool part and each bucket is one alternation regex, ordered
by specificity, so one C-level match finds the best rule of the bucket.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

SERVER_NAME_CHARS = re.compile(r"^[A-Za-z0-9_.-]+$")
_GLOB_CHARS = frozenset("*?[")

T = TypeVar("T")


class PatternError(ValueError):
    """A rule key is not a valid pattern; the message says why."""


# -- tokens -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CharClass:
    """`[...]`: a set of inclusive code-point ranges, possibly negated."""

    negated: bool
    ranges: tuple[tuple[str, str], ...]

    def contains(self, char: str) -> bool:
        inside = any(lo <= char <= hi for lo, hi in self.ranges)
        return inside != self.negated

    def sample(self) -> str | None:
        """A character this class matches (for ambiguity examples)."""
        if not self.negated:
            return self.ranges[0][0] if self.ranges else None
        for char in "abcdefghijklmnopqrstuvwxyz0123456789-_.XYZ":
            if self.contains(char):
                return char
        return None


STAR = "*"
ANY = "?"
Token = str | CharClass
"""A literal character (a one-character str other than the STAR/ANY markers), STAR, ANY or a class.

Literal `*` and `?` only come from `[*]` / `[?]`, which stay CharClass tokens, so the markers
are unambiguous.
"""


def tokenize(text: str) -> tuple[Token, ...]:
    """Split a glob into tokens; raises PatternError for an unclosed or reversed `[...]`."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "*":
            if not tokens or tokens[-1] != STAR:  # `**` means the same as `*`
                tokens.append(STAR)
            i += 1
        elif char == "?":
            tokens.append(ANY)
            i += 1
        elif char == "[":
            cls, i = _parse_class(text, i)
            tokens.append(cls)
        else:
            tokens.append(char)
            i += 1
    return tuple(tokens)


def _parse_class(text: str, start: int) -> tuple[CharClass, int]:
    i = start + 1
    negated = i < len(text) and text[i] in "!^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    first = True
    while i < len(text) and (text[i] != "]" or first):
        lo = text[i]
        if i + 2 < len(text) and text[i + 1] == "-" and text[i + 2] != "]":
            hi = text[i + 2]
            if hi < lo:
                raise PatternError(f"character range {lo}-{hi} in {text!r} is reversed")
            ranges.append((lo, hi))
            i += 3
        else:
            ranges.append((lo, lo))
            i += 1
        first = False
    if i >= len(text):
        raise PatternError(f"unclosed '[' in {text!r} (write [[] for a literal '[')")
    return CharClass(negated, tuple(ranges)), i + 1


def is_literal(tokens: Sequence[Token]) -> bool:
    return all(isinstance(t, str) and t not in (STAR, ANY) for t in tokens)


def literal_count(tokens: Sequence[Token]) -> int:
    return sum(1 for t in tokens if isinstance(t, str) and t not in (STAR, ANY))


# -- keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPattern:
    """A parsed rule key: server and tool globs plus the key as written."""

    key: str
    server: str
    tool: str
    server_tokens: tuple[Token, ...]
    tool_tokens: tuple[Token, ...]

    @property
    def server_exact(self) -> bool:
        return is_literal(self.server_tokens)

    @property
    def tool_exact(self) -> bool:
        return is_literal(self.tool_tokens)

    @property
    def specificity(self) -> tuple[bool, bool, int, int]:
        """Higher sorts first; see the module docstring for the order."""
        return (
            self.server_exact,
            self.tool_exact,
            literal_count(self.server_tokens),
            literal_count(self.tool_tokens),
        )

    def matches(self, server: str, tool: str) -> bool:
        return bool(_compile_single(self).fullmatch(f"{server}\x00{tool}"))

    def describe(self) -> str:
        server = f"server {self.server!r}" if self.server_exact else _describe_glob("server", self.server)
        tool = f"tool {self.tool!r}" if self.tool_exact else _describe_glob("tool", self.tool)
        return f"{server}, {tool}"


def _describe_glob(what: str, glob: str) -> str:
    return f"any {what}" if glob == "*" else f"{what} pattern {glob!r}"


def parse_key(key: str) -> KeyPattern:
    """Parse a rule key (`tool`, `server/tool`, globs on either part)."""
    if not key:
        raise PatternError("a rule key must not be empty")
    if key != key.strip():
        raise PatternError(f"rule key {key!r} has leading or trailing spaces")
    server, sep, tool = key.partition("/")
    if not sep:
        server, tool = "*", key
    if not server:
        raise PatternError(f"rule key {key!r} has an empty server part before '/'")
    if not tool:
        raise PatternError(f"rule key {key!r} has an empty tool part after '/'")
    server_tokens = tokenize(server)
    tool_tokens = tokenize(tool)
    bad = [t for t in server_tokens if isinstance(t, str) and t not in (STAR, ANY) and not _server_char(t)]
    if bad:
        raise PatternError(
            f"server part {server!r} of rule key {key!r} has {bad[0]!r}; server names use only "
            "letters, digits, '_', '.', '-' (and the glob characters * ? [...])"
        )
    return KeyPattern(key, server, tool, server_tokens, tool_tokens)


def _server_char(char: str) -> bool:
    return bool(SERVER_NAME_CHARS.match(char))


# -- overlap ----------------------------------------------------------------------------------------


def overlap(a: KeyPattern, b: KeyPattern) -> tuple[str, str] | bool | None:
    """Can one (server, tool) match both keys?

    Returns False when provably not; otherwise an example `(server, tool)` they both match, or
    True when they may overlap but no example could be built (character classes).
    """
    server = glob_overlap(a.server_tokens, b.server_tokens)
    if server is False:
        return False
    tool = glob_overlap(a.tool_tokens, b.tool_tokens)
    if tool is False:
        return False
    if isinstance(server, str) and isinstance(tool, str):
        return (server or "x", tool)
    return True


def glob_overlap(p: Sequence[Token], q: Sequence[Token]) -> str | bool:
    """Is there a string both globs match? A witness string, True (maybe), or False.

    A search over pairs of positions (i, j) meaning "p[:i] and q[:j] can produce the same text":
    a star may match nothing (advance past it) or swallow the other side's next one-character
    token; two one-character tokens advance together if they can be the same character.
    """
    if _fixed_affix_clash(p, q):
        return False
    start = (0, 0)
    goal = (len(p), len(q))
    came_from: dict[tuple[int, int], tuple[tuple[int, int], str | None]] = {start: (start, "")}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        if state == goal:
            return _witness(came_from, goal)
        for nxt, char in _steps(p, q, *state):
            if nxt not in came_from:
                came_from[nxt] = (state, char)
                frontier.append(nxt)
    return False


def _steps(p: Sequence[Token], q: Sequence[Token], i: int, j: int):
    tp = p[i] if i < len(p) else None
    tq = q[j] if j < len(q) else None
    if tp == STAR:
        yield (i + 1, j), ""
        if tq is not None and tq != STAR:
            yield (i, j + 1), _sample(tq)
    if tq == STAR:
        yield (i, j + 1), ""
        if tp is not None and tp != STAR:
            yield (i + 1, j), _sample(tp)
    if tp is not None and tq is not None and tp != STAR and tq != STAR:
        same = _same_char(tp, tq)
        if same is not False:
            yield (i + 1, j + 1), same if isinstance(same, str) else None


def _same_char(a: Token, b: Token) -> str | bool:
    """Can two one-character tokens match the same character? A sample, True (maybe) or False."""
    if a == ANY:
        return _sample(b) or True
    if b == ANY:
        return _sample(a) or True
    if isinstance(a, str) and isinstance(b, str):
        return a if a == b else False
    if isinstance(a, str):
        return a if b.contains(a) else False  # type: ignore[union-attr]
    if isinstance(b, str):
        return b if a.contains(b) else False
    if not a.negated and not b.negated:  # two positive sets: overlap iff some ranges intersect
        for lo1, hi1 in a.ranges:
            for lo2, hi2 in b.ranges:
                if lo1 <= hi2 and lo2 <= hi1:
                    return max(lo1, lo2)
        return False
    return True  # a negated set against another set: treated as overlapping (conservative)


def _sample(token: Token) -> str | None:
    if token == ANY:
        return "x"
    if isinstance(token, CharClass):
        return token.sample()
    return token


def _witness(came_from: dict, goal: tuple[int, int]) -> str | bool:
    chars: list[str] = []
    state = goal
    while state != (0, 0):
        state, char = came_from[state]
        if char is None:
            return True
        chars.append(char)
    return "".join(reversed(chars))


def _fixed_affix_clash(p: Sequence[Token], q: Sequence[Token]) -> bool:
    """Quick reject: literal prefixes (or suffixes) that differ where both are literal."""
    for a, b in zip(_literal_run(p), _literal_run(q), strict=False):
        if a != b:
            return True
    for a, b in zip(_literal_run(p[::-1]), _literal_run(q[::-1]), strict=False):
        if a != b:
            return True
    return STAR not in p and STAR not in q and len(p) != len(q)


def _literal_run(tokens: Sequence[Token]) -> list[str]:
    run: list[str] = []
    for token in tokens:
        if not isinstance(token, str) or token in (STAR, ANY):
            break
        run.append(token)
    return run


# -- regex compilation ------------------------------------------------------------------------------


def _part_regex(tokens: Sequence[Token], *, server: bool) -> str:
    """Regex for one part. Stars between fixed chunks become atomic lazy groups, the linear-time
    glob matching trick (the earliest occurrence of a fixed-length chunk is always a safe choice),
    so a hostile tool name cannot make matching backtrack exponentially."""
    any_char = "[^\x00]" if server else "."
    chunks: list[list[Token]] = [[]]
    for token in tokens:
        if token == STAR:
            chunks.append([])
        else:
            chunks[-1].append(token)
    parts = [_chunk_regex(chunks[0], any_char, server)]
    for middle in chunks[1:-1]:
        parts.append(f"(?>{any_char}*?{_chunk_regex(middle, any_char, server)})")
    if len(chunks) > 1:
        parts.append(f"{any_char}*{_chunk_regex(chunks[-1], any_char, server)}")
    return "".join(parts)


def _chunk_regex(tokens: Sequence[Token], any_char: str, server: bool) -> str:
    out = []
    for token in tokens:
        if token == ANY:
            out.append(any_char)
        elif isinstance(token, CharClass):
            out.append(_class_regex(token, server))
        else:
            out.append(re.escape(token))
    return "".join(out)


def _class_regex(cls: CharClass, server: bool) -> str:
    body = "".join(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in cls.ranges)
    if cls.negated:
        return f"[^{body}\x00]" if server else f"[^{body}]"
    return f"[{body}]"


def key_regex(pattern: KeyPattern) -> str:
    """Regex over `server + "\\x00" + tool` (server names never contain NUL)."""
    return f"{_part_regex(pattern.server_tokens, server=True)}\x00{_part_regex(pattern.tool_tokens, server=False)}"


def tool_regex(pattern: KeyPattern) -> str:
    return _part_regex(pattern.tool_tokens, server=False)


def server_regex(pattern: KeyPattern) -> str:
    return _part_regex(pattern.server_tokens, server=True)


_single_cache: dict[str, re.Pattern[str]] = {}


def _compile_single(pattern: KeyPattern) -> re.Pattern[str]:
    compiled = _single_cache.get(pattern.key)
    if compiled is None:
        compiled = _single_cache[pattern.key] = re.compile(key_regex(pattern), re.DOTALL)
    return compiled


# -- matcher ----------------------------------------------------------------------------------------


class GlobSet(Generic[T]):
    """Find the most specific of many globs matching a subject, in one regex match per bucket.

    Entries are `(regex, first, specificity, value)`: `first` is the literal first character the
    subject must start with, or None. Entries with the same `first` form one alternation, ordered
    by specificity, so the regex engine's first matching alternative is that bucket's best; the
    answer is the better of the subject's bucket and the bucket of entries with no fixed start.
    """

    __slots__ = ("_buckets", "_floating")

    def __init__(self, entries: Sequence[tuple[str, str | None, tuple, T]]) -> None:
        grouped: dict[str | None, list[tuple[str, tuple, T]]] = {}
        for regex, first, spec, value in entries:
            grouped.setdefault(first, []).append((regex, spec, value))
        self._buckets = {first: _Alternation(items) for first, items in grouped.items() if first is not None}
        self._floating = _Alternation(grouped[None]) if None in grouped else None

    def best(self, subject: str, first: str) -> T | None:
        bucket = self._buckets.get(first)
        found = bucket.match(subject) if bucket is not None else None
        if self._floating is not None:
            other = self._floating.match(subject)
            if other is not None and (found is None or other[0] > found[0]):
                found = other
        return found[1] if found is not None else None


class _Alternation(Generic[T]):
    __slots__ = ("_regex", "_results")

    def __init__(self, items: list[tuple[str, tuple, T]]) -> None:
        items = sorted(items, key=lambda item: item[1], reverse=True)
        self._regex = re.compile("|".join(f"({regex})" for regex, _, _ in items), re.DOTALL)
        # Regex group numbers: each alternative adds one group (the atomic groups do not count).
        self._results = [(spec, value) for _, spec, value in items]

    def match(self, subject: str) -> tuple[tuple, T] | None:
        m = self._regex.fullmatch(subject)
        if m is None:
            return None
        return self._results[m.lastindex - 1]  # type: ignore[operator]
