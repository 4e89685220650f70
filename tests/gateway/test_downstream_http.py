"""How holdgate answers a session's POST: plain JSON when the result is all there is, a stream otherwise."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.approvals.support import approval_policy, wait_for_decisions
from tests.support.harness import (
    Gateway,
    everything_server,
    run_gateway,
    servers,
    time_server,
    wire_request,
)

EVERYTHING_AND_TIME = {
    "version": "1",
    "default": "deny",
    "tools": {"get_current_time": {"action": "allow"}, "trigger-long-running-operation": {"action": "allow"}},
}


@pytest.mark.usefixtures("node_available")
async def test_a_result_alone_is_plain_json_and_a_call_with_progress_is_a_stream(tmp_path):
    content_types: dict[str, list[str]] = {}

    async def note_content_type(response: httpx2.Response) -> None:
        body = json.loads(response.request.content or b"{}")
        if body.get("method") == "tools/call":
            content_types.setdefault(body["params"]["name"], []).append(response.headers["content-type"])

    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    upstreams = {"time": time_server(), "everything": everything_server()}
    async with run_gateway(tmp_path, policy=EVERYTHING_AND_TIME, servers=upstreams) as gw:
        async with _session(gw, "time", note_content_type) as session:
            now = await session.call_tool("get_current_time", {"timezone": "UTC"})
        async with _session(gw, "everything", note_content_type) as session:
            slow = await session.call_tool(
                "trigger-long-running-operation", {"duration": 0.2, "steps": 2}, progress_callback=on_progress
            )

    assert not now.is_error and "UTC" in now.content[0].text
    assert not slow.is_error and progress == [1, 2]
    assert content_types == {
        "get_current_time": ["application/json"],
        "trigger-long-running-operation": ["text/event-stream"],
    }


async def test_a_held_call_silent_past_the_keepalive_gets_a_pinged_stream_then_its_answer(tmp_path):
    async with (
        run_gateway(
            tmp_path,
            policy=approval_policy(),
            servers=servers(tmp_path),
            stream_keepalive_s=0.1,
            approval_hold_s=0.5,
        ) as gw,
        gw.wire("jobs") as http,
    ):
        url = gw.mcp_url("jobs")
        # No progress token: the call waits for a person without a word until the hold bound (0.5 s).
        call = wire_request(2, "tools/call", {"name": "cancel-async-job", "arguments": {"jobId": "job-1"}})
        answer = await http.post(url, json=call)

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.text.startswith(": ping\r\n\r\n: ping\r\n\r\n")
    [data] = [line.removeprefix("data: ") for line in answer.text.splitlines() if line.startswith("data: ")]
    result = json.loads(data)
    assert result["id"] == 2 and result["result"]["isError"] is True
    assert "approval" in result["result"]["content"][0]["text"]


async def test_a_call_in_flight_when_its_session_is_closed_is_told_so_not_given_a_500(tmp_path):
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), stream_keepalive_s=30, approval_hold_s=30
        ) as gw,
        gw.wire("jobs") as http,
    ):
        url = gw.mcp_url("jobs")
        call = wire_request(2, "tools/call", {"name": "cancel-async-job", "arguments": {"jobId": "job-1"}})
        held = asyncio.create_task(http.post(url, json=call))  # held: nothing is sent within the keep-alive
        await wait_for_decisions(gw, 1)
        closed = await http.delete(url)
        answer = await asyncio.wait_for(held, 20)

    assert closed.status_code == 200
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert "session was closed before this request completed" in error["message"]


@asynccontextmanager
async def _session(gw: Gateway, server: str, on_response) -> AsyncIterator[ClientSession]:
    """An initialized SDK client session whose HTTP client reports each response to `on_response`."""
    headers = {"Authorization": f"Bearer {gw.tokens['agent']}"}
    async with (
        httpx2.AsyncClient(headers=headers, event_hooks={"response": [on_response]}) as http,
        streamable_http_client(gw.mcp_url(server), http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session
