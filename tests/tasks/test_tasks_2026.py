"""Held calls through the 2026-07-28 tasks extension (`io.modelcontextprotocol/tasks`), spoken on the wire:
discovery, server-directed tasks on tools/call, tasks/get, tasks/update, tasks/cancel, and what the extension
removed (tasks/result, tasks/list)."""

from __future__ import annotations

import asyncio

from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.support.harness import executed_calls, run_gateway, servers
from tests.tasks.support import TASKS_EXTENSION, Wire2026


def held_listing_policy():
    policy = approval_policy()
    policy["tools"]["list-async-jobs"] = dict(policy["tools"]["cancel-async-job"])
    return policy


def runs(tmp_path, tool):
    return [c for c in executed_calls(tmp_path) if c["tool"] == tool]


async def poll_until_ended(wire: Wire2026, task_id: str) -> dict:
    for _ in range(600):
        got = (await wire.task("tasks/get", task_id))["result"]
        if got["status"] not in ("working", "input_required"):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not end: {got}")


async def test_a_held_call_is_a_task_that_completes_with_the_result_in_tasks_get(tmp_path, database):
    async with run_gateway(tmp_path, policy=held_listing_policy(), servers=servers(tmp_path), **database) as gw:
        wire = Wire2026([gw.mcp_url("jobs")], gw.tokens["agent"])
        discovered = (await wire.request("server/discover"))["result"]
        assert discovered["capabilities"]["extensions"][TASKS_EXTENSION] == {}

        created = (await wire.call("list-async-jobs", {}))["result"]
        assert created["resultType"] == "task" and created["status"] == "working"
        assert created["ttlMs"] > 0 and created["pollIntervalMs"] == 5000
        assert "waiting for approval by alice, bob" in created["statusMessage"]
        [decision] = await wait_for_decisions(gw)
        got = (await wire.task("tasks/get", created["taskId"]))["result"]
        assert got["resultType"] == "complete" and got["status"] == "working" and "result" not in got
        ack = (
            await wire.request(
                "tasks/update", {"taskId": created["taskId"], "inputResponses": {}}, name=created["taskId"]
            )
        )["result"]
        assert ack == {"resultType": "complete", **{k: v for k, v in ack.items() if k == "_meta"}}

        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        ended = await poll_until_ended(wire, created["taskId"])
    assert ended["status"] == "completed"
    assert ended["result"].get("isError") is not True and ended["result"]["content"]
    assert len(runs(tmp_path, "list-async-jobs")) == 1


async def test_a_denial_completes_the_task_with_the_error_result_and_cancel_acknowledges(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path)) as gw:
        wire = Wire2026([gw.mcp_url("jobs")], gw.tokens["agent"])
        denied = (await wire.call("cancel-async-job", {"jobId": "job-1"}))["result"]
        cancelled = (await wire.call("cancel-async-job", {"jobId": "job-2"}))["result"]
        opened = await wait_for_decisions(gw, count=2)
        first = next(d for d in opened if d.arguments["jobId"] == "job-1")
        await api(gw, "POST", f"/api/decisions/{first.id}/deny", "bob", json={"reason": "not this one"})
        denied_end = await poll_until_ended(wire, denied["taskId"])
        ack = (await wire.task("tasks/cancel", cancelled["taskId"]))["result"]
        cancelled_end = (await wire.task("tasks/get", cancelled["taskId"]))["result"]
        [gone] = await wait_for_decisions(gw, status="cancelled")
    # The extension: `failed` is for JSON-RPC errors only; a denial is the tool error result today's call gets.
    assert denied_end["status"] == "completed" and denied_end["result"]["isError"] is True
    assert "denied by bob" in denied_end["result"]["content"][0]["text"]
    assert ack["resultType"] == "complete" and "status" not in ack
    assert cancelled_end["status"] == "cancelled"
    assert gone.arguments == {"jobId": "job-2"}
    assert runs(tmp_path, "cancel-async-job") == []


async def test_without_the_extension_a_held_call_is_held_as_before_and_tasks_methods_are_refused(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=0.3) as gw:
        wire = Wire2026([gw.mcp_url("jobs")], gw.tokens["agent"])
        plain = (await wire.call("cancel-async-job", {"jobId": "job-3"}, tasks=False))["result"]
        task = (await wire.call("cancel-async-job", {"jobId": "job-4"}))["result"]
        undeclared = await wire.task("tasks/get", task["taskId"], tasks=False)
        result = await wire.task("tasks/result", task["taskId"])
        listing = await wire.request("tasks/list")
        unknown = await wire.task("tasks/get", "t_unknown")
        allowed = (await wire.call("list-async-jobs", {}))["result"]
    assert plain["resultType"] == "complete" and "approval pending" in plain["content"][0]["text"]
    assert undeclared["error"]["code"] == -32021
    assert undeclared["error"]["data"]["requiredCapabilities"] == {"extensions": {TASKS_EXTENSION: {}}}
    assert result["error"]["code"] == -32601 and listing["error"]["code"] == -32601
    assert unknown["error"]["code"] == -32602
    assert allowed["resultType"] == "complete", "a call that is not held is answered as usual, not as a task"
