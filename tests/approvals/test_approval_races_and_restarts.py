"""Exactly once: votes racing timeouts, decisions surviving restarts, the CLI deciding from outside."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.support.harness import Clock, executed_calls, run_gateway, servers, text_of


def cancelled_jobs(tmp_path) -> list[str]:
    return [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


@pytest.mark.parametrize("round_", range(3))
async def test_approve_racing_deny_racing_timeout_ends_each_decision_once(tmp_path, round_, database):
    clock = Clock(time.time())
    count = 15
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock, approval_hold_s=60, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        calls = {
            f"job-{i}": asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": f"job-{i}"}))
            for i in range(count)
        }
        held = await wait_for_decisions(gw, count)
        clock.now += 15 * 60  # every timeout is due: the timers race the people
        timers = gw.state.approvals.timers

        async def race(decision_id: str) -> list[bool]:
            approve, deny, _ = await asyncio.gather(
                api(gw, "POST", f"/api/decisions/{decision_id}/approve", "alice"),
                api(gw, "POST", f"/api/decisions/{decision_id}/deny", "bob", json={"reason": "race"}),
                timers.fire_timeout(decision_id),
            )
            return [approve.status_code == 200, deny.status_code == 200]

        wins = await asyncio.gather(*(race(d.id) for d in held))
        results = {job: await asyncio.wait_for(call, 20) for job, call in calls.items()}
        ended = {d.arguments["jobId"]: d for d in await decisions(gw)}

    for decision_wins, decision in zip(wins, held, strict=True):
        final = ended[decision.arguments["jobId"]].status
        assert sum(decision_wins) <= 1, "two people cannot both decide"
        expected = {(True, False): "approved", (False, True): "denied", (False, False): "expired"}
        assert final == expected[tuple(decision_wins)], "the winner's answer is the decision"
    approved = sorted(job for job, d in ended.items() if d.status == "approved")
    assert sorted(cancelled_jobs(tmp_path)) == approved, "each approved call ran once; no other call ran"
    for job, result in results.items():
        answered_by_holdgate = text_of(result).startswith("holdgate")
        assert answered_by_holdgate == (ended[job].status != "approved"), "approved calls get the upstream's answer"


async def test_pending_decisions_survive_a_restart_and_can_still_be_decided_or_time_out(tmp_path, database):
    clock = Clock(time.time())
    settings = {"approval_hold_s": 0.2, "approval_sweep_interval_s": 0.05, **database}
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock, **settings) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("cancel-async-job", {"jobId": "keep"})
        await session.call_tool("cancel-async-job", {"jobId": "lapse"})
        tokens = gw.tokens
    # The service is down. Nothing about the decisions is in memory any more.
    async with (
        run_gateway(tmp_path, policy=None, servers={}, grants=[], tokens=tokens, clock=clock, **settings) as gw,
        gw.session("jobs") as session,
    ):
        by_job = {d.arguments["jobId"]: d for d in await decisions(gw)}
        assert {d.status for d in by_job.values()} == {"pending"}
        await api(gw, "POST", f"/api/decisions/{by_job['keep'].id}/approve", "alice")
        released = await session.call_tool("cancel-async-job", {"jobId": "keep"})
        clock.now += 15 * 60
        [expired] = await wait_for_decisions(gw, status="expired")
        lapsed = await session.call_tool("cancel-async-job", {"jobId": "lapse"})
    assert "holdgate" not in text_of(released)
    assert expired.id == by_job["lapse"].id
    assert lapsed.is_error and "expired" in text_of(lapsed)
    assert cancelled_jobs(tmp_path) == ["keep"]


async def test_a_decision_that_fell_due_while_the_service_was_down_expires_at_start_up(tmp_path):
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock, approval_hold_s=0.2
        ) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("cancel-async-job", {"jobId": "down"})
        tokens = gw.tokens
    clock.now += 16 * 60  # the deadline passes while nothing runs
    async with run_gateway(tmp_path, policy=None, servers={}, grants=[], tokens=tokens, clock=clock) as gw:
        [expired] = await wait_for_decisions(gw, status="expired")
    assert expired.decided_by == "timeout"
    assert cancelled_jobs(tmp_path) == []


async def test_the_cli_lists_approves_and_denies_as_the_local_operator(tmp_path, holdgate):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_poll_interval_s=0.05) as gw,
        gw.session("jobs") as session,
    ):
        approved_call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "cli-yes"}))
        denied_call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "cli-no"}))
        await wait_for_decisions(gw, 2)
        listed = await holdgate("decisions", "list", "--status", "pending", "--json")
        by_job = {d["arguments"]["jobId"]: d["id"] for d in json.loads(listed.stdout)["items"]}
        table = await holdgate("decisions", "list")
        approved = await holdgate("approve", by_job["cli-yes"])
        no_reason = await holdgate("deny", by_job["cli-no"])
        denied = await holdgate("deny", by_job["cli-no"], "--reason", "not today")
        twice = await holdgate("approve", by_job["cli-no"])
        unknown = await holdgate("approve", "d_unknown")
        yes = await asyncio.wait_for(approved_call, 10)
        no = await asyncio.wait_for(denied_call, 10)

    assert listed.exit_code == 0 and set(by_job) == {"cli-yes", "cli-no"}
    assert by_job["cli-yes"] in table.stdout
    assert approved.exit_code == 0 and "approved by local-operator" in approved.stdout
    assert no_reason.exit_code != 0
    assert denied.exit_code == 0
    assert twice.exit_code == 1 and "already decided: denied by local-operator" in twice.stderr
    assert unknown.exit_code == 1 and "no decision d_unknown" in unknown.stderr
    assert "holdgate" not in text_of(yes)
    assert no.is_error and "not today" in text_of(no)
    assert cancelled_jobs(tmp_path) == ["cli-yes"]
