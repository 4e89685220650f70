"""CEL conditions on a tool call: `compile_condition(source)` once at load, `evaluate` per call.

A rule's `cases[].when` is a CEL expression (the Common Expression Language of Kubernetes, Envoy and
agentgateway) over these variables:

  - `args`: the call's arguments, a map from string to any JSON value (a JSON integer is a CEL
    `int`, a JSON number with a fraction a `double`);
  - `tool`, `server`, `grant`: strings;
  - `now`: a timestamp, the gateway's clock when the call arrives.

The runtime is `cel-expr-python`, Google's binding to the C++ CEL implementation, chosen by
measurement (`bench/bench_cel.py`, `docs/decisions.md`): the fastest and the only one to pass every
case of our conformance battery. Expressions are type-checked at compile time, so a misspelt
variable (`arg.jobId`), an unknown function or an expression that can never be a bool
(`size(args.recipients)`) is refused when the policy loads, with the parser's message. The
standard `strings` (`lowerAscii`, `split`, ...), `math` and `optional` (`args.?jobId.orValue('')`)
extensions are on.

Evaluation never raises into the caller: the answer is `True`, `False` or a `ConditionFailed`
carrying the reason, and a caller must treat `ConditionFailed` as a denial (fail closed). A
condition fails when it errors at run time (a missing key, a wrong type, an overflow) or yields
something other than a bool, and before any evaluation when the arguments hold a value CEL cannot
represent faithfully:
  - an integer outside 64 bits (-2**63 .. 2**64-1);
  - a NaN or infinite number (`args.amount > 1000` would be false for NaN and let the call through);
  - a string that is not valid Unicode (a lone surrogate) or holds a NUL (the runtime cuts it there);
  - a non-string map key or a non-JSON value;
  - nesting deeper than `MAX_DEPTH` (the C++ runtime crashes the process around 10,000 levels).
Reasons do not quote argument strings (4+ characters): the audit redacts secret arguments, so a
reason must not leak them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_math, ext_optional, ext_strings

MAX_DEPTH = 64
"""Deepest nesting of lists and maps in a call's arguments that a condition will look at."""

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1

_ENV = cel.NewEnv(
    variables={
        "args": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
        "tool": cel.Type.STRING,
        "server": cel.Type.STRING,
        "grant": cel.Type.STRING,
        "now": cel.Type.TIMESTAMP,
    },
    extensions=[ext_strings.ExtStrings(), ext_math.ExtMath(), ext_optional.ExtOptional()],
)
_BOOL = cel.Type.BOOL
_DYN = cel.Type.DYN
_NUMBERS = (cel.Type.INT, cel.Type.UINT, cel.Type.DOUBLE)
_ERROR = cel.Type.ERROR
_STATUS = re.compile(r"^[A-Z_]+: ")
_STATUS_SUFFIX = re.compile(r"\s*\[[A-Z_]+\]\s*$")
_SHORTEST_HIDDEN = 4
"""Argument strings at least this long are blanked out of run-time error messages."""


class ConditionSyntaxError(ValueError):
    """A condition that does not compile; `str()` is the CEL parser's or type checker's message."""


@dataclass(frozen=True, slots=True)
class ConditionFailed:
    """A condition could not be decided for this call; the call must be denied with `reason`."""

    reason: str


class CallVariables:
    """One call's variables, converted for CEL once and shared by every condition the call meets."""

    __slots__ = ("_activation", "_args")

    def __init__(self, activation: cel.Activation, args: Mapping[str, Any]) -> None:
        self._activation = activation
        self._args = args


def call_variables(
    args: Mapping[str, Any] | None, *, tool: str, server: str, grant: str, now: float
) -> CallVariables | ConditionFailed:
    """Check and convert one call's data; `now` is seconds since the epoch (the gateway's clock).

    Returns `ConditionFailed` when a value cannot be given to CEL faithfully (see the module doc).
    """
    arguments: Mapping[str, Any] = {} if args is None else args
    problem = None
    if type(arguments) is not dict:
        problem = "args is not a JSON object"
    elif arguments and not _fits(arguments, 1):
        problem = _check_value(arguments, "args", 0) or "args cannot be converted"  # slow path: find where
    elif not (_plain(tool) and _plain(server) and _plain(grant)):
        for name, text in (("tool", tool), ("server", server), ("grant", grant)):
            problem = _check_value(text, name, 0) if type(text) is str else f"{name} is not a string"
            if problem is not None:
                break
    if problem is not None:
        return ConditionFailed(f"the call's arguments cannot be checked by a condition: {problem}")
    try:
        timestamp = dt.datetime.fromtimestamp(now, dt.UTC)
        activation = _ENV.Activation(
            {"args": arguments, "tool": tool, "server": server, "grant": grant, "now": timestamp}
        )
    except Exception as exc:  # the checks above should leave nothing here; never raise into a call
        return ConditionFailed(f"the call's arguments cannot be checked by a condition: {type(exc).__name__}")
    return CallVariables(activation, arguments)


class Condition:
    """A compiled CEL condition. Immutable and shared; `evaluate` may run any number of times."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str, program: cel.Expression) -> None:
        self.source = source
        self._program = program

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"

    def serialized(self) -> bytes:
        """The checked expression (a `google.protobuf.Any` of a `cel.expr.CheckedExpr`), for `service.policy.reads`."""
        return self._program.serialize()

    def evaluate(self, variables: CallVariables) -> bool | ConditionFailed:
        """True or False, or why this call's answer cannot be known (deny it)."""
        try:
            value = self._program.eval(variables._activation)
            kind = value.type()
            if kind == _BOOL:
                return value.value() is True
            if kind == _ERROR:
                message = _scrub(_clean(str(value.value())), variables._args, self.source)
                return ConditionFailed(f"condition `{self.source}` failed: {message}")
            return ConditionFailed(f"condition `{self.source}` gave a {_type_name(kind)}, not true or false")
        except Exception as exc:  # the runtime raised instead of returning an error value
            return ConditionFailed(f"condition `{self.source}` failed: {type(exc).__name__}")


class Amount:
    """A compiled CEL expression giving how much one call adds to a limit (`limits[].amount`).

    `evaluate` never raises: a number that is finite and not negative, or why this call's amount cannot be known
    (then the call is denied: fail closed)."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str, program: cel.Expression) -> None:
        self.source = source
        self._program = program

    def __repr__(self) -> str:
        return f"Amount({self.source!r})"

    def evaluate(self, variables: CallVariables) -> float | ConditionFailed:
        """The call's amount (int, uint and double alike, as a float), or why it cannot be counted."""
        try:
            value = self._program.eval(variables._activation)
            kind = value.type()
            if kind == _ERROR:
                message = _scrub(_clean(str(value.value())), variables._args, self.source)
                return ConditionFailed(f"amount `{self.source}` failed: {message}")
            if kind not in _NUMBERS:
                return ConditionFailed(f"amount `{self.source}` gave a {_type_name(kind)}, not a number")
            number = float(value.value())
        except Exception as exc:  # the runtime raised instead of returning an error value
            return ConditionFailed(f"amount `{self.source}` failed: {type(exc).__name__}")
        if not math.isfinite(number):
            return ConditionFailed(f"amount `{self.source}` is not a finite number")
        if number < 0:
            return ConditionFailed(f"amount `{self.source}` is negative ({number:g}); an amount must be 0 or more")
        return number


def compile_amount(source: str) -> Amount:
    """Parse and type-check a limit's amount once; `ConditionSyntaxError` unless it can be a number."""
    if not isinstance(source, str) or not source.strip():
        raise ConditionSyntaxError('an amount must be a non-empty CEL expression, e.g. "args.amount"')
    try:
        program = _ENV.compile(source)
    except Exception as exc:
        raise ConditionSyntaxError(_clean(str(exc))) from None
    kind = program.return_type()
    if kind not in _NUMBERS and kind != _DYN:
        raise ConditionSyntaxError(f"an amount must be a number, but this expression is always a {_type_name(kind)}")
    return Amount(source, program)


def compile_condition(source: str) -> Condition:
    """Parse and type-check once; `ConditionSyntaxError` with the parser's message if it is wrong."""
    if not isinstance(source, str) or not source.strip():
        raise ConditionSyntaxError("a condition must be a non-empty CEL expression, e.g. \"args.jobId == 'x'\"")
    try:
        program = _ENV.compile(source)
    except Exception as exc:
        raise ConditionSyntaxError(_clean(str(exc))) from None
    kind = program.return_type()
    if kind != _BOOL and kind != _DYN:
        raise ConditionSyntaxError(
            f"a condition must be true or false, but this expression is always a {_type_name(kind)}"
        )
    return Condition(source, program)


def arguments_problem(args: Any) -> str | None:
    """Why `args` cannot be a call's arguments that every part of holdgate holds faithfully, or None: not an object,
    a NUL or lone surrogate in a string, an integer outside 64 bits, NaN or infinity, nesting deeper than
    `MAX_DEPTH`, a key that is not a string (the checks a condition makes; an approver's edit must pass them)."""
    if type(args) is not dict:
        return "args is not a JSON object"
    return None if _fits(args, 1) else (_check_value(args, "args", 0) or "args cannot be converted")


def _fits(container: Any, depth: int) -> bool:
    """Fast path of `_check_value` (which says where and why): True if every value can go to CEL.

    `container` is a dict or a list (the caller checked its type)."""
    is_dict = type(container) is dict
    items: Iterable[Any] = container.values() if is_dict else container
    for item in items:
        kind = type(item)
        if kind is str:
            if "\x00" in item or not (item.isascii() or _utf8(item)):
                return False
        elif kind is int:
            if not INT64_MIN <= item <= UINT64_MAX:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict or kind is list:
            if depth >= MAX_DEPTH or not _fits(item, depth + 1):
                return False
        elif kind is not bool and item is not None:
            return False
    if not is_dict:
        return True
    try:
        keys = "".join(container)  # one C-level pass over every key; TypeError if one is not a string
    except TypeError:
        return False
    return _plain(keys)


def _plain(text: Any) -> bool:
    return type(text) is str and "\x00" not in text and (text.isascii() or _utf8(text))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_value(value: Any, path: str, depth: int) -> str | None:
    """Why `value` (at `path`) cannot go to CEL faithfully, or None. Never quotes the value."""
    kind = type(value)
    if kind is str:
        return _check_string(value, path)
    if kind is bool or value is None:
        return None
    if kind is int:
        if INT64_MIN <= value <= UINT64_MAX:
            return None
        return f"{path} is an integer outside CEL's 64-bit range ({INT64_MIN} to {UINT64_MAX})"
    if kind is float:
        if math.isfinite(value):
            return None
        return f"{path} is a number that is NaN or infinite, which a condition cannot compare safely"
    if kind is dict or kind is list:
        if depth >= MAX_DEPTH:
            return f"{path} is nested more than {MAX_DEPTH} levels deep"
        items: Iterable[tuple[Any, Any]] = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            if kind is dict:
                if type(key) is not str:
                    return f"{path} has a key that is not a string"
                problem = _check_string(key, f"a key in {path}")
                if problem is not None:
                    return problem
            if type(item) is str and item.isascii() and "\x00" not in item:
                continue  # the common case, without a call
            where = f"{path}[{key}]" if kind is list else _member(path, key)
            problem = _check_value(item, where, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"{path} is a {kind.__name__}, not a JSON value"


def _check_string(text: str, path: str) -> str | None:
    if "\x00" in text:
        # cel-expr-python 0.1.3 cuts a string from Python at its first NUL ("a\x00rm -rf" would be
        # seen as "a"), so a condition looking for what follows would silently miss it.
        return f"{path} is a string holding a NUL character, which the CEL runtime would cut short"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{path} is a string that is not valid Unicode (it holds a lone surrogate)"
    return None


def _member(path: str, key: str) -> str:
    if key.isidentifier() and key.isascii():
        return f"{path}.{key}"
    return f"{path}[…]"  # the key itself may be what the audit redacts


def _clean(message: str) -> str:
    """`INVALID_ARGUMENT: ERROR: <input>:1:6: Syntax error ... [INVALID_ARGUMENT]` -> the useful part."""
    message = _STATUS_SUFFIX.sub("", _STATUS.sub("", message.strip(), count=1))
    return message.removeprefix("ERROR: ").replace("<input>:", "at ")


def _scrub(message: str, args: Mapping[str, Any], source: str) -> str:
    """Blank out argument strings the message quotes (a key looked up by value, a bad regex)."""
    hidden = sorted(
        {text for text in _strings(args, 0) if len(text) >= _SHORTEST_HIDDEN and text not in source},
        key=len,
        reverse=True,
    )
    for text in hidden:
        message = message.replace(text, "[argument]")
    return message


def _strings(value: Any, depth: int) -> Iterable[str]:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield key
            yield from _strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)


def _type_name(kind: cel.Type) -> str:
    try:
        return str(kind.name()).lower()
    except Exception:
        return "value of another type"
