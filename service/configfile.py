"""Config files: the one way holdgate reads them and reports what is wrong with them.

Every loader (policy, servers, ...) reads through `read_config_bytes` / `load_json` and raises
`ConfigError`, so an operator always sees the same shape of message:

    config/policy.json: tools.cancel-async-job.limits[0].window: unknown window 'minuet' ...

that is, the file, the place inside it (a dotted/bracket path, or `line L, column C` for syntax
errors) and what is wrong. This module knows JSON and pydantic, nothing about any one file format.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pydantic

WHOLE_FILE = "(file)"
"""The location used when the problem is the file itself (missing, unreadable, not UTF-8...)."""

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_$@*/?!:+-]+$")


class ConfigError(Exception):
    """A config file is missing or wrong; `str(e)` is `"{file}: {location}: {message}"`."""

    def __init__(self, file: Path | str, location: str, message: str) -> None:
        self.file = Path(file)
        self.location = location
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.file}: {self.location}: {self.message}"

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working with our signature
        return (type(self), (self.file, self.location, self.message))


def format_location(loc: Iterable[str | int]) -> str:
    """`("tools", "a/b", "limits", 0, "window")` -> `tools.a/b.limits[0].window`.

    Keys that would make the path ambiguous (dots, brackets, spaces, quotes, empty) are written
    as `["key"]` so the operator can still find them in the file.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out or WHOLE_FILE


def read_config_bytes(path: Path | str) -> bytes:
    """The file's bytes, or a ConfigError saying why they cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, WHOLE_FILE, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, WHOLE_FILE, "is a directory, expected a JSON file") from None
    except PermissionError:
        raise ConfigError(path, WHOLE_FILE, "permission denied while reading the file") from None
    except OSError as exc:
        raise ConfigError(path, WHOLE_FILE, f"cannot read the file: {exc.strerror or exc}") from None


def parse_json(path: Path | str, data: bytes) -> Any:
    """Parse `data` (the bytes of `path`) as JSON; errors name the line and column.

    Duplicate keys in one object are refused: JSON parsers silently keep the last one, which in a
    policy file would quietly drop a rule.
    """
    path = Path(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, _line_column(data, exc.start), "the file is not valid UTF-8") from None
    if not text.strip():
        raise ConfigError(path, WHOLE_FILE, "the file is empty, expected a JSON document")
    try:
        value = json.loads(text, object_pairs_hook=_ObjectWithDuplicates.from_pairs)
    except json.JSONDecodeError as exc:
        raise ConfigError(path, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    duplicate = _find_duplicate(value, ())
    if duplicate is not None:
        loc, key = duplicate
        raise ConfigError(path, format_location((*loc, key)), "this key appears more than once in the same object")
    return _plain(value)


def load_json(path: Path | str) -> Any:
    """Read and parse a JSON config file, raising ConfigError for every way that can fail."""
    return parse_json(path, read_config_bytes(path))


def validation_error_to_config_error(
    path: Path | str,
    exc: pydantic.ValidationError,
    *,
    model: type[pydantic.BaseModel] | None = None,
    show_input: bool = True,
    max_listed: int = 5,
) -> ConfigError:
    """Turn pydantic's report into a ConfigError located at the first error.

    With several errors the others follow, joined by "; ". `model` (the root model validated)
    lets an unknown key be answered with the keys allowed there and a "did you mean". Set
    `show_input=False` for files that hold secrets, so bad values are never echoed.
    """
    errors = exc.errors(include_url=False)
    if not errors:
        return ConfigError(path, WHOLE_FILE, str(exc))
    first, *rest = errors
    message = _error_message(first, model, show_input)
    if rest:
        listed = [f"{format_location(e['loc'])}: {_error_message(e, model, show_input)}" for e in rest]
        more = len(listed) - max_listed
        listed = listed[:max_listed] + ([f"and {more} more"] if more > 0 else [])
        message += "; also " + "; ".join(listed)
    return ConfigError(path, format_location(first["loc"]), message)


# -- pydantic error wording -------------------------------------------------------------------------


def _error_message(error: Any, model: type[pydantic.BaseModel] | None, show_input: bool) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        allowed = _allowed_keys(model, loc[:-1]) if model is not None else None
        if allowed:
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            message += "; allowed here: " + ", ".join(allowed)
        return message
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    if kind in {"value_error", "assertion_error"}:
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    elif show_input and _is_short_scalar(error.get("input")):
        message += f" (got {json.dumps(error['input'], ensure_ascii=False)})"
    return message


def _is_short_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= 60
    return value is None or isinstance(value, bool | int | float)


def _allowed_keys(model: type[pydantic.BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys a model accepts at `loc` (walking dicts, lists and optional fields), or []."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
            field = _field_by_key(current, part)
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) is dict and isinstance(part, str):
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) in (list, tuple) and isinstance(part, int):
            current = typing.get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
        return sorted(_field_keys(current))
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and `X | None` so the walk sees the container or the model."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _field_keys(model: type[pydantic.BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _field_by_key(model: type[pydantic.BaseModel], key: str | int) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


# -- JSON helpers -----------------------------------------------------------------------------------


class _ObjectWithDuplicates(dict):
    """A JSON object that remembers which keys it saw twice (see `parse_json`)."""

    duplicates: list[str]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _ObjectWithDuplicates:
        obj = cls()
        obj.duplicates = []
        for key, value in pairs:
            if key in obj:
                obj.duplicates.append(key)
            obj[key] = value
        return obj


def _find_duplicate(value: Any, loc: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], str] | None:
    if isinstance(value, _ObjectWithDuplicates):
        if value.duplicates:
            return loc, value.duplicates[0]
        for key, item in value.items():
            found = _find_duplicate(item, (*loc, key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_duplicate(item, (*loc, index))
            if found:
                return found
    return None


def _plain(value: Any) -> Any:
    """Replace our dict subclass by plain dicts so callers get ordinary JSON values."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _line_column(data: bytes, offset: int) -> str:
    before = data[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return f"line {line}, column {column}"
