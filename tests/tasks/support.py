"""Speaking tasks on the wire by hand (the SDK has the task types but no task runtime), in both revisions."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2

from tests.support.harness import WIRE_HEADERS, Gateway, wire_answer, wire_request

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
MODERN = "2026-07-28"


class Wire2025:
    """An initialized 2025-11-25 session that declares task support, spoken as raw JSON-RPC."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.ids = itertools.count(10)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.http.post(self.url, json=wire_request(next(self.ids), method, params))
        return wire_answer(response)

    async def call_as_task(self, tool: str, arguments: dict[str, Any], ttl: int | None = 60_000) -> dict[str, Any]:
        return await self.request("tools/call", {"name": tool, "arguments": arguments, "task": {"ttl": ttl}})


@asynccontextmanager
async def wire_2025(gw: Gateway, server: str, grant: str = "agent") -> AsyncIterator[Wire2025]:
    headers = {**WIRE_HEADERS, "Authorization": f"Bearer {gw.tokens[grant]}"}
    hello = {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tasks": {"list": {}, "cancel": {}}},
        "clientInfo": {"name": "task-wire-test", "version": "0"},
    }
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
        opened = await http.post(gw.mcp_url(server), json=wire_request(1, "initialize", hello))
        wire = Wire2025(http, gw.mcp_url(server))
        wire.initialize_result = wire_answer(opened)["result"]  # type: ignore[attr-defined]
        http.headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        await http.post(gw.mcp_url(server), json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield wire


def modern_meta(*, tasks: bool = True) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"extensions": {TASKS_EXTENSION: {}}} if tasks else {}
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "task-wire-test", "version": "0"},
    }


class Wire2026:
    """Stateless 2026-07-28 requests, one POST each (any replica may answer any of them)."""

    def __init__(self, gw_urls: list[str], token: str) -> None:
        self.urls = gw_urls
        self.token = token
        self.ids = itertools.count(1)
        self.turn = itertools.cycle(range(len(gw_urls)))

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        tasks: bool = True,
        name: str | None = None,
        url: str | None = None,
    ) -> dict[str, Any]:
        params = {**(params or {}), "_meta": modern_meta(tasks=tasks)}
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": method,
            "Authorization": f"Bearer {self.token}",
        }
        if name is not None:
            headers["Mcp-Name"] = name
        target = url or self.urls[next(self.turn)]
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.post(target, json=wire_request(next(self.ids), method, params), headers=headers)
        return wire_answer(response)

    async def call(self, tool: str, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return await self.request("tools/call", {"name": tool, "arguments": arguments}, name=tool, **kwargs)

    async def task(self, method: str, task_id: str, **kwargs: Any) -> dict[str, Any]:
        return await self.request(method, {"taskId": task_id}, name=task_id, **kwargs)
