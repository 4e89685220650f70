"""2026-07-28 era clients through holdgate to upstreams built on the SDKs, whose sessions are 2025-era.

holdgate's client opens a handshake-era (2025-11-25) session to each upstream. A 2026-era client's
requests carry the per-request envelope in `_meta`, which such a session refuses (the Python SDK's
stdio server does: "this connection serves the handshake protocol era"), and a 2026-era client must be
told `resultType` on every result. The Python SDK's 2026 client validates `tools/call` results against
the tool list, so a refused `tools/list` also broke every call. Node's server-everything tolerates the
envelope, which is why the SDK-built upstreams are used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.harness import ROOT, WIRE_HEADERS, free_port, run_gateway, text_of, wire_initialize, wire_request
from tests.support.sdk_upstream import http_peer, sdk_upstream_command, stdio_command

POLICY = {"version": "1", "default": "allow"}
TS_CLIENT = ROOT / "tests/peers/ts_sdk_2026_client.mjs"


@contextlib.asynccontextmanager
async def python_sdk_upstream(transport: str) -> AsyncIterator[dict[str, Any]]:
    """servers.json's entry for tests/support/sdk_upstream.py over `transport` (stdio | http)."""
    if transport == "stdio":
        command, *args = stdio_command()
        yield {"command": command, "args": args, "cwd": str(ROOT)}
        return
    port = free_port()
    async with http_peer(sdk_upstream_command(port, "json"), port) as url:
        yield {"url": url}


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_python_sdk_2026_client_lists_and_calls_tools_on_a_python_sdk_upstream(tmp_path: Path, transport: str):
    async with (
        python_sdk_upstream(transport) as spec,
        run_gateway(tmp_path, policy=POLICY, servers={"sdk": spec}) as gw,
        gw.modern("sdk") as client,
    ):
        tools = await client.list_tools()
        resources = await client.list_resources()
        failed = await client.call_tool("fail", {"message": "disk full"})
        answered = await client.call_tool("request-id", {})
        read = await client.read_resource("note://readme")
        prompts = await client.list_prompts()
        prompt = await client.get_prompt("greeting", {"name": "Ada"})
    assert {"request-id", "fail", "poll"} <= {t.name for t in tools.tools}
    assert [str(r.uri) for r in resources.resources] == ["note://readme"]
    assert failed.is_error and "disk full" in text_of(failed)
    assert not answered.is_error and text_of(answered)
    assert read.contents[0].text == "a resource, so that resources/list has something to list"
    assert [p.name for p in prompts.prompts] == ["greeting"]
    assert prompt.messages[0].content.text == "Say hello to Ada."


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_2025_client_on_the_same_gateway_still_gets_2025_results(tmp_path: Path, transport: str):
    """The `resultType` a 2026-era client needs is not sent to a 2025-era one (read off the wire)."""
    async with (
        python_sdk_upstream(transport) as spec,
        run_gateway(tmp_path, policy=POLICY, servers={"sdk": spec}) as gw,
        httpx2.AsyncClient(headers={**WIRE_HEADERS, "Authorization": f"Bearer {gw.tokens['agent']}"}) as http,
    ):
        url = gw.mcp_url("sdk")
        opened = await http.post(url, json=wire_initialize())
        http.headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = await http.post(url, json=wire_request(2, "tools/list"))
        called = await http.post(
            url, json=wire_request(3, "tools/call", {"name": "fail", "arguments": {"message": "x"}})
        )
    assert "fail" in {t["name"] for t in listed.json()["result"]["tools"]}
    result = called.json()["result"]
    assert result["isError"] is True and "resultType" not in result


async def run_ts_client(url: str, token: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """tests/peers/ts_sdk_2026_client.mjs against `url`: what it saw, or the test fails with its stderr."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(TS_CLIENT),
        url,
        token,
        tool,
        json.dumps(arguments),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_typescript_sdk_2026_client_lists_and_calls_tools_on_a_python_sdk_upstream(
    tmp_path: Path, transport: str
):
    async with (
        python_sdk_upstream(transport) as spec,
        run_gateway(tmp_path, policy=POLICY, servers={"sdk": spec}) as gw,
    ):
        seen = await run_ts_client(gw.mcp_url("sdk"), gw.tokens["agent"], "fail", {"message": "disk full"})
    assert seen["protocolVersion"] == "2026-07-28"
    assert {"request-id", "fail", "poll"} <= set(seen["tools"])
    assert seen["resources"] == ["note://readme"]
    assert seen["result"]["isError"] is True and "disk full" in seen["result"]["content"][0]["text"]
