"""Which argument paths a CEL condition reads (`service.policy.reads`), from its checked expression: the basis
of a replay's "undecidable". It may say "reads" too often, never too rarely."""

from __future__ import annotations

import pytest

from service.policy.conditions import compile_condition
from service.policy.reads import ANY_KEY, READS_EVERYTHING, Access, argument_reads, is_prefix, overlaps


def reads(source: str) -> set[tuple[tuple, str]]:
    return {(access.path, access.kind) for access in argument_reads(compile_condition(source))}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("grant == 'ci' && now.getHours() > 8", set()),
        ("args.jobId.startsWith('prod-')", {(("jobId",), "value")}),
        ("args.auth.token == 'x'", {(("auth", "token"), "value")}),
        ("args['a.b'][0].c == 1", {(("a.b", 0, "c"), "value")}),
        ("has(args.auth.token)", {(("auth", "token"), "presence")}),
        ("args.m[args.k] == 1", {(("m", ANY_KEY), "value"), (("k",), "value")}),
        ("size(args) > 2", {((), "value")}),
        ("'token' in args", {((), "value")}),
        ("args.?token.orValue('') == ''", {((), "value")}),
        ("args.items.exists(i, i.token == 'a')", {(("items",), "value")}),
        ("[1, 2].exists(x, x == args.n)", {(("n",), "value")}),
        ("{'a': args.q}.a == 1", {(("q",), "value")}),
        ("args.a == 2 ? args.b == 'x' : true", {(("a",), "value"), (("b",), "value")}),
    ],
)
def test_the_paths_a_condition_reads(source: str, expected: set) -> None:
    assert reads(source) == expected


def test_an_expression_it_cannot_read_counts_as_reading_everything() -> None:
    class Garbled:
        def serialized(self) -> bytes:
            return b"\x0a\xff\xff"  # a length running past the end

    assert argument_reads(Garbled()) == READS_EVERYTHING  # type: ignore[arg-type]


def test_path_relations() -> None:
    assert overlaps(("a",), ("a", "b")) and overlaps(("a", "b"), ("a",)) and not overlaps(("a", "c"), ("a", "b"))
    assert overlaps(("m", ANY_KEY), ("m", "k")) and is_prefix(("m", "k"), ("m", ANY_KEY, "x"))
    assert not is_prefix(("a", "b"), ("a",))
    assert Access(("a",), "value") == Access(("a",), "value")
