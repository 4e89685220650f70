"""A tool's definition as holdgate pins it: which fields, their one spelling, their hash, and a readable diff.

Pure: no I/O, no MCP types (the gateway hands in each tool of a `tools/list` result as its JSON).

The pinned fields are what tells an agent (and a person writing policy) what a tool does and may do: `name`,
`title`, `description`, `inputSchema`, `outputSchema` and `annotations`. `_meta`, `icons` and `execution` are
left out: they change nothing the agent is told about the call's effect (and holdgate strips task support).
The canonical form is `canonical_json` (sorted keys, no spaces, UTF-8 with non-ASCII as is), so a server that
reorders keys or re-indents changes no hash; the hash is the sha256 of that text.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from service.policy import canonical_json

PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
"""The fields of a tool that make its definition (MCP `Tool`, by their wire names)."""

DIFF_LIMIT_CHARS = 4000
"""How much of a diff an approval request carries (Slack, email, the dashboard's decision page, the webhook):
the whole diff is one `holdgate tools diff` (or the Rules page) away."""


def definition_of(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The pinned part of one tool of a `tools/list` result (its JSON, wire names); absent fields stay absent."""
    return {key: tool[key] for key in PINNED_FIELDS if tool.get(key) is not None}


def definition_text(definition: Mapping[str, Any]) -> str:
    """The stored spelling: canonical JSON, every non-ASCII character escaped (no database refuses it: a NUL or a
    lone surrogate in a description is `\\u0000` / `\\udXXX` here)."""
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def definition_sha256(definition: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON in UTF-8 (lone surrogates as their code units, as the audit digests do)."""
    return hashlib.sha256(canonical_json(definition).encode("utf-8", "surrogatepass")).hexdigest()


def unified_diff(
    accepted: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    *,
    label: str,
    accepted_sha256: str | None,
    current_sha256: str,
    limit: int | None = None,
) -> str:
    """A unified diff of two definitions, each pretty-printed (sorted keys, two-space indent), for a person.

    `accepted` None (a new tool) diffs against nothing. With `limit`, the diff is cut at a line boundary and
    ends saying how much was left out.
    """
    before = _pretty(accepted) if accepted is not None else []
    after = _pretty(current)
    old_name = f"{label} (accepted, sha256 {accepted_sha256[:12]})" if accepted_sha256 else f"{label} (never accepted)"
    new_name = f"{label} (current, sha256 {current_sha256[:12]})"
    lines = list(difflib.unified_diff(before, after, fromfile=old_name, tofile=new_name, lineterm="", n=3))
    return bounded_diff("\n".join(lines), limit) if limit is not None else "\n".join(lines)


def bounded_diff(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its first whole lines and a line saying what was cut."""
    if len(text) <= limit:
        return text
    kept = text[: max(0, limit - 120)].rsplit("\n", 1)[0]
    left = text.count("\n") - kept.count("\n")
    return f"{kept}\n… ({left} more line(s) cut; `holdgate tools diff` or the dashboard shows the whole diff)"


def _pretty(definition: Mapping[str, Any]) -> list[str]:
    return json.dumps(definition, sort_keys=True, indent=2, ensure_ascii=False).splitlines()
