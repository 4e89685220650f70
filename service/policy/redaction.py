"""Tool-call arguments as holdgate keeps them: secrets replaced, stored in a form every database takes,
and a keyed digest of the real call.

`redact_arguments` is pure (returns a copy). It always replaces the value of any key, at any depth,
whose name looks like a secret (password, token, api_key, cookie, ... — a case-insensitive
substring match that also ignores '-' and '_', so `apiKey`, `x-api-key` and `max_tokens` count),
plus the policy's paths (`prompt`, `auth.token`): dot-separated keys, where a list on the way is
searched element by element. Redacting too much is the safe failure. The copy is also *storable*:
JSON allows numbers Python reads as infinite (`1e400`) and lenient clients send `NaN`, which strict
JSON (the audit chain's canonical form, the REST API, exports) refuses, so each becomes the
string `"[number: Infinity]"`, `"[number: -Infinity]"` or `"[number: NaN]"`; a lone UTF-16 surrogate
(which UTF-8 cannot encode) is spelled out as `\\udXXX`. Other stored text goes through
`storable_text` / `bounded_text` (NUL escaped, cut to the column with a marker).

`args_digest` binds an approval to exactly one call: HMAC-SHA256, under the service's key, of the
*unredacted* arguments in canonical JSON (sorted keys, no spaces, UTF-8, non-ASCII kept as is).
Keyed because the digest is shown (audit, exports, decision pages): an unkeyed hash of arguments
whose short secret was redacted gives the secret back to anyone who tries the likely values.
Non-finite numbers are hashed as the bare tokens `NaN`/`Infinity` (which no string can spell) and
lone surrogates as their own code units, so two calls that differ always hash apart. Missing
arguments and `{}` hash the same: MCP treats them alike. The key is `service.audit.keys`' business.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
TOO_DEEP = "[arguments nested too deeply to record]"
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
    """A storable copy of `args` with secret-looking keys and the given paths replaced by "[redacted]"."""
    try:
        copy = _redact_secret_keys(args if args is not None else {})
    except RecursionError:  # the client's JSON parser took it; a record must still be written
        return {TOO_DEEP: True}
    if not isinstance(copy, dict):
        return copy
    for path in paths:
        _redact_path(copy, path.split("."))
    return copy


def _storable_number(value: float) -> float | str:
    """A float as strict JSON can hold it: non-finite ones become a marker string."""
    if math.isfinite(value):
        return value
    return "[number: NaN]" if math.isnan(value) else f"[number: {'-' if value < 0 else ''}Infinity]"


def storable_text(value: str) -> str:
    r"""Text every database stores as is: NUL written as `\u0000`, a lone surrogate as `\udXXX` (six characters)."""
    if "\x00" in value:
        value = value.replace("\x00", "\\u0000")
    return _without_surrogates(value)


def bounded_text(value: str, limit: int) -> str:
    """`storable_text` that fits a column of `limit` characters.

    A value that had to change (escaped or cut) ends in a marker with the sha256 of the original, so
    two different long names never store as the same one (a decision is found by its tool name).
    """
    stored = storable_text(value)
    if len(value) <= limit and stored == value:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    marker = f"…[altered to store; sha256 {digest}]"
    if limit < 2 * len(marker):  # a short internal field (a verdict): no room for a marker
        return stored[:limit]
    return stored[: limit - len(marker)] + marker


def canonical_json(args: Any) -> str:
    """The one spelling of a call's arguments: sorted keys, no spaces, non-ASCII unescaped, `NaN`/`Infinity` bare."""
    return json.dumps({} if args is None else args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def args_digest(key: bytes, args: Any) -> str:
    """HMAC-SHA256 hex, under `key`, of `canonical_json(args)` in UTF-8 (lone surrogates as their code units)."""
    return hmac.digest(key, canonical_json(args).encode("utf-8", "surrogatepass"), "sha256").hex()


def _redact_secret_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            _without_surrogates(key) if isinstance(key, str) else key: REDACTED
            if isinstance(key, str) and looks_secret(key)
            else _redact_secret_keys(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_secret_keys(item) for item in value]
    if isinstance(value, str):
        return _without_surrogates(value)  # JSON text escapes NUL itself
    if isinstance(value, float):
        return _storable_number(value)
    return value


def _without_surrogates(text: str) -> str:
    """A lone UTF-16 surrogate (JSON `"\\ud800"` parses to one) cannot be encoded as UTF-8: spell it out."""
    if text.isascii():  # the common case, answered without a copy
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


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
