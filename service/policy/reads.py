"""Which parts of a call's arguments a CEL condition reads, found in its checked syntax tree.

Replaying a candidate policy on the audit (`service.audit.replay`) meets arguments the audit
redacted: their values are unknown. A condition whose outcome may depend on one must be reported
undecidable, never guessed, and a condition that never looks at one can be evaluated as recorded.
This module answers the question "which argument paths does this condition touch, and how" from
the expression itself, so that answer is sound (it may say "reads" too often, never too rarely).

The tree comes from `Expression.serialize()` of `cel-expr-python`: a `google.protobuf.Any` holding
a `cel.expr.CheckedExpr` (cel-spec's `checked.proto` / `syntax.proto`). The wire format is stable and
public; only the few fields needed are decoded here, by hand (no protobuf dependency for five message
types). Anything unexpected makes the condition "read everything" (`READS_EVERYTHING`), the safe answer.

An access is a path from `args` (`("auth", "token")`; a list index is an int; `*` stands for a key or
index only known at run time) and a kind:

  - `value`: the value at the path is used as a whole (compared, passed to a function, iterated), so
    it reads every key and value below the path; getting there fails if a key on the way is missing;
  - `presence`: `has(args.a.b)` asks whether the last key is there (reads the keys above it strictly).

An optional select (`args.?a`, `args[?k]`) or any other use of a map that is not a plain select
(`size(args)`, `'k' in args`, `args.exists(...)`) counts as a `value` access of that map.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from service.policy.conditions import Condition

ANY_KEY = "*"
"""A path element known only at run time (`args.items[i]`): it may be any key or index."""
PathElement = str | int
Path = tuple[PathElement, ...]


@dataclass(frozen=True, slots=True)
class Access:
    path: Path
    kind: Literal["value", "presence"]


READS_EVERYTHING = (Access((), "value"),)
"""What an expression that could not be analysed is taken to read: the whole of `args`."""


@functools.lru_cache(maxsize=4096)
def argument_reads(condition: Condition) -> tuple[Access, ...]:
    """Every access the condition makes to `args` (cached: a compiled condition is immutable)."""
    try:
        checked = _message(_field(_message(condition.serialized()), 2, b""))
        root = _field(checked, 4)
        if root is None:
            return READS_EVERYTHING
        found: list[Access] = []
        _walk(_message(root), found)
        return tuple(dict.fromkeys(found))
    except _Malformed:
        return READS_EVERYTHING


def overlaps(a: Path, b: Path) -> bool:
    """Whether one path is a prefix of the other (`*` matches any element)."""
    return all(x == y or ANY_KEY in (x, y) for x, y in zip(a, b, strict=False))


def is_prefix(prefix: Path, path: Path) -> bool:
    """Whether `prefix` is at or above `path` (`*` matches any element)."""
    return len(prefix) <= len(path) and overlaps(prefix, path)


# -- the syntax tree --------------------------------------------------------------------------------
# Expr: 2 id, 3 const, 4 ident{1 name}, 5 select{1 operand, 2 field, 3 test_only},
#       6 call{1 target, 2 function, 3 args*}, 7 list{1 elements*}, 8 struct{2 entries*{3 map_key, 4 value}},
#       9 comprehension{2 iter_range, 4 accu_init, 5 loop_condition, 6 loop_step, 7 result}
# Constant: 6 string_value, 3 int64_value, 4 uint64_value

_INDEX = "_[_]"
_OPTIONAL_SELECT = "_?._"
_OPTIONAL_INDEX = "_[?_]"


def _walk(expr: dict[int, list[object]], found: list[Access]) -> None:
    """Record the accesses under `expr`; a chain of selects rooted at `args` is one access."""
    chain = _chain(expr)
    if chain is not None:
        path, presence, keys = chain
        if path is not None:
            found.append(Access(path, "presence" if presence else "value"))
            for key in keys:
                _walk(key, found)
            return
    if (ident := _field(expr, 4)) is not None:
        if _text(_field(_message(ident), 1, b"")) == "args":
            found.append(Access((), "value"))  # `args` used whole
        return
    if (select := _field(expr, 5)) is not None:
        _walk(_message(_required(_message(select), 1)), found)
        return
    if (call := _field(expr, 6)) is not None:
        message = _message(call)
        function = _text(_field(message, 2, b""))
        operands = [_message(raw) for raw in _all(message, 3)]
        target = _field(message, 1)
        if function in (_OPTIONAL_SELECT, _OPTIONAL_INDEX) and operands:
            # `x.?k`: the map x is read whole (whether k is there, and its value)
            _walk_as_value(operands[0], found)
            for operand in operands[1:]:
                _walk(operand, found)
            return
        if target is not None:
            _walk(_message(target), found)
        for operand in operands:
            _walk(operand, found)
        return
    if (items := _field(expr, 7)) is not None:
        for raw in _all(_message(items), 1):
            _walk(_message(raw), found)
        return
    if (struct := _field(expr, 8)) is not None:
        for raw in _all(_message(struct), 2):
            entry = _message(raw)
            for number in (3, 4):
                if (part := _field(entry, number)) is not None:
                    _walk(_message(part), found)
        return
    if (loop := _field(expr, 9)) is not None:
        message = _message(loop)
        for number in (2, 4, 5, 6, 7):
            if (part := _field(message, number)) is not None:
                _walk(_message(part), found)
        return
    if _field(expr, 3) is None:
        raise _Malformed("an expression of an unknown kind")


def _walk_as_value(expr: dict[int, list[object]], found: list[Access]) -> None:
    chain = _chain(expr)
    if chain is not None and chain[0] is not None:
        found.append(Access(chain[0], "value"))
        for key in chain[2]:
            _walk(key, found)
        return
    _walk(expr, found)


Message = dict[int, list[object]]


def _chain(expr: Message) -> tuple[Path | None, bool, list[Message]] | None:
    """For `args.a.b`, `args['a'][k]`, `has(args.a.b)`: (the path, whether it is a `has`, the computed
    keys' expressions, to be walked too); None when `expr` is no select or index.

    The path is None when the chain is not rooted at `args` (then its parts are walked as usual)."""
    steps: list[PathElement] = []
    keys: list[Message] = []
    presence = False
    node = expr
    first = True
    while True:
        if (select := _field(node, 5)) is not None:
            message = _message(select)
            if _varint(_field(message, 3, 0)) and first:
                presence = True
            elif _varint(_field(message, 3, 0)):
                return None  # has() inside a chain cannot be spelt; be safe
            steps.append(_text(_field(message, 2, b"")))
            node = _message(_required(message, 1))
        elif (call := _field(node, 6)) is not None:
            message = _message(call)
            operands = _all(message, 3)
            if _text(_field(message, 2, b"")) != _INDEX or len(operands) != 2 or _field(message, 1) is not None:
                return (None, False, keys) if steps else None
            index = _message(operands[1])
            steps.append(_key(index))
            if steps[-1] == ANY_KEY:
                keys.append(index)
            node = _message(operands[0])
        elif (ident := _field(node, 4)) is not None:
            if steps and _text(_field(_message(ident), 1, b"")) == "args":
                return tuple(reversed(steps)), presence, keys
            return (None, False, keys) if steps else None
        else:
            return (None, False, keys) if steps else None
        first = False


def _key(expr: dict[int, list[object]]) -> PathElement:
    """A constant index's key (a string or an int), or `*` when it is computed at run time."""
    constant = _field(expr, 3)
    if constant is None:
        return ANY_KEY
    message = _message(constant)
    if (text := _field(message, 6)) is not None:
        return _text(text)
    for number in (3, 4):
        if (value := _field(message, number)) is not None:
            number_value = _varint(value)
            return number_value - (1 << 64) if number == 3 and number_value >= 1 << 63 else number_value
    return ANY_KEY


# -- the wire format --------------------------------------------------------------------------------


class _Malformed(ValueError):
    """The serialized expression is not what this reader expects: treat the condition as reading everything."""


def _message(data: object) -> dict[int, list[object]]:
    """Decode one protobuf message into {field number: [raw values]} (varints as ints, the rest as bytes)."""
    if not isinstance(data, bytes | bytearray):
        raise _Malformed("a message is not bytes")
    fields: dict[int, list[object]] = {}
    position, end = 0, len(data)
    while position < end:
        tag, position = _read_varint(data, position)
        number, wire = tag >> 3, tag & 7
        value: object
        if wire == 0:
            value, position = _read_varint(data, position)
        elif wire == 1:
            value, position = bytes(data[position : position + 8]), position + 8
        elif wire == 2:
            length, position = _read_varint(data, position)
            value, position = bytes(data[position : position + length]), position + length
        elif wire == 5:
            value, position = bytes(data[position : position + 4]), position + 4
        else:
            raise _Malformed(f"wire type {wire}")
        if position > end:
            raise _Malformed("a field runs past the end")
        fields.setdefault(number, []).append(value)
    return fields


def _read_varint(data: bytes | bytearray, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise _Malformed("a varint runs past the end")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _field(message: dict[int, list[object]], number: int, default: object = None) -> object:
    values = message.get(number)
    return values[-1] if values else default


def _required(message: dict[int, list[object]], number: int) -> object:
    value = _field(message, number)
    if value is None:
        raise _Malformed(f"field {number} missing")
    return value


def _all(message: dict[int, list[object]], number: int) -> list[object]:
    return message.get(number, [])


def _text(value: object) -> str:
    if not isinstance(value, bytes):
        raise _Malformed("a string field is not bytes")
    return value.decode("utf-8")


def _varint(value: object) -> int:
    if not isinstance(value, int):
        raise _Malformed("a varint field is not an int")
    return value
