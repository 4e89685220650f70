"""Tool-call arguments as the audit keeps them: secrets replaced, and a stable hash of the real call.

`redact_arguments` is pure (returns a copy). It always replaces the value of any key, at any depth,
whose name looks like a secret (password, token, api_key, cookie, ... — a case-insensitive
substring match that also ignores '-' and '_', so `apiKey`, `x-api-key` and `max_tokens` count),
plus the policy's paths (`prompt`, `auth.token`): dot-separated keys, where a list on the way is
searched element by element. Redacting too much is the safe failure.

`canonical_sha256` hashes the *unredacted* arguments in canonical JSON (sorted keys, no spaces,
UTF-8, non-ASCII kept as is), so an approval can be bound to exactly one call. Missing arguments
and `{}` hash the same: MCP treats them alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "cookie",
    "privatekey",
)
"""Matched against the key lower-cased with '-' and '_' removed (so api_key, API-Key, apiKey all hit)."""


def looks_secret(key: str) -> bool:
    """True for key names that usually hold credentials."""
    folded = key.lower().replace("_", "").replace("-", "")
    return any(part in folded for part in SECRET_KEY_PARTS)


def redact_arguments(args: dict[str, Any] | None, paths: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of `args` with secret-looking keys and the given paths replaced by "[redacted]"."""
    copy = _redact_secret_keys(args if args is not None else {})
    if not isinstance(copy, dict):
        return copy
    for path in paths:
        _redact_path(copy, path.split("."))
    return copy


def canonical_json(args: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, non-ASCII unescaped."""
    return json.dumps({} if args is None else args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_sha256(args: Any) -> str:
    """sha256 hex of `canonical_json(args)` encoded as UTF-8."""
    return hashlib.sha256(canonical_json(args).encode("utf-8")).hexdigest()


def _redact_secret_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED if isinstance(key, str) and looks_secret(key) else _redact_secret_keys(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_secret_keys(item) for item in value]
    return value


def _redact_path(node: Any, parts: list[str]) -> None:
    """Replace in place inside our own copy (never the caller's object)."""
    if isinstance(node, list):
        for item in node:
            _redact_path(item, parts)
        return
    if not isinstance(node, dict) or parts[0] not in node:
        return
    if len(parts) == 1:
        node[parts[0]] = REDACTED
    else:
        _redact_path(node[parts[0]], parts[1:])
