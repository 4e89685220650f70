"""A Streamable HTTP upstream (server-everything over HTTP) through the gateway.

The upstream sits behind a plain TCP relay that counts the connections it accepts, so the test
sees from the outside whether the gateway reuses its connections or opens one per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import MCPError

from tests.support.harness import EVERYTHING_ELICITATION_ANSWER, EVERYTHING_JS, free_port, run_gateway, text_of

pytestmark = pytest.mark.usefixtures("node_available")

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {"action": "allow"},
        "trigger-long-running-operation": {"action": "allow"},
        "trigger-elicitation-request": {"action": "allow"},
    },
}


@dataclass
class CountingRelay:
    """Forwards TCP to the upstream and counts the connections made to it."""

    url: str
    connections: int = 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def counting_relay(target_port: int) -> AsyncIterator[CountingRelay]:
    relay = CountingRelay(url="")
    pipes: set[asyncio.Task] = set()

    async def accept(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        relay.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        for task in (
            asyncio.create_task(_pipe(client_reader, upstream_writer)),
            asyncio.create_task(_pipe(upstream_reader, client_writer)),
        ):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    relay.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
    try:
        yield relay
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()


class EverythingHttp:
    """server-everything over Streamable HTTP on a fixed port, which can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            ["node", str(EVERYTHING_JS), "streamableHttp"],
            env={**os.environ, "PORT": str(self.port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with httpx2.AsyncClient() as http:
            for _ in range(200):
                with contextlib.suppress(httpx2.HTTPError):
                    await http.get(f"http://127.0.0.1:{self.port}/")
                    return
                await asyncio.sleep(0.05)
        raise TimeoutError("server-everything did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
async def everything_http() -> AsyncIterator[EverythingHttp]:
    server = EverythingHttp()
    await server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_calls_to_an_http_upstream_reuse_its_connections(tmp_path, everything_http):
    async with (
        counting_relay(everything_http.port) as relay,
        run_gateway(tmp_path, policy=POLICY, servers={"everything": {"url": relay.url}}) as gw,
        gw.session("everything") as session,
    ):
        await session.call_tool("echo", {"message": "warm-up"})
        before = relay.connections
        for i in range(20):
            result = await session.call_tool("echo", {"message": f"call {i}"})
            assert text_of(result) == f"Echo: call {i}"
        opened = relay.connections - before
    # The SDK client closes each POST's SSE response early; without reading its tail the
    # connection cannot be pooled and every call opens a new one (20 here).
    assert opened <= 2, f"{opened} new upstream connections for 20 calls"


async def test_progress_from_an_http_upstream_reaches_the_client(tmp_path, everything_http):
    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async with (
        counting_relay(everything_http.port) as relay,
        run_gateway(tmp_path, policy=POLICY, servers={"everything": {"url": relay.url}}) as gw,
        gw.session("everything") as session,
    ):
        result = await session.call_tool(
            "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
        )
        echo = await session.call_tool("echo", {"message": "after"})
    assert not result.is_error, result
    assert updates == [1, 2, 3]
    assert isinstance(echo.content[0], types.TextContent) and echo.content[0].text == "Echo: after"


async def test_an_http_upstream_outage_fails_with_its_name_then_reconnects(tmp_path, everything_http):
    async with (
        run_gateway(
            tmp_path, policy=POLICY, servers={"everything": {"url": f"http://127.0.0.1:{everything_http.port}/mcp"}}
        ) as gw,
        gw.session("everything") as session,
    ):
        assert text_of(await session.call_tool("echo", {"message": "before"})) == "Echo: before"
        everything_http.stop()
        with pytest.raises(MCPError) as failure:
            await session.call_tool("echo", {"message": "during"})
        assert "upstream server 'everything' is unavailable" in str(failure.value)
        await everything_http.start()
        result = await session.call_tool("echo", {"message": "after"})
    assert text_of(result) == "Echo: after", "a new upstream session on next use"


async def test_an_elicitation_on_a_calls_stream_goes_to_the_client_and_back(tmp_path, everything_http):
    """The upstream asks mid-call, on the call's own SSE stream: the gateway must route the request to the
    downstream client and carry the answer back while it still waits for the call's response."""
    asked: list[str] = []

    async def on_elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content=EVERYTHING_ELICITATION_ANSWER)

    async with (
        run_gateway(
            tmp_path, policy=POLICY, servers={"everything": {"url": f"http://127.0.0.1:{everything_http.port}/mcp"}}
        ) as gw,
        gw.session("everything", elicitation_callback=on_elicit) as session,
    ):
        result = await session.call_tool("trigger-elicitation-request", {})
    assert asked, "the elicitation never reached the downstream client"
    assert not result.is_error and "Ada" in text_of(result)


async def test_a_cancelled_call_to_an_http_upstream_leaves_the_session_working(tmp_path, everything_http):
    async with (
        counting_relay(everything_http.port) as relay,
        run_gateway(tmp_path, policy=POLICY, servers={"everything": {"url": relay.url}}) as gw,
        gw.session("everything") as session,
    ):
        with anyio.move_on_after(0.5) as scope:
            await session.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 30})
        assert scope.cancelled_caught
        result = await session.call_tool("echo", {"message": "still here"})
    assert text_of(result) == "Echo: still here"
