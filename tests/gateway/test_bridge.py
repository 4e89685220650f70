"""`holdgate bridge` end to end: a stdio MCP client ↔ the bridge process ↔ a real Streamable HTTP server.

The server is the SDK's own MCPServer served by uvicorn on a free loopback port; the bridge runs as a
separate process, exactly as Claude Desktop would start it; the client is the SDK's stdio client.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
import uvicorn
from mcp import Client, ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.session import ClientRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import METHOD_NOT_FOUND, ElicitRequestParams, ElicitResult
from pydantic import BaseModel
from starlette.responses import JSONResponse

from tests.support.harness import run_gateway, time_server

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-bridge-test"


class Name(BaseModel):
    name: str


def build_upstream() -> MCPServer:
    """A server with one tool per kind of traffic the bridge must carry."""
    server = MCPServer(name="bridge-test-upstream", log_level="WARNING")

    @server.tool()
    async def count(steps: int, ctx: Context) -> str:
        """Report progress once per step, then say how many steps ran."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"counted {steps}"

    @server.tool()
    async def greet(ctx: Context) -> str:
        """Ask the user for a name (elicitation), then greet them."""
        answer = await ctx.elicit("What is your name?", Name)
        return f"hello {answer.data.name}" if answer.action == "accept" else f"no name ({answer.action})"

    @server.tool()
    def headers(ctx: Context) -> str:
        """The HTTP headers this call arrived with, as the server saw them."""
        seen = ctx.headers or {}
        return f"authorization={seen.get('authorization')}; version={seen.get('mcp-protocol-version')}"

    return server


@dataclass
class Upstream:
    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@asynccontextmanager
async def running_upstream(require_token: str | None = None) -> AsyncIterator[Upstream]:
    """Serve build_upstream() over Streamable HTTP on a free port, recording each request's headers.

    With `require_token`, any request without that bearer token gets 401, as holdgate's edge answers.
    """
    app = build_upstream().streamable_http_app()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    upstream = Upstream(url=f"http://127.0.0.1:{sock.getsockname()[1]}/mcp")

    async def recording_app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            upstream.requests.append((scope["method"], headers))
            if require_token and headers.get("authorization") != f"Bearer {require_token}":
                await JSONResponse({"detail": "invalid grant token"}, status_code=401)(scope, receive, send)
                return
        await app(scope, receive, send)

    server = uvicorn.Server(uvicorn.Config(recording_app, log_level="warning", lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield upstream
        finally:
            server.should_exit = True
    sock.close()


def bridge_params(url: str, token: str | None, env: dict[str, str] | None = None) -> StdioServerParameters:
    code = f"import asyncio; from service.gateway.bridge import run_bridge; asyncio.run(run_bridge({url!r}, {token!r}))"
    return StdioServerParameters(command=sys.executable, args=["-c", code], cwd=str(ROOT), env=env)


async def answer_elicitation(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
    assert params.message == "What is your name?"
    return ElicitResult(action="accept", content={"name": "Ada"})


async def test_stdio_client_reaches_http_server_through_the_bridge() -> None:
    async with running_upstream() as upstream:
        params = bridge_params(upstream.url, TOKEN)
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write, elicitation_callback=answer_elicitation) as session,
        ):
            with anyio.fail_after(30):
                init = await session.initialize()
                assert init.server_info.name == "bridge-test-upstream"

                tools = await session.list_tools()
                assert {tool.name for tool in tools.tools} == {"count", "greet", "headers"}

                progress: list[tuple[float, float | None, str | None]] = []

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress.append((value, total, message))

                result = await session.call_tool("count", {"steps": 3}, progress_callback=on_progress)
                assert not result.is_error
                assert result.content[0].text == "counted 3"
                assert progress == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]

                greeted = await session.call_tool("greet", {})
                assert greeted.content[0].text == "hello Ada"

                seen = await session.call_tool("headers", {})
                assert seen.content[0].text == f"authorization=Bearer {TOKEN}; version={init.protocol_version}"

    # Every HTTP request the bridge made (POSTs, the GET stream, the closing DELETE) carried the token.
    assert upstream.requests, "the bridge never reached the server"
    assert {headers.get("authorization") for _, headers in upstream.requests} == {f"Bearer {TOKEN}"}
    assert {"POST", "DELETE"} <= {method for method, _ in upstream.requests}


async def test_token_falls_back_to_holdgate_token_env() -> None:
    async with running_upstream() as upstream:
        params = bridge_params(upstream.url, None, env={"HOLDGATE_TOKEN": "from-env"})
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            with anyio.fail_after(30):
                await session.initialize()
                seen = await session.call_tool("headers", {})
    assert seen.content[0].text.startswith("authorization=Bearer from-env;")


async def test_modern_era_client_is_relayed_with_per_request_headers() -> None:
    """A 2026-07-28 client (stateless, no initialize): the bridge stamps the headers the server checks."""
    async with running_upstream() as upstream:
        async with Client(bridge_params(upstream.url, TOKEN), mode="auto") as client:
            with anyio.fail_after(30):
                version = client.session.protocol_version
                assert version not in (None, "2025-11-25")
                result = await client.call_tool("count", {"steps": 2})
                assert result.content[0].text == "counted 2"
                seen = await client.call_tool("headers", {})
    assert seen.content[0].text == f"authorization=Bearer {TOKEN}; version={version}"
    calls = [headers for method, headers in upstream.requests if headers.get("mcp-method") == "tools/call"]
    assert [headers.get("mcp-name") for headers in calls] == ["count", "headers"]


async def test_unreachable_server_is_reported_on_stderr_and_to_the_client_at_once(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    errlog = tmp_path / "bridge.err"
    with errlog.open("w") as err:
        async with (
            stdio_client(bridge_params(f"http://127.0.0.1:{port}/mcp", TOKEN), errlog=err) as (read, write),
            ClientSession(read, write) as session,
        ):
            # Well inside any client's own timeout: the answer is the bridge's, not the client giving up.
            with anyio.fail_after(10), pytest.raises(MCPError) as refused:
                await session.initialize()
    assert f"cannot reach holdgate at http://127.0.0.1:{port}/mcp" in refused.value.error.message
    stderr = errlog.read_text()
    assert f"cannot reach holdgate at http://127.0.0.1:{port}/mcp" in stderr
    assert TOKEN not in stderr


async def test_refused_token_is_explained_on_stderr_without_the_token(tmp_path: Path) -> None:
    errlog = tmp_path / "bridge.err"
    async with running_upstream(require_token=TOKEN) as upstream:
        with errlog.open("w") as err:
            async with (
                stdio_client(bridge_params(upstream.url, "wrong-token"), errlog=err) as (read, write),
                ClientSession(read, write) as session,
            ):
                with anyio.fail_after(30), pytest.raises(MCPError) as refused:
                    await session.initialize()
    # The body is not a JSON-RPC error: its text still reaches the client, with the status.
    assert refused.value.error.message == 'holdgate answered HTTP 401 Unauthorized: {"detail":"invalid grant token"}'
    stderr = errlog.read_text()
    assert "holdgate refused the grant token (HTTP 401)" in stderr
    assert "invalid grant token" in stderr
    assert "wrong-token" not in stderr


async def test_a_wrong_server_name_is_named_with_the_servers_there_are(tmp_path: Path) -> None:
    errlog = tmp_path / "bridge.err"
    async with run_gateway(
        tmp_path, policy={"version": "1", "default": "allow"}, servers={"time": time_server()}
    ) as gw:
        with errlog.open("w") as err:
            async with (
                stdio_client(bridge_params(gw.mcp_url("tme"), gw.tokens["agent"]), errlog=err) as (read, write),
                ClientSession(read, write) as session,
            ):
                with anyio.fail_after(30), pytest.raises(MCPError) as refused:
                    await session.initialize()
    assert refused.value.error.code == METHOD_NOT_FOUND
    assert refused.value.error.message == "no MCP server named 'tme' on this holdgate; its servers: time"
    assert "holdgate answered HTTP 404 Not Found: no MCP server named 'tme'" in errlog.read_text()


async def test_a_line_that_is_not_json_rpc_gets_a_parse_error(tmp_path: Path) -> None:
    params = bridge_params("http://127.0.0.1:9/mcp", TOKEN)
    with anyio.fail_after(30):
        async with await anyio.open_process(
            [params.command, *params.args], cwd=params.cwd, stderr=subprocess.DEVNULL
        ) as process:
            await process.stdin.send(b"this is not json\n")
            reply = b""
            while not reply.endswith(b"\n"):
                reply += await process.stdout.receive()
            await process.stdin.aclose()
            await process.wait()
    error = json.loads(reply)
    assert error["id"] is None
    assert error["error"]["code"] == -32700
