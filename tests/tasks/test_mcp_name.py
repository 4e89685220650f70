"""`Mcp-Name` on 2026-07-28 requests over HTTP: the extension's tasks/get|update|cancel must name the task
(holdgate checks it; the SDK does not), tools/call must name the tool (the SDK checks it). A missing or different
header is refused with -32020 and HTTP 400, and nothing changes."""

from __future__ import annotations

import httpx2

from tests.approvals.support import approval_policy, decisions, wait_for_decisions
from tests.support.harness import run_gateway, servers, wire_request
from tests.tasks.support import MODERN, Wire2026, modern_meta


async def post(gw, method: str, params: dict, *, name: str | None, extra: list | None = None) -> httpx2.Response:
    headers = [
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", MODERN),
        ("Mcp-Method", method),
        ("Authorization", f"Bearer {gw.tokens['agent']}"),
    ]
    if name is not None:
        headers.append(("Mcp-Name", name))
    headers += extra or []
    body = wire_request(77, method, {**params, "_meta": modern_meta()})
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(gw.mcp_url("jobs"), json=body, headers=headers)


async def test_task_requests_must_name_their_task_and_calls_their_tool(tmp_path, database):
    async with run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), **database) as gw:
        wire = Wire2026([gw.mcp_url("jobs")], gw.tokens["agent"])
        task = (await wire.call("cancel-async-job", {"jobId": "n-1"}))["result"]
        [decision] = await wait_for_decisions(gw)
        task_id = task["taskId"]
        refused = {
            "get, no header": await post(gw, "tasks/get", {"taskId": task_id}, name=None),
            "cancel, another task": await post(gw, "tasks/cancel", {"taskId": task_id}, name="t_other"),
            "update, the tool's name": await post(
                gw, "tasks/update", {"taskId": task_id, "inputResponses": {}}, name="cancel-async-job"
            ),
            "cancel, twice": await post(
                gw, "tasks/cancel", {"taskId": task_id}, name=task_id, extra=[("Mcp-Name", task_id)]
            ),
            "cancel, bad encoding": await post(gw, "tasks/cancel", {"taskId": task_id}, name="=?base64?%%%?="),
            "call, another tool": await post(
                gw, "tools/call", {"name": "cancel-async-job", "arguments": {"jobId": "n-2"}}, name="list-async-jobs"
            ),
            "call, no header": await post(
                gw, "tools/call", {"name": "cancel-async-job", "arguments": {"jobId": "n-3"}}, name=None
            ),
        }
        named = await post(gw, "tasks/get", {"taskId": task_id}, name=task_id)
        encoded = await post(gw, "tasks/get", {"taskId": task_id}, name="=?base64?" + _b64(task_id) + "?=")
        after = await decisions(gw)
    for why, response in refused.items():
        assert response.status_code == 400, why
        assert response.json()["error"]["code"] == -32020, why
    assert named.status_code == 200 and named.json()["result"]["status"] == "working"
    assert encoded.status_code == 200 and encoded.json()["result"]["taskId"] == task_id
    assert [(d.id, d.status) for d in after] == [(decision.id, "pending")], "no cancel, no new decision"


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
