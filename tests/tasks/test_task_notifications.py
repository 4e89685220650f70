"""`notifications/tasks/status` (2025-11-25): the session that made a task hears of its status changes on its
standalone (GET) stream, with the full Task; best-effort, so clients still poll (the page says they must not rely
on it), and another session of the same grant hears nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json

from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.support.harness import run_gateway, servers
from tests.tasks.support import wire_2025
from tests.tasks.test_passthrough import peer, peer_policy


@contextlib.asynccontextmanager
async def standalone_stream(wire):
    """The session's GET stream, its JSON-RPC messages collected as they come."""
    heard: list[dict] = []
    ready = asyncio.Event()

    async def read() -> None:
        async with wire.http.stream("GET", wire.url, headers={"Accept": "text/event-stream"}) as response:
            ready.set()
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip():
                    heard.append(json.loads(line[5:]))

    reader = asyncio.create_task(read())
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield heard
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


def statuses(heard: list[dict], task_id: str) -> list[str]:
    return [
        m["params"]["status"]
        for m in heard
        if m.get("method") == "notifications/tasks/status" and m["params"]["taskId"] == task_id
    ]


async def until(check, what: str) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_the_session_that_made_a_held_task_hears_it_complete(tmp_path):
    policy = approval_policy()
    policy["tools"]["list-async-jobs"] = dict(policy["tools"]["cancel-async-job"])
    async with (
        run_gateway(tmp_path, policy=policy, servers=servers(tmp_path)) as gw,
        wire_2025(gw, "jobs") as wire,
        wire_2025(gw, "jobs") as bystander,
        standalone_stream(wire) as heard,
        standalone_stream(bystander) as bystander_heard,
    ):
        task = (await wire.call_as_task("list-async-jobs", {}))["result"]["task"]
        cancelled = (await wire.call_as_task("cancel-async-job", {"jobId": "n-1"}))["result"]["task"]
        opened = await wait_for_decisions(gw, count=2)
        listing = next(d for d in opened if d.tool == "list-async-jobs")
        await api(gw, "POST", f"/api/decisions/{listing.id}/approve", "alice")
        await wire.request("tasks/cancel", {"taskId": cancelled["taskId"]})
        await until(lambda: statuses(heard, task["taskId"]) and statuses(heard, cancelled["taskId"]), "notified")
        last = next(m for m in reversed(heard) if m.get("params", {}).get("taskId") == task["taskId"])
        polled = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
    assert statuses(heard, task["taskId"]) == ["completed"], "one change the client sees (running is working)"
    assert statuses(heard, cancelled["taskId"]) == ["cancelled"]
    assert last["params"]["createdAt"] and last["params"]["ttl"] > 0, "the full Task"
    assert polled["status"] == "completed", "and polling says the same"
    assert [m for m in bystander_heard if m.get("method") == "notifications/tasks/status"] == []


async def test_a_passed_through_task_is_notified_when_holdgate_sees_it_change(tmp_path):
    async with (
        run_gateway(tmp_path, policy=peer_policy(), servers={"peer": peer(tmp_path)}) as gw,
        wire_2025(gw, "peer") as wire,
        standalone_stream(wire) as heard,
    ):
        task = (await wire.call_as_task("refuse", {}))["result"]["task"]
        await wire.request("tasks/result", {"taskId": task["taskId"]})
        await until(lambda: statuses(heard, task["taskId"]), "notified")
    assert statuses(heard, task["taskId"]) == ["failed"]
