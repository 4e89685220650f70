"""An upstream built on the mcp SDK's own `MCPServer`, for what server-everything does not do.

Run as `python -m tests.support.sdk_upstream PORT json|resumable`, or `python -m tests.support.sdk_upstream stdio`:

- `json`: every POST is answered with plain `application/json` (`json_response=True`), the shape
  of many Python servers' answers, where server-everything always streams;
- `resumable`: SSE answers with an event store, so a tool can close its stream mid-call and the
  client must resume it with `Last-Event-ID` (the 2025-11-25 spec's polling pattern);
- `stdio`: a child process, the way most Python servers run (its 2025-era session refuses requests
  that carry the 2026-07-28 envelope).

`http_peer` runs any such HTTP peer (this one, or a Node one in tests/peers) for the length of a test.

Tools: `request-id` answers the JSON-RPC id it was called with; `trace-context` the `traceparent` it got (header
and `_meta`); `fail` raises (a tool error);
`poll` reports progress, closes its stream, and answers after `wait` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage


class MemoryEventStore(EventStore):
    """Every event of every stream, in memory, replayed in order after a given id."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._events: list[tuple[EventId, StreamId, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        stream = next((s for e, s, _ in self._events if e == last_event_id), None)
        if stream is None:
            return None
        after = int(last_event_id)
        for event_id, stream_id, message in self._events:
            if stream_id == stream and int(event_id) > after and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def http_peer(command: list[str], port: int, path: str = "/mcp") -> AsyncIterator[str]:
    """Run `command` (an MCP server listening on 127.0.0.1:`port`) until the block ends; yields its MCP URL."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}{path}"
    try:
        async with httpx2.AsyncClient() as http:
            for _ in range(200):
                with contextlib.suppress(httpx2.HTTPError):
                    await http.get(url)
                    break
                await asyncio.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def sdk_upstream_command(port: int, mode: str) -> list[str]:
    """This module as an HTTP server in `mode` (json | resumable)."""
    return [sys.executable, "-m", "tests.support.sdk_upstream", str(port), mode]


server = MCPServer(name="sdk-upstream", log_level="WARNING")


@server.tool(name="request-id", structured_output=False)
async def request_id(ctx: Context) -> str:
    return ctx.request_id


@server.tool(name="trace-context", structured_output=False)
async def trace_context(ctx: Context) -> str:
    """The W3C trace context this call arrived with: the `traceparent` header and the one in `_meta`."""
    meta = ctx.request_context.meta or {}
    headers = ctx.headers or {}
    return json.dumps({"header": headers.get("traceparent"), "meta": meta.get("traceparent")})


@server.tool(name="fail", structured_output=False)
async def fail(message: str) -> str:
    raise ToolError(message)


@server.tool(name="poll", structured_output=False)
async def poll(wait: float, ctx: Context) -> str:
    await ctx.report_progress(1, 2, "started")
    await ctx.close_sse_stream()
    await asyncio.sleep(wait)
    await ctx.report_progress(2, 2, "done")
    return f"polled for {wait}s"


@server.resource("note://readme", name="readme")
def readme() -> str:
    return "a resource, so that resources/list has something to list"


@server.prompt(name="greeting")
def greeting(name: str) -> str:
    return f"Say hello to {name}."


def stdio_command() -> list[str]:
    """This module as a stdio server (servers.json `command` + `args`)."""
    return [sys.executable, "-m", "tests.support.sdk_upstream", "stdio"]


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
        sys.exit(0)
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "json":
        server.run("streamable-http", host="127.0.0.1", port=port, json_response=True)
    else:
        server.run("streamable-http", host="127.0.0.1", port=port, event_store=MemoryEventStore(), retry_interval=100)
