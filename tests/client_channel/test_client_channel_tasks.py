"""The client channel for a held task of the 2026-07-28 tasks extension: `tasks/get` shows the task
`input_required` with holdgate's question in `inputRequests`, and `tasks/update` brings the answer, once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2

from tests.approvals.support import api, wait_for_decisions
from tests.client_channel.support import PUBLIC_URL, client_policy, runs
from tests.support.harness import run_gateway, servers, wire_answer, wire_request
from tests.tasks.support import TASKS_EXTENSION, Wire2026

ELICITATION = {"form": {}, "url": {}}


class ElicitingWire(Wire2026):
    """2026-07-28 requests that declare the tasks extension and elicitation (both modes)."""

    async def send(self, method: str, params: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {
                "extensions": {TASKS_EXTENSION: {}},
                "elicitation": ELICITATION,
            },
        }
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": method,
            "Authorization": f"Bearer {self.token}",
            **({"Mcp-Name": name} if name else {}),
        }
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.post(
                self.urls[0], json=wire_request(next(self.ids), method, {**params, "_meta": meta}), headers=headers
            )
        return wire_answer(response)


async def poll(wire: ElicitingWire, task_id: str, until: tuple[str, ...]) -> dict:
    for _ in range(600):
        got = (await wire.send("tasks/get", {"taskId": task_id}, name=task_id))["result"]
        if got["status"] in until:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} stayed {got['status']}")


async def test_a_task_asks_the_client_in_tasks_get_and_tasks_update_approves_once(tmp_path, database):
    async with run_gateway(tmp_path, policy=client_policy(approver=True), servers=servers(tmp_path), **database) as gw:
        wire = ElicitingWire([gw.mcp_url("jobs")], gw.tokens["agent"])
        created = (
            await wire.send(
                "tools/call", {"name": "cancel-async-job", "arguments": {"jobId": "j"}}, name="cancel-async-job"
            )
        )["result"]
        assert created["resultType"] == "task"
        task_id = created["taskId"]
        asked = (await wire.send("tasks/get", {"taskId": task_id}, name=task_id))["result"]
        [decision] = await wait_for_decisions(gw)
        approve = {"holdgate_approval": {"action": "accept", "content": {"decision": "approve"}}}
        ack = await wire.send("tasks/update", {"taskId": task_id, "inputResponses": approve}, name=task_id)
        ended = await poll(wire, task_id, ("completed", "failed"))
        again = await wire.send("tasks/update", {"taskId": task_id, "inputResponses": approve}, name=task_id)
        _, votes = await gw.state.approvals.service.get(decision.id)
    assert asked["status"] == "input_required"
    request = asked["inputRequests"]["holdgate_approval"]
    assert request["method"] == "elicitation/create" and request["params"]["mode"] == "form"
    assert decision.id in request["params"]["message"]
    assert ack["result"]["resultType"] == "complete" and again["result"]["resultType"] == "complete"
    assert ended["status"] == "completed" and "Job j not found" in ended["result"]["content"][0]["text"]
    assert [(v.approver, v.value) for v in votes] == [("client:agent", "approve")]
    assert len(runs(tmp_path)) == 1


async def test_a_url_question_is_answered_once_and_the_task_waits_for_the_dashboard(tmp_path):
    async with run_gateway(
        tmp_path, policy=client_policy(approver=False), servers=servers(tmp_path), public_url=PUBLIC_URL
    ) as gw:
        wire = ElicitingWire([gw.mcp_url("jobs")], gw.tokens["agent"])
        created = (
            await wire.send(
                "tools/call", {"name": "cancel-async-job", "arguments": {"jobId": "j"}}, name="cancel-async-job"
            )
        )["result"]
        task_id = created["taskId"]
        asked = (await wire.send("tasks/get", {"taskId": task_id}, name=task_id))["result"]
        [decision] = await wait_for_decisions(gw)
        as_form = {"holdgate_approval": {"action": "accept", "content": {"decision": "approve"}}}
        await wire.send("tasks/update", {"taskId": task_id, "inputResponses": as_form}, name=task_id)
        after = (await wire.send("tasks/get", {"taskId": task_id}, name=task_id))["result"]
        still = await gw.state.approvals.holding.load(decision.id)
        await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "no"})
        ended = await poll(wire, task_id, ("completed", "failed"))
    assert asked["status"] == "input_required"
    assert asked["inputRequests"]["holdgate_approval"]["params"]["url"] == f"{PUBLIC_URL}/decisions/{decision.id}"
    assert after["status"] == "working" and "inputRequests" not in after  # answered: not asked again
    assert still.status == "pending"  # a URL accept is no vote, whatever content comes with it
    assert "denied by bob" in ended["result"]["content"][0]["text"]
    assert runs(tmp_path) == []
