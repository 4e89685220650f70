"""Held calls as 2025-11-25 tasks, spoken on the wire: capability, tools/list, tools/call with `task`,
tasks/get, tasks/result, tasks/list, tasks/cancel."""

from __future__ import annotations

import asyncio

from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.support.harness import executed_calls, run_gateway, servers, wire_answer
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


async def test_tasks_cancel_cancels_the_decision_and_the_call_never_runs(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path)) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        task = (await wire.call_as_task("cancel-async-job", {"jobId": "job-3"}))["result"]["task"]
        [decision] = await wait_for_decisions(gw)
        waiting = asyncio.create_task(wire.request("tasks/result", {"taskId": task["taskId"]}))
        cancelled = (await wire.request("tasks/cancel", {"taskId": task["taskId"]}))["result"]
        ended = await asyncio.wait_for(waiting, 30)
        late = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        twice = await wire.request("tasks/cancel", {"taskId": task["taskId"]})
        got = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
        [ended_decision] = await wait_for_decisions(gw, status="cancelled")
    assert cancelled["status"] == "cancelled" and cancelled["taskId"] == task["taskId"]
    assert "cancelled task" in ended["error"]["message"]
    assert late.status_code == 409 and "cancelled" in late.json()["detail"]
    assert twice["error"]["code"] == -32602 and "already ended (cancelled)" in twice["error"]["message"]
    assert got["status"] == "cancelled"
    assert ended_decision.id == decision.id and ended_decision.decided_by == "agent"
    assert cancels(tmp_path) == []


async def test_tasks_cancel_racing_an_approval_ends_each_decision_once(tmp_path, database):
    """Ten tasks, each cancelled by the agent while alice approves it: one of the two wins each decision; a
    cancelled decision's call never runs, an approved one's runs at most once, and a cancel that comes after the
    call ran is refused (the task had ended)."""
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), **database) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        tasks = [
            (await wire.call_as_task("cancel-async-job", {"jobId": f"race-{i}"}))["result"]["task"] for i in range(10)
        ]
        opened = await wait_for_decisions(gw, count=10)
        by_job = {d.arguments["jobId"]: d.id for d in opened}
        races = []
        for i, task in enumerate(tasks):
            approve = api(gw, "POST", f"/api/decisions/{by_job[f'race-{i}']}/approve", "alice")
            cancel = wire.request("tasks/cancel", {"taskId": task["taskId"]})
            races.append(asyncio.gather(approve, cancel))
        answers = await asyncio.gather(*races)
        service = gw.state.approvals.service
        for _ in range(300):  # an approved call the cancel did not stop is run (or given back) in the background
            rows = [await service.load(by_job[f"race-{i}"]) for i in range(10)]
            if all(r.status == "cancelled" or r.outcome is not None or r.claimed_at is None for r in rows):
                break
            await asyncio.sleep(0.05)
    ran = {c["arguments"]["jobId"] for c in cancels(tmp_path)}
    assert len(cancels(tmp_path)) == len(ran), "no call ran twice"
    for i, (approved, cancelled) in enumerate(answers):
        row = rows[i]
        assert row.status in ("approved", "cancelled")
        assert (approved.status_code == 200) == (row.status == "approved"), "the approval won iff it says so"
        if row.status == "cancelled":
            assert approved.status_code == 409 and f"race-{i}" not in ran
        if "error" in cancelled:  # the approved call had already run when the cancel came: too late, and said so
            assert row.status == "approved" and row.outcome is not None
            assert cancelled["error"]["code"] == -32602 and "already ended" in cancelled["error"]["message"]
        else:
            assert cancelled["result"]["status"] == "cancelled"


async def test_unknown_foreign_and_ended_tasks_are_refused_alike(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), grants=["agent", "other"]) as gw,
        wire_2025(gw, "jobs") as wire,
        wire_2025(gw, "jobs", grant="other") as other,
    ):
        task = (await wire.call_as_task("cancel-async-job", {"jobId": "job-5"}))["result"]["task"]
        foreign = await other.request("tasks/get", {"taskId": task["taskId"]})
        foreign_cancel = await other.request("tasks/cancel", {"taskId": task["taskId"]})
        unknown = await wire.request("tasks/result", {"taskId": "t_nope"})
        empty = await wire.request("tasks/get", {"taskId": ""})
        others_list = (await other.request("tasks/list"))["result"]["tasks"]
        bad_cursor = await wire.request("tasks/list", {"cursor": "not-a-cursor"})
        not_held = await wire.call_as_task("list-async-jobs", {})
        bad_ttl = await wire.call_as_task("cancel-async-job", {"jobId": "job-6"}, ttl=-5)
        still = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
    assert foreign["error"]["code"] == foreign_cancel["error"]["code"] == unknown["error"]["code"] == -32602
    assert "no task" in foreign["error"]["message"] and "no task" in unknown["error"]["message"]
    assert empty["error"]["code"] == -32602
    assert others_list == [], "tasks/list shows a grant its own tasks only"
    assert bad_cursor["error"]["code"] == -32602 and "cursor" in bad_cursor["error"]["message"]
    assert not_held["error"]["code"] == -32601 and "does not support tasks" in not_held["error"]["message"]
    assert bad_ttl["error"]["code"] == -32602
    assert still["status"] == "working", "another grant's cancel changed nothing"


async def test_a_client_that_does_not_ask_for_a_task_is_held_as_before(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=0.3) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        answer = await wire.request("tools/call", {"name": "cancel-async-job", "arguments": {"jobId": "job-7"}})
    assert "task" not in answer["result"]
    assert answer["result"]["isError"] is True and "approval pending" in answer["result"]["content"][0]["text"]


async def test_an_expired_decision_fails_its_task_with_the_timeout_wording(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(timeout="1s"), servers=servers(tmp_path)) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        task = (await wire.call_as_task("cancel-async-job", {"jobId": "job-8"}))["result"]["task"]
        result = (await wire.request("tasks/result", {"taskId": task["taskId"]}))["result"]
        got = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
    assert result["isError"] is True and "This is a timeout, not a person's denial" in result["content"][0]["text"]
    assert got["status"] == "failed"
    assert cancels(tmp_path) == []


async def test_a_task_outlives_a_restart_and_its_call_runs_once_after_it(tmp_path):
    policy = held_listing_policy()
    async with run_gateway(tmp_path, policy=policy, servers=servers(tmp_path)) as gw:
        tokens = gw.tokens
        async with wire_2025(gw, "jobs") as wire:
            task = (await wire.call_as_task("list-async-jobs", {}))["result"]["task"]
        [decision] = await wait_for_decisions(gw)
    async with run_gateway(tmp_path, policy=None, servers={}, grants=[], tokens=tokens) as gw:
        async with wire_2025(gw, "jobs") as wire:  # a new session: tasks belong to the grant, not the session
            before = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
            await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
            result = (await wire.request("tasks/result", {"taskId": task["taskId"]}))["result"]
            listed = (await wire.request("tasks/list"))["result"]["tasks"]
    assert before["status"] == "working"
    assert result.get("isError") is not True
    assert [(t["taskId"], t["status"]) for t in listed] == [(task["taskId"], "completed")]
    assert len(listings(tmp_path)) == 1


async def test_with_tasks_off_nothing_is_declared_and_task_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLDGATE_TASKS_ENABLED", "false")  # the documented variable
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=0.3) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        listed = (await wire.request("tools/list"))["result"]["tools"]
        answer = await wire.call_as_task("cancel-async-job", {"jobId": "job-9"})
        get = await wire.request("tasks/get", {"taskId": "t_x"})
    assert "tasks" not in wire.initialize_result["capabilities"]
    assert all("execution" not in tool for tool in listed)
    assert "task" not in answer["result"] and "approval pending" in answer["result"]["content"][0]["text"]
    assert get["error"]["code"] == -32601


async def test_odd_task_inputs_get_a_clear_error_and_change_nothing(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path)) as gw,
        wire_2025(gw, "jobs") as wire,
    ):
        huge = await wire.request("tasks/get", {"taskId": "t_" + "x" * 10_000})
        nul = await wire.request("tasks/get", {"taskId": "t_\u0000"})
        number = await wire.request("tasks/cancel", {"taskId": 7})
        missing = await wire.request("tasks/result", {})
        not_an_object = await wire.request("tools/call", {"name": "cancel-async-job", "arguments": {}, "task": "soon"})
        raw = (
            '{"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "cancel-async-job", '
            '"arguments": {"jobId": "j"}, "task": {"ttl": 1e400}}}'
        )
        infinite = wire_answer(await wire.http.post(wire.url, content=raw))
        listed = (await wire.request("tasks/list"))["result"]["tasks"]
    for answer in (huge, nul, number, missing, not_an_object, infinite):
        assert answer["error"]["code"] == -32602, answer
    assert listed == [], "no task was made"
    assert await decisions(gw) == [], "and no decision opened"
