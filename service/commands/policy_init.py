"""`policy init`: a starter policy for one upstream server, written from its tools' risk.

Connects to the server as `servers.json` describes it, lists its tools, and classifies each one:
the risk catalogs first (the config dir's `catalog/`, then the ones holdgate ships; people wrote
those), then the tool's own MCP annotations (`readOnlyHint`, `destructiveHint`).

    read         -> allow
    write        -> allow, rate-limited (30 a minute per grant unless told otherwise)
    destructive  -> require_approval
    catalog level "high" (e.g. a read that returns secrets) -> require_approval
    unknown      -> require_approval: nothing says what the tool does (fail closed), with a warning

`readOnlyHint: false` without `destructiveHint` is destructive: that is the MCP spec's default.

The policy's default stays `deny`, so a tool the server adds later is refused until someone
writes a rule for it. This module writes nothing to disk; the CLI does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import mcp_types as types

from service import __version__
from service.catalog import Catalogs, ToolRisk
from service.gateway.servers import load_servers
from service.gateway.upstream import UpstreamClient, UpstreamInfo

Action = Literal["allow", "rate_limit", "require_approval"]
UNKNOWN_SOURCE = "no catalog entry or annotations"


@dataclass(frozen=True, slots=True)
class ToolClass:
    """How one tool was classified, and from what."""

    tool: str
    risk: Literal["read", "write", "destructive", "unknown"]
    action: Action
    source: str
    note: str | None = None

    def describe(self) -> str:
        text = f"{self.risk} ({self.source})"
        return f"{text}: {self.note}" if self.note else text


_ACTION_OF_RISK: dict[str, Action] = {"read": "allow", "write": "rate_limit", "destructive": "require_approval"}


def classify(tool: types.Tool, catalog: ToolRisk | None) -> ToolClass:
    """The catalog's word if it has one, else the tool's annotations, else 'unknown' (needs approval)."""
    if catalog is not None:
        action: Action = _ACTION_OF_RISK[catalog.risk]
        if catalog.level == "high":
            action = "require_approval"
        source = f"catalog {catalog.catalog}, {catalog.level} risk"
        return ToolClass(tool.name, catalog.risk, action, source, catalog.note)
    hints = tool.annotations
    if hints is not None and hints.read_only_hint:
        return ToolClass(tool.name, "read", "allow", "annotations: readOnlyHint")
    if hints is not None and hints.destructive_hint:
        return ToolClass(tool.name, "destructive", "require_approval", "annotations: destructiveHint")
    if hints is not None and hints.destructive_hint is False:
        return ToolClass(tool.name, "write", "rate_limit", "annotations: not read-only, not destructive")
    if hints is not None and hints.read_only_hint is False:
        source = "annotations: not read-only, destructiveHint unset (the MCP default is destructive)"
        return ToolClass(tool.name, "destructive", "require_approval", source)
    return ToolClass(tool.name, "unknown", "require_approval", UNKNOWN_SOURCE)


def unclassified(classes: list[ToolClass]) -> list[str]:
    """Tools nothing described (no catalog entry, no annotations): the starter policy holds them for approval."""
    return [c.tool for c in classes if c.risk == "unknown"]


def starter_policy(
    server: str, classes: list[ToolClass], *, rate_max: int = 30, rate_window: str = "minute"
) -> dict[str, Any]:
    """The policy document: one `server/tool` rule per tool, default deny."""
    tools: dict[str, Any] = {}
    for c in sorted(classes, key=lambda c: c.tool):
        rule: dict[str, Any] = {"description": c.describe()}
        if c.action == "allow":
            rule["action"] = "allow"
        elif c.action == "rate_limit":
            rule |= {"action": "allow", "rate_limit": {"max": rate_max, "window": rate_window}}
        else:
            rule |= {
                "action": "require_approval",
                "reason": (
                    f"nothing says what {c.tool} does (no catalog entry, no annotations); a person confirms it first."
                    if c.risk == "unknown"
                    else f"{c.tool} is {c.risk}" + (f": {c.note}" if c.note else "") + "; a person confirms it first."
                ),
                "approval": {"channels": ["console"], "timeout": "15m", "on_timeout": "deny"},
            }
        tools[f"{server}/{c.tool}"] = rule
    return {
        "version": "1",
        "description": (
            f"Starter policy for server '{server}', written by holdgate {__version__} policy init on "
            f"{datetime.now(UTC):%Y-%m-%d}: reads allowed, writes rate-limited, destructive tools "
            "and tools nothing describes need approval. "
            "Edit from here; `holdgate policy explain` says what each rule does."
        ),
        "default": "deny",
        "default_reason": f"no rule for this tool yet (a tool '{server}' added after policy init?)",
        "tools": tools,
    }


async def list_tools(
    server: str, config_dir: Path, *, connect_timeout: float = 30.0
) -> tuple[UpstreamInfo, list[types.Tool]]:
    """Connect to `server` from `config_dir/servers.json`, list every tool (all pages), disconnect."""
    specs = load_servers(config_dir / "servers.json")
    if server not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise KeyError(f"no server '{server}' in {config_dir / 'servers.json'} (servers: {known})")
    client = UpstreamClient(specs[server], listener=None, config_dir=config_dir, connect_timeout=connect_timeout)
    info = await client.start()
    try:
        tools: list[types.Tool] = []
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await asyncio.wait_for(client.session.list_tools(params=params), connect_timeout)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return info, tools
    finally:
        await client.aclose()


async def build(server: str, config_dir: Path, **options: Any) -> tuple[dict[str, Any], list[ToolClass]]:
    """List the server's tools, classify them, and return the starter policy with the classes."""
    info, tools = await list_tools(server, config_dir)
    catalogs = Catalogs.load(config_dir / "catalog")
    classes = [
        classify(tool, catalogs.risk(server, tool.name, server_info_name=info.server_info.name)) for tool in tools
    ]
    return starter_policy(server, classes, **options), classes
