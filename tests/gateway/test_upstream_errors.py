"""A stdio server whose command does not exist: the start-up log and every call say which command, and where."""

from __future__ import annotations

import logging

import pytest
from mcp import MCPError

from tests.support.harness import run_gateway, time_server

EXPECTED = (
    "upstream server 'ghost' is unavailable: its command 'no-such-command-xyz' (searched PATH) was not found: "
    "check servers.json, mcpServers.ghost.command"
)


async def test_a_missing_stdio_command_is_named_at_start_up_and_on_the_call(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="service.gateway")
    upstreams = {"ghost": {"command": "no-such-command-xyz", "args": ["--stdio"]}, "time": time_server()}
    async with run_gateway(tmp_path, policy={"version": "1", "default": "allow"}, servers=upstreams) as gw:
        startup = [r.getMessage() for r in caplog.records]
        async with gw.session("ghost") as session:
            with pytest.raises(MCPError) as listing:
                await session.list_tools()
            with pytest.raises(MCPError) as calling:
                await session.call_tool("anything", {})
        async with gw.session("time") as session:
            assert not (await session.call_tool("get_current_time", {"timezone": "UTC"})).is_error
    assert f"{EXPECTED} (will retry on first use)" in startup
    assert listing.value.error.message == EXPECTED
    assert calling.value.error.message == EXPECTED


async def test_a_relative_command_names_the_path_it_was_resolved_to(tmp_path):
    upstreams = {"local": {"command": "./bin/server", "cwd": str(tmp_path)}}
    async with (
        run_gateway(tmp_path, policy={"version": "1", "default": "allow"}, servers=upstreams) as gw,
        gw.session("local") as session,
    ):
        with pytest.raises(MCPError) as calling:
            await session.call_tool("anything", {})
    assert (
        f"its command './bin/server' (resolved to {tmp_path}/bin/server) was not found" in calling.value.error.message
    )
