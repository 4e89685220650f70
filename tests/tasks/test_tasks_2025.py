"""Held calls as 2025-11-25 tasks, spoken on the wire: capability, tools/list, tools/call with `task`,
tasks/get, tasks/result, tasks/list, tasks/cancel."""

from __future__ import annotations

import asyncio

from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.support.harness import executed_calls, run_gateway, servers
from tests.tasks.support import wire_2025


def cancels(tmp_path):
    return [c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


def listings(tmp_path):
    return [c for c in executed_calls(tmp_path) if c["tool"] == "list-async-jobs"]


def held_listing_policy():
    """cancel-async-job and list-async-jobs both wait for group ops (list-async-jobs succeeds with no set-up)."""
    policy = approval_policy()
    policy["tools"]["list-async-jobs"] = dict(policy["tools"]["cancel-async-job"])
    return policy


async def test_a_held_call_becomes_a_task_at_once_and_completes_with_the_upstreams_result(tmp_path, database):
    async with (
        run_gateway(tmp_path, policy=held_listing_policy(), servers=servers(tmp_path), **database) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        caps = wire.initialize_result["capabilities"]
        assert caps["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        listed = (await wire.request("tools/list"))["result"]["tools"]
        support = {t["name"]: (t.get("execution") or {}).get("taskSupport") for t in listed}
        assert support["cancel-async-job"] == support["list-async-jobs"] == "optional"

        created = (await wire.call_as_task("list-async-jobs", {}))["result"]
        task = created["task"]
        assert task["status"] == "working"
        assert task["taskId"].startswith("t_")
        assert "waiting for approval by alice, bob" in task["statusMessage"]
        assert task["ttl"] >= 60_000 and task["pollInterval"] == 5000
        [decision] = await wait_for_decisions(gw)
        assert decision.id in task["statusMessage"]
        assert listings(tmp_path) == [], "nothing runs before a person approves"

        got = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
        assert got["status"] == "working" and got["taskId"] == task["taskId"]

        waiting = asyncio.create_task(wire.request("tasks/result", {"taskId": task["taskId"]}))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "tasks/result blocks while the task is working"
        approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        assert approved.status_code == 200
        result = (await asyncio.wait_for(waiting, 30))["result"]
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}
        assert result.get("isError") is not True and "resultType" not in result
        assert "holdgate" not in result["content"][0]["text"], "the upstream's own result"

        done = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
        assert done["status"] == "completed"
        listed_tasks = (await wire.request("tasks/list"))["result"]["tasks"]
        assert [t["taskId"] for t in listed_tasks] == [task["taskId"]]
        again = await wire.request("tasks/result", {"taskId": task["taskId"]})
        assert again["result"]["content"] == result["content"]
    assert len(listings(tmp_path)) == 1, "the approved call ran exactly once"


async def test_a_denied_task_fails_with_the_denial_and_the_call_never_runs(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path)) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        task = (await wire.call_as_task("cancel-async-job", {"jobId": "job-2"}))["result"]["task"]
        [decision] = await wait_for_decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "job still needed"})
        result = (await wire.request("tasks/result", {"taskId": task["taskId"]}))["result"]
        got = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
    assert result["isError"] is True
    assert f"denied by bob (decision {decision.id}): job still needed" in result["content"][0]["text"]
    assert got["status"] == "failed" and "denied by bob" in got["statusMessage"]
    assert cancels(tmp_path) == []


async def test_a_tool_error_result_fails_the_task_and_tasks_result_gives_it_as_the_call_would(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path)) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        task = (await wire.call_as_task("cancel-async-job", {"jobId": "job-404"}))["result"]["task"]
        [decision] = await wait_for_decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        result = (await wire.request("tasks/result", {"taskId": task["taskId"]}))["result"]
        got = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
    assert result["isError"] is True and "job-404 not found" in result["content"][0]["text"]
    assert got["status"] == "failed", "2025-11-25: a tool result with isError fails the task"
    assert len(cancels(tmp_path)) == 1
