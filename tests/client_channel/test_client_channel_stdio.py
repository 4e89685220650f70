"""The client channel for a stdio client: the SDK's stdio client starts `holdgate bridge` (as Claude Desktop would),
which relays to holdgate over HTTP; the elicitation and its completion travel back through the bridge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import mcp_types as types
from mcp import ClientSession, stdio_client

from tests.approvals.support import api, wait_for_decisions
from tests.client_channel.support import PUBLIC_URL, Person, approve, client_policy, runs
from tests.gateway.test_bridge import bridge_params
from tests.support.harness import run_gateway, servers, text_of


async def test_form_mode_through_the_stdio_bridge_approves_and_runs(tmp_path: Path) -> None:
    person = Person(approve("through the bridge"))
    async with run_gateway(tmp_path, policy=client_policy(approver=True), servers=servers(tmp_path)) as gw:
        with (tmp_path / "bridge.err").open("w") as err:
            async with (
                stdio_client(bridge_params(gw.mcp_url("jobs"), gw.tokens["agent"]), errlog=err) as (read, write),
                ClientSession(read, write, elicitation_callback=person) as session,
            ):
                await session.initialize()
                result = await session.call_tool("cancel-async-job", {"jobId": "job-1"})
        [decision] = await wait_for_decisions(gw, status="approved")
    assert "Job job-1 not found" in text_of(result)
    assert decision.decided_by == "client:agent" and len(person.forms) == 1
    assert len(runs(tmp_path)) == 1


async def test_url_mode_through_the_stdio_bridge_is_completed_when_the_decision_ends(tmp_path: Path) -> None:
    person = Person(types.ElicitResult(action="accept"))
    completed: list[str] = []

    async def on_message(message: object) -> None:
        if isinstance(message, types.ElicitCompleteNotification):
            completed.append(message.params.elicitation_id)

    policy = client_policy(approver=False)
    async with run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), public_url=PUBLIC_URL) as gw:
        with (tmp_path / "bridge.err").open("w") as err:
            async with (
                stdio_client(bridge_params(gw.mcp_url("jobs"), gw.tokens["agent"]), errlog=err) as (read, write),
                ClientSession(read, write, elicitation_callback=person, message_handler=on_message) as session,
            ):
                await session.initialize()
                call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
                [decision] = await wait_for_decisions(gw)
                while not person.urls:
                    await asyncio.sleep(0.02)
                await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
                result = await call
    [asked] = person.urls
    assert asked.url == f"{PUBLIC_URL}/decisions/{decision.id}"
    assert completed == [asked.elicitation_id]
    assert "Job job-1 not found" in text_of(result)
