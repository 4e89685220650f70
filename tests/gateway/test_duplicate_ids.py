"""Two requests with the same JSON-RPC id in flight in one session: the second is refused, the first answered.

Responses find their request by id, so a session that took both would route the first one's answer
to nobody. The first request here is held open deterministically: server-everything's
`trigger-elicitation-request` asks the client a question on the first request's stream and waits.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest

from tests.support.harness import (
    EVERYTHING_ELICITATION_ANSWER,
    WIRE_HEADERS,
    everything_server,
    run_gateway,
    wire_request,
)

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {"echo": {"action": "allow"}, "trigger-elicitation-request": {"action": "allow"}},
}


def sse_messages(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data:").strip()) for line in lines if line.startswith("data:")]


@pytest.mark.usefixtures("node_available")
@pytest.mark.parametrize(
    ("duplicate_id", "duplicate_method"),
    [
        (7, "tools/call"),  # holdgate's JSON fast path
        ("7", "tools/call"),  # the SDK keys request streams by str(id): the same id to it
        (7, "initialize"),  # a request the SDK's own path answers
    ],
)
async def test_a_request_reusing_an_in_flight_id_is_refused_and_the_first_completes(
    tmp_path, duplicate_id, duplicate_method
):
    async with (
        run_gateway(tmp_path, policy=POLICY, servers={"everything": everything_server()}) as gw,
        httpx2.AsyncClient(
            headers={**WIRE_HEADERS, "Authorization": f"Bearer {gw.tokens['agent']}"}, timeout=60
        ) as http,
    ):
        url = gw.mcp_url("everything")
        hello = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {}},
            "clientInfo": {"name": "wire-test", "version": "0"},
        }
        opened = await http.post(url, json=wire_request(1, "initialize", hello))
        http.headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

        first_call = wire_request(7, "tools/call", {"name": "trigger-elicitation-request", "arguments": {}})
        # Bounded: with the first request's answer lost its stream only pings, and would never end.
        async with asyncio.timeout(30), http.stream("POST", url, json=first_call) as first:
            lines = first.aiter_lines()
            seen: list[str] = []
            while not (asked := [m for m in sse_messages(seen) if m.get("method") == "elicitation/create"]):
                seen.append(await anext(lines))  # until the question: the first request is in flight upstream
            question = asked[0]

            if duplicate_method == "initialize":
                duplicate = {**wire_request(7, "initialize", hello), "id": duplicate_id}
            else:
                echo = {"name": "echo", "arguments": {"message": "hi"}}
                duplicate = {**wire_request(7, "tools/call", echo), "id": duplicate_id}
            refused = await http.post(url, json=duplicate)

            answer = {"action": "accept", "content": EVERYTHING_ELICITATION_ANSWER}
            await http.post(url, json={"jsonrpc": "2.0", "id": question["id"], "result": answer})
            rest = [line async for line in lines]

        # A new id after the first was answered is fine again.
        later = await http.post(
            url, json=wire_request(7, "tools/call", {"name": "echo", "arguments": {"message": "x"}})
        )

    assert refused.status_code == 400
    error = refused.json()
    assert error["id"] == duplicate_id
    assert error["error"]["code"] == -32600 and "already in flight" in error["error"]["message"]
    responses = [m for m in sse_messages(rest) if "result" in m or "error" in m]
    assert len(responses) == 1 and responses[0]["id"] == 7 and "result" in responses[0]
    assert responses[0]["result"].get("isError") is not True
    assert later.status_code == 200 and later.json()["result"]["content"][0]["text"] == "Echo: x"
