"""Approvals that lapse, waits that are withdrawn, and approvals never spent on a client that has gone.

Every test counts what reached the real upstream (the demo jobs server's call log) and how many times
the approvers were asked (the outbox's `request` rows): a call runs once, and people decide once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select

from service.approvals.schemas import DecisionView
from service.models import OutboxMessage
from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.dashboard.support import browser, sign_in
from tests.support.harness import (
    ROOT,
    Clock,
    Gateway,
    audit_events,
    executed_calls,
    run_gateway,
    servers,
    text_of,
    wire_answer,
    wire_request,
)

HELD_CLIENT = ROOT / "tests/peers/held_client.mjs"


def cancelled_jobs(tmp_path) -> list[str]:
    return [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


async def requests_sent(gw: Gateway) -> int:
    """How many times approvers were asked (one `request` notification per decision and channel)."""
    async with gw.state.sessions() as session:
        return int(await session.scalar(select(func.count()).where(OutboxMessage.kind == "request")) or 0)


async def view(gw: Gateway, decision_id: str) -> dict[str, Any]:
    response = await api(gw, "GET", f"/api/decisions/{decision_id}", "alice")
    assert response.status_code == 200
    return response.json()


async def wait_until(predicate, what: str, tries: int = 500) -> None:
    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def stopped_waiting(gw: Gateway, decision_id: str) -> None:
    async def check() -> bool:
        return (await view(gw, decision_id))["agent_stopped_waiting_at"] is not None

    await wait_until(check, f"{decision_id} to show that the agent stopped waiting")


async def held_then_abandoned(gw: Gateway, call: Callable[[], Awaitable[Any]]) -> DecisionView:
    """Make `call`, wait until its decision is open, then give up on it as a client does (the SDK cancels its
    request: `notifications/cancelled` on 2025-11-25, a closed response stream on 2026-07-28). Giving up on a
    fixed delay instead raced the gateway on a loaded machine: the call left before its decision was opened,
    or a short rejoin window closed before the test saw the decision pending."""
    async with anyio.create_task_group() as group:
        group.start_soon(call)
        [decision] = await wait_for_decisions(gw)
        group.cancel_scope.cancel()
    return decision


async def test_an_approval_nobody_collects_within_claim_within_lapses_and_the_same_call_asks_again(tmp_path, database):
    clock = Clock(time.time())
    policy = approval_policy(claim_within="5m")
    async with (
        run_gateway(
            tmp_path, policy=policy, servers=servers(tmp_path), clock=clock, approval_hold_s=0.2, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        first = await session.call_tool("cancel-async-job", {"jobId": "late"})  # answered "pending"
        [decision] = await decisions(gw)
        approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        clock.now += 5 * 60 + 1
        # Joining respects time on its own (no timer has marked the lapse yet)...
        retry = await session.call_tool("cancel-async-job", {"jobId": "late"})
        # ...and the timers' sweep says so on the decision.
        await gw.state.approvals.timers.sweep()
        lapsed = await view(gw, decision.id)
        after = {d.id: d for d in await decisions(gw)}
        async with browser(gw) as client:
            await sign_in(client, "alice")
            page = await client.get(f"/decisions/{decision.id}")
        await asyncio.sleep(0.2)  # the audit writer's batch (50 ms)
        records = [r for r in await audit_events(gw) if r.decision_id == decision.id]
        sent = await requests_sent(gw)

    assert "approval pending" in text_of(first) and approved.status_code == 200
    assert retry.is_error and "approval pending" in text_of(retry), "the lapsed approval did not run the retry"
    [new] = [d for d in after.values() if d.id != decision.id]
    assert new.status == "pending", "the retry opened a new decision"
    assert sent == 2, "the new decision asks the approvers again"
    assert lapsed["status"] == "approved" and lapsed["lapsed"] is True
    assert lapsed["execution"]["outcome"] == "lapsed" and "lapsed" in lapsed["state"]
    assert page.status_code == 200 and 'data-testid="lapsed"' in page.text
    assert [r.verdict for r in records if r.verdict == "lapsed"] == ["lapsed"], "the audit says it lapsed"
    assert cancelled_jobs(tmp_path) == []


async def test_an_approval_collected_in_time_runs_once_and_no_longer_lapses(tmp_path, database):
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock, approval_hold_s=0.2, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("cancel-async-job", {"jobId": "in-time"})
        [decision] = await decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        clock.now += 10 * 60 - 5  # the default claim_within is 10 minutes
        released = await session.call_tool("cancel-async-job", {"jobId": "in-time"})
        clock.now += 60
        await gw.state.approvals.timers.sweep()
        ended = await view(gw, decision.id)

    assert "holdgate" not in text_of(released)
    assert ended["lapsed"] is False and ended["released"] is True and ended["execution"]["outcome"] != "lapsed"
    assert cancelled_jobs(tmp_path) == ["in-time"]


async def test_a_client_whose_stream_closes_mid_hold_is_not_run_and_its_retry_collects_the_approval_once(
    tmp_path, database
):
    async with (
        run_gateway(
            tmp_path,
            policy=approval_policy(),
            servers=servers(tmp_path),
            approval_hold_s=60,
            stream_keepalive_s=0.1,
            **database,
        ) as gw,
        gw.wire("jobs") as http,
    ):
        url = gw.mcp_url("jobs")
        # A client with no progress token gives up on its request (a 60 s limit, a killed process): the HTTP
        # exchange closes with no answer and no cancellation, which on 2025-11-25 is not a cancel.
        call = {"name": "cancel-async-job", "arguments": {"jobId": "gone"}}
        held = asyncio.create_task(http.post(url, json=wire_request(2, "tools/call", call)))
        [decision] = await wait_for_decisions(gw)
        held.cancel()
        await stopped_waiting(gw, decision.id)
        while_nobody_waits = await view(gw, decision.id)
        approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.sleep(0.3)  # were the held call still running, it would have run by now
        ran_for_nobody = cancelled_jobs(tmp_path)
        retry = await http.post(url, json=wire_request(3, "tools/call", call))
        again = await http.post(url, json=wire_request(4, "tools/call", call))
        sent = await requests_sent(gw)

    assert while_nobody_waits["status"] == "pending" and while_nobody_waits["rejoin_by"] is None
    assert "stopped waiting" in while_nobody_waits["state"]
    assert approved.status_code == 200
    assert ran_for_nobody == [], "the approval was not spent on a client that had gone"
    assert "holdgate" not in retry.text, "the retry collected the approval and ran"
    # Within claim_within, the same call again is taken to be the same call (the crash half of issue 14): it gets
    # the stored result of the run, and is neither run again nor asked anew.
    assert wire_answer(again)["result"] == wire_answer(retry)["result"], "a second retry gets the run's result again"
    assert cancelled_jobs(tmp_path) == ["gone"]
    assert sent == 1, "the approvers were asked once"


async def test_a_client_that_cancels_and_calls_again_within_rejoin_within_joins_the_same_decision(tmp_path, database):
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock, approval_hold_s=60, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        decision = await held_then_abandoned(gw, lambda: session.call_tool("cancel-async-job", {"jobId": "rejoin"}))
        await stopped_waiting(gw, decision.id)
        withdrawn = await view(gw, decision.id)
        clock.now += 2 * 60 - 5  # within the default rejoin_within (2 minutes)
        await gw.state.approvals.timers.sweep()
        retry = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "rejoin"}))

        async def rejoined() -> bool:
            return (await view(gw, decision.id))["agent_stopped_waiting_at"] is None

        await wait_until(rejoined, "the retry to join")
        clock.now += 60  # past the first rejoin deadline: the retry took the decision back
        await gw.state.approvals.timers.sweep()
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        released = await asyncio.wait_for(retry, 10)
        sent = await requests_sent(gw)
        every = await decisions(gw)

    assert withdrawn["status"] == "pending" and withdrawn["rejoin_by"] is not None
    assert "stopped waiting" in withdrawn["state"]
    assert "holdgate" not in text_of(released)
    assert [d.id for d in every] == [decision.id], "the retry joined the decision"
    assert sent == 1, "the approvers were asked once"
    assert cancelled_jobs(tmp_path) == ["rejoin"]


async def test_a_cancelled_wait_nobody_takes_back_within_rejoin_within_ends_cancelled(tmp_path, database):
    clock = Clock(time.time())
    policy = approval_policy(rejoin_within="30s")
    async with (
        run_gateway(
            tmp_path, policy=policy, servers=servers(tmp_path), clock=clock, approval_hold_s=60, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        decision = await held_then_abandoned(gw, lambda: session.call_tool("cancel-async-job", {"jobId": "left"}))
        await stopped_waiting(gw, decision.id)
        async with browser(gw) as client:
            await sign_in(client, "alice")
            queue = (await client.get("/")).text
        clock.now += 31
        await gw.state.approvals.timers.sweep()
        ended = await view(gw, decision.id)
        late = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.sleep(0.2)  # the audit writer's batch
        records = [r for r in await audit_events(gw) if r.decision_id == decision.id]

    assert 'data-testid="stopped-waiting"' in queue and "the agent stopped waiting" in queue
    assert ended["status"] == "cancelled" and ended["decided_by"] == "client"
    assert "did not call again" in ended["reason"]
    assert late.status_code == 409
    assert "cancelled" in [r.verdict for r in records]
    assert cancelled_jobs(tmp_path) == []


async def test_an_approval_given_while_no_call_waits_is_collected_by_the_retry(tmp_path, database):
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=60, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        decision = await held_then_abandoned(gw, lambda: session.call_tool("cancel-async-job", {"jobId": "later"}))
        await stopped_waiting(gw, decision.id)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        waiting = await view(gw, decision.id)
        released = await session.call_tool("cancel-async-job", {"jobId": "later"})
        sent = await requests_sent(gw)

    assert waiting["status"] == "approved" and waiting["released"] is False
    assert "waiting for the agent to call again" in waiting["state"]
    assert "holdgate" not in text_of(released)
    assert sent == 1
    assert cancelled_jobs(tmp_path) == ["later"]


# -- a real TypeScript SDK client: a 60 s limit (here 1.5 s) with no progress token, and kill -9 ----------


async def _ts_client(gw: Gateway, job: str, timeout_ms: int | None = None) -> asyncio.subprocess.Process:
    args = [str(HELD_CLIENT), gw.mcp_url("jobs"), gw.tokens["agent"], "cancel-async-job", json.dumps({"jobId": job})]
    if timeout_ms is not None:
        args.append(str(timeout_ms))
    process = await asyncio.create_subprocess_exec(
        "node", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
    assert ready["event"] == "ready"
    return process


async def _last_event(process: asyncio.subprocess.Process) -> dict[str, Any]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    lines = stdout.decode().splitlines()
    assert lines, stderr.decode()
    return json.loads(lines[-1])


@pytest.mark.usefixtures("node_available")
async def test_a_typescript_client_that_times_out_then_retries_runs_the_approved_call_once(tmp_path, database):
    async with run_gateway(
        tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=60, **database
    ) as gw:
        gave_up = await _ts_client(gw, "ts-timeout", timeout_ms=1500)
        [decision] = await wait_for_decisions(gw)
        first = await _last_event(gave_up)
        await stopped_waiting(gw, decision.id)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        retry = await _last_event(await _ts_client(gw, "ts-timeout"))
        sent = await requests_sent(gw)

    assert first["event"] == "error" and "timed out" in first["message"].lower()
    assert retry["event"] == "result" and "holdgate" not in json.dumps(retry["result"])
    assert sent == 1, "the approvers were asked once"
    assert cancelled_jobs(tmp_path) == ["ts-timeout"]


@pytest.mark.usefixtures("node_available")
async def test_a_typescript_client_killed_mid_hold_leaves_the_approval_to_its_retry(tmp_path, database):
    async with run_gateway(
        tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=60, **database
    ) as gw:
        killed = await _ts_client(gw, "ts-killed")
        [decision] = await wait_for_decisions(gw)
        killed.kill()  # SIGKILL: no cancellation, the TCP connection just closes
        await killed.wait()
        await stopped_waiting(gw, decision.id)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.sleep(0.3)
        ran_for_nobody = cancelled_jobs(tmp_path)
        retry = await _last_event(await _ts_client(gw, "ts-killed"))
        sent = await requests_sent(gw)

    assert ran_for_nobody == []
    assert retry["event"] == "result" and "holdgate" not in json.dumps(retry["result"])
    assert sent == 1
    assert cancelled_jobs(tmp_path) == ["ts-killed"]


async def test_a_2026_client_closing_its_stream_withdraws_its_wait_and_its_retry_runs_the_approval_once(
    tmp_path, database
):
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=60, **database
        ) as gw,
        gw.modern("jobs") as client,
    ):
        decision = await held_then_abandoned(gw, lambda: client.call_tool("cancel-async-job", {"jobId": "modern"}))
        await stopped_waiting(gw, decision.id)
        withdrawn = await view(gw, decision.id)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        released = await client.call_tool("cancel-async-job", {"jobId": "modern"})
        sent = await requests_sent(gw)

    assert withdrawn["status"] == "pending" and withdrawn["rejoin_by"] is not None, "a cancel: rejoin_within runs"
    assert "holdgate" not in text_of(released)
    assert sent == 1
    assert cancelled_jobs(tmp_path) == ["modern"]


async def test_an_ending_claimed_for_a_call_that_leaves_before_taking_it_goes_back_to_its_retry(tmp_path, database):
    """The hand-over race: an approval decided in this process is claimed, in the deciding transaction, for the
    call waiting here; that call goes away before it takes it. The claim is given back, not spent on nobody."""
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=0.2, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("cancel-async-job", {"jobId": "handed"})  # answered "pending"
        [decision] = await decisions(gw)
        approvals = gw.state.approvals
        with approvals.bus.subscribe(decision.id):  # a call of this process waits on the decision
            await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
            claimed_for_it = (await view(gw, decision.id))["released"]
            approvals.service.forget_handoff(decision.id)  # ...and leaves without taking its release

        async def given_back() -> bool:
            return not (await view(gw, decision.id))["released"]

        await wait_until(given_back, "the release to be given back")
        retry = await session.call_tool("cancel-async-job", {"jobId": "handed"})

    assert claimed_for_it is True
    assert "holdgate" not in text_of(retry)
    assert cancelled_jobs(tmp_path) == ["handed"]


async def test_the_cli_lists_a_lapsed_approval_as_lapsed(tmp_path, holdgate):
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock, approval_hold_s=0.2
        ) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("cancel-async-job", {"jobId": "cli-late"})
        [decision] = await decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        clock.now += 10 * 60 + 1
        await gw.state.approvals.timers.sweep()
        table = await holdgate("decisions", "list")
        listed = await holdgate("decisions", "list", "--json")

    assert "lapsed" in table.stdout  # the status column: "approved, lapsed" (wrapped to the terminal)
    [item] = json.loads(listed.stdout)["items"]
    assert item["id"] == decision.id and item["lapsed"] is True and item["execution"]["outcome"] == "lapsed"


def _timed_gateway(tmp_path, database, **approval: Any):
    """A gateway whose sweep runs once at start-up and then not during the test: only timers act."""
    return run_gateway(
        tmp_path,
        policy=approval_policy(**approval),
        servers=servers(tmp_path),
        approval_hold_s=60,
        approval_sweep_interval_s=3600,
        **database,
    )


async def test_the_rejoin_timer_ends_a_wait_nobody_took_back_without_the_sweep(tmp_path, database):
    async with _timed_gateway(tmp_path, database, rejoin_within="1s") as gw, gw.session("jobs") as session:
        left = await held_then_abandoned(gw, lambda: session.call_tool("cancel-async-job", {"jobId": "timer-cancel"}))

        async def cancelled() -> bool:
            return (await view(gw, left.id))["status"] == "cancelled"

        await wait_until(cancelled, "the rejoin timer", tries=250)  # about 5 s

    assert cancelled_jobs(tmp_path) == []


async def test_the_lapse_timer_lapses_an_uncollected_approval_without_the_sweep(tmp_path, database):
    async with _timed_gateway(tmp_path, database, claim_within="1s") as gw, gw.session("jobs") as session:
        decision = await held_then_abandoned(
            gw, lambda: session.call_tool("cancel-async-job", {"jobId": "timer-lapse"})
        )
        await stopped_waiting(gw, decision.id)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")

        async def lapsed() -> bool:
            return (await view(gw, decision.id))["lapsed"]

        await wait_until(lapsed, "the lapse timer", tries=250)

    assert cancelled_jobs(tmp_path) == []
