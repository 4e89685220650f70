"""An upstream built on the TypeScript SDK: `arguments` reach it exactly as the client sent them.

The peer (tests/peers/ts_sdk_server.mjs) is TypeScript SDK 1.15.0 registering tools as the Cross-LLM
server does; it refuses a `tools/call` without `arguments` (-32602) and accepts `{}`. Every no-argument
tool of such a server failed through holdgate, which dropped an empty `{}`. Both upstream paths are
covered: stdio (the SDK's client) and Streamable HTTP (the gateway's direct path).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError
from mcp_types import INVALID_PARAMS

from tests.support.harness import ROOT, audit_events, free_port, run_gateway, text_of
from tests.support.sdk_upstream import http_peer

TS_SDK_SERVER = ROOT / "tests/peers/ts_sdk_server.mjs"
POLICY = {"version": "1", "default": "allow"}


@contextlib.asynccontextmanager
async def ts_sdk_upstream(transport: str) -> AsyncIterator[dict[str, Any]]:
    """servers.json's entry for the TypeScript SDK peer over `transport` (stdio | http)."""
    if transport == "stdio":
        yield {"command": "node", "args": [str(TS_SDK_SERVER), "stdio"]}
        return
    port = free_port()
    async with http_peer(["node", str(TS_SDK_SERVER), "http", str(port)], port) as url:
        yield {"url": url}


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_empty_arguments_reach_a_typescript_sdk_upstream_as_empty(tmp_path: Path, transport: str):
    async with (
        ts_sdk_upstream(transport) as spec,
        run_gateway(tmp_path, policy=POLICY, servers={"ts": spec}) as gw,
        gw.session("ts") as session,
    ):
        preferences = await session.call_tool("get-user-preferences", {})
        jobs = await session.call_tool("list-async-jobs", {})
        filtered = await session.call_tool("list-async-jobs", {"status": "failed"})
    assert not preferences.is_error, text_of(preferences)
    assert "costPreference" in text_of(preferences)
    assert text_of(jobs) == "jobs (status=any): none"
    assert text_of(filtered) == "jobs (status=failed): none"
    await gw.state.audit.flush()
    assert [(e.tool, e.outcome) for e in await audit_events(gw)] == [
        ("get-user-preferences", "ok"),
        ("list-async-jobs", "ok"),
        ("list-async-jobs", "ok"),
    ]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_absent_arguments_stay_absent(tmp_path: Path, transport: str):
    """No `{}` is made up either: the upstream answers what it answers a client that sent none."""
    async with (
        ts_sdk_upstream(transport) as spec,
        run_gateway(tmp_path, policy=POLICY, servers={"ts": spec}) as gw,
        gw.session("ts") as session,
    ):
        with pytest.raises(MCPError) as refused:
            await session.call_tool("get-user-preferences", None)
    assert refused.value.error.code == INVALID_PARAMS
    assert "Invalid arguments for tool get-user-preferences" in refused.value.error.message
