"""Tasks need no affinity: two holdgate processes on one PostgreSQL database answer any task request, and a
task outlives the replica that made it."""

from __future__ import annotations

import asyncio
import os
import signal

from tests.approvals.support import api, approval_policy
from tests.replicas.test_replicas import cancelled_jobs, pending_on, two_replicas
from tests.tasks.support import Wire2026, wire_2025
from tests.tasks.test_passthrough import open_gate, peer, peer_policy
from tests.tasks.test_tasks_2026 import poll_until_ended


async def until_ended(wire: Wire2026, task_id: str, url: str) -> dict:
    for _ in range(600):
        got = (await wire.task("tasks/get", task_id, url=url))["result"]
        if got["status"] != "working":
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not end: {got}")


async def test_a_2026_clients_call_tasks_get_and_result_go_to_different_replicas(tmp_path, postgres_url):
    async with two_replicas(tmp_path, postgres_url, approval_policy()) as (a, b):
        wire = Wire2026([a.mcp_url("jobs"), b.mcp_url("jobs")], a.tokens["agent"])
        task = (await wire.call("cancel-async-job", {"jobId": "rr-1"}, url=a.mcp_url("jobs")))["result"]
        working = (await wire.task("tasks/get", task["taskId"], url=b.mcp_url("jobs")))["result"]
        [decision] = await pending_on(b, 1)
        approved = await api(b, "POST", f"/api/decisions/{decision['id']}/approve", "alice")
        ended = await until_ended(wire, task["taskId"], b.mcp_url("jobs"))
        again = (await wire.task("tasks/get", task["taskId"], url=a.mcp_url("jobs")))["result"]
    assert task["resultType"] == "task" and working["status"] == "working"
    assert approved.status_code == 200
    assert ended["status"] == "completed" and "holdgate" not in ended["result"]["content"][0]["text"]
    assert again["result"] == ended["result"]
    assert cancelled_jobs(tmp_path) == ["rr-1"], "run once, by one of the replicas"


async def test_a_task_outlives_the_replica_that_made_it(tmp_path, postgres_url):
    async with two_replicas(tmp_path, postgres_url, approval_policy()) as (a, b):
        wire = Wire2026([b.mcp_url("jobs")], a.tokens["agent"])
        task = (await wire.call("cancel-async-job", {"jobId": "rr-2"}, url=a.mcp_url("jobs")))["result"]
        [decision] = await pending_on(b, 1)
        os.kill(a.pid, signal.SIGKILL)  # the replica that made the task and drives it is gone
        await api(b, "POST", f"/api/decisions/{decision['id']}/approve", "alice")
        ended = await until_ended(wire, task["taskId"], b.mcp_url("jobs"))
    assert ended["status"] == "completed"
    assert cancelled_jobs(tmp_path) == ["rr-2"]


async def test_a_2025_task_made_on_one_replica_is_read_and_cancelled_on_the_other(tmp_path, postgres_url):
    async with (
        two_replicas(tmp_path, postgres_url, approval_policy()) as (a, b),
        wire_2025(a, "jobs") as on_a,
        wire_2025(b, "jobs") as on_b,
    ):
        task = (await on_a.call_as_task("cancel-async-job", {"jobId": "rr-3"}))["result"]["task"]
        got = (await on_b.request("tasks/get", {"taskId": task["taskId"]}))["result"]
        listed = (await on_b.request("tasks/list"))["result"]["tasks"]
        cancelled = (await on_b.request("tasks/cancel", {"taskId": task["taskId"]}))["result"]
        seen_on_a = await on_a.request("tasks/result", {"taskId": task["taskId"]})
    assert got["status"] == "working" and [t["taskId"] for t in listed] == [task["taskId"]]
    assert cancelled["status"] == "cancelled"
    assert "cancelled task" in seen_on_a["error"]["message"]
    assert cancelled_jobs(tmp_path) == []


async def test_a_passed_through_task_is_reached_on_its_replica_and_another_says_where_it_lives(tmp_path, postgres_url):
    """The upstream's own task lives on the upstream connection of the replica that made it: that replica reaches
    it; the other one (its own upstream child knows no such task) says so (-32603) and changes nothing."""
    async with two_replicas(tmp_path, postgres_url, peer_policy(), upstreams={"peer": peer(tmp_path)}) as (a, b):
        wire = Wire2026([a.mcp_url("peer")], a.tokens["agent"])
        task = (await wire.call("gate", {"name": "r1"}))["result"]
        elsewhere = await wire.task("tasks/get", task["taskId"], url=b.mcp_url("peer"))
        cancel_elsewhere = await wire.task("tasks/cancel", task["taskId"], url=b.mcp_url("peer"))
        still = (await wire.task("tasks/get", task["taskId"], url=a.mcp_url("peer")))["result"]
        open_gate(tmp_path, "r1")
        ended = await poll_until_ended(wire, task["taskId"])
    assert elsewhere["error"]["code"] == cancel_elsewhere["error"]["code"] == -32603
    assert "another holdgate replica" in elsewhere["error"]["message"]
    assert still["status"] == "working", "the cancel on the other replica changed nothing"
    assert ended["status"] == "completed" and ended["result"]["content"][0]["text"] == "opened r1"
