"""A held call, end to end: the real MCP client, holdgate, the demo jobs server, a person deciding."""

from __future__ import annotations

import asyncio
import time

from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.support.harness import Clock, executed_calls, run_gateway, servers, text_of


def cancels(tmp_path) -> list[dict]:
    return [c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


async def test_approved_call_runs_once_and_the_client_gets_the_upstreams_result(tmp_path, database):
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
        [decision] = await wait_for_decisions(gw)
        assert decision.tool == "cancel-async-job" and decision.grant == "agent"
        assert decision.arguments == {"jobId": "job-1"}
        assert decision.approvers == ["alice", "bob"]
        assert cancels(tmp_path) == [], "nothing runs before a person approves"

        response = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        assert response.status_code == 200, response.text
        assert response.json()["decided"] is True

        result = await asyncio.wait_for(call, 10)
        assert "holdgate" not in text_of(result), "the client gets the upstream's own result"
        again = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "bob")
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "bob")).json()

    assert len(cancels(tmp_path)) == 1
    assert again.status_code == 409
    assert again.json()["detail"] == "already decided: approved by alice"
    assert view["status"] == "approved" and view["released"] is True
    assert view["execution"]["outcome"] in {"ok", "tool_error"}
    assert [(v["approver"], v["value"], v["via"]) for v in view["votes"]] == [("alice", "approve", "api")]


async def test_denied_call_is_not_run_and_the_agent_gets_the_reason(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-2"}))
        [decision] = await wait_for_decisions(gw)
        no_reason = await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={})
        denied = await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "job still needed"})
        result = await asyncio.wait_for(call, 10)

    assert no_reason.status_code == 422
    assert denied.status_code == 200
    assert result.is_error
    assert "denied by bob" in text_of(result) and "job still needed" in text_of(result)
    assert cancels(tmp_path) == []


async def test_timeout_expires_the_decision_and_says_it_was_not_a_denial(tmp_path):
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path,
            policy=approval_policy(),
            servers=servers(tmp_path),
            clock=clock,
            approval_hold_s=30,
            approval_sweep_interval_s=0.05,
        ) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-3"}))
        [decision] = await wait_for_decisions(gw)
        clock.now += 15 * 60 - 1
        await asyncio.sleep(0.2)
        assert (await decisions(gw))[0].status == "pending", "not expired a second early"
        clock.now += 1
        result = await asyncio.wait_for(call, 10)
        late = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")

    assert result.is_error
    assert "expired" in text_of(result) and "not a person's denial" in text_of(result)
    assert decision.expires_at in text_of(result)
    assert late.status_code == 409 and late.json()["detail"] == "already decided: expired by timeout"
    assert cancels(tmp_path) == []


async def test_on_timeout_approve_releases_the_call_when_written_out(tmp_path):
    clock = Clock(time.time())
    policy = approval_policy(on_timeout="approve")
    async with (
        run_gateway(
            tmp_path, policy=policy, servers=servers(tmp_path), clock=clock, approval_sweep_interval_s=0.05
        ) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-4"}))
        await wait_for_decisions(gw)
        clock.now += 15 * 60
        await asyncio.wait_for(call, 10)
    assert len(cancels(tmp_path)) == 1


async def test_quorum_of_two_needs_two_distinct_people(tmp_path, database):
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(quorum=2), servers=servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-6"}))
        [decision] = await wait_for_decisions(gw)
        first = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        twice = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.sleep(0.1)
        assert not call.done() and cancels(tmp_path) == [], "one approval of two releases nothing"
        second = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "bob")
        await asyncio.wait_for(call, 10)

    assert first.json()["decided"] is False and "1 more needed" in first.json()["message"]
    assert twice.status_code == 409
    assert second.json()["decided"] is True
    assert second.json()["decision"]["decided_by"] == "alice, bob"
    assert len(cancels(tmp_path)) == 1


async def test_self_approval_unknown_approvers_and_bad_tokens_change_nothing(tmp_path):
    # "agent" is both the grant and a declared person in the approvers: it still cannot approve its own call.
    policy = approval_policy(approvers=["group:ops", "agent"])
    async with (
        run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-7"}))
        [decision] = await wait_for_decisions(gw)
        path = f"/api/decisions/{decision.id}/approve"
        own = await api(gw, "POST", path, "agent")
        outsider = await api(gw, "POST", path, "carol")
        forged = await api(gw, "POST", path, "not-a-token")
        anonymous = await api(gw, "POST", path)
        grant_token = await api(gw, "POST", path, gw.tokens["agent"])
        unknown = await api(gw, "POST", "/api/decisions/d_nope/approve", "alice")
        [still] = await decisions(gw)
        call.cancel()

    assert own.status_code == 403 and "cannot approve" in own.json()["detail"]
    assert outsider.status_code == 403 and "not an approver" in outsider.json()["detail"]
    assert forged.status_code == 401 and anonymous.status_code == 401 and grant_token.status_code == 401
    assert unknown.status_code == 404
    assert still.status == "pending" and still.votes == []
    assert cancels(tmp_path) == []


async def test_progress_keepalives_while_held(tmp_path):
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_progress_interval_s=0.05
        ) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(
            session.call_tool("cancel-async-job", {"jobId": "job-8"}, progress_callback=on_progress)
        )
        [decision] = await wait_for_decisions(gw)
        while len(messages) < 3:
            await asyncio.sleep(0.02)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "bob")
        await asyncio.wait_for(call, 10)

    assert f"waiting for approval by alice, bob (decision {decision.id}, expires {decision.expires_at})" in messages
    assert len(cancels(tmp_path)) == 1


async def test_without_progress_token_the_call_returns_pending_and_a_retry_joins_the_decision(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=0.2) as gw,
        gw.session("jobs") as session,
    ):
        args = {"jobId": "job-9"}
        first = await session.call_tool("cancel-async-job", args)
        [decision] = await decisions(gw)
        retry = await session.call_tool("cancel-async-job", args)
        assert len(await decisions(gw)) == 1, "a retry joins the open decision"
        other = await session.call_tool("cancel-async-job", {"jobId": "job-10"})
        assert len(await decisions(gw)) == 2, "other arguments are another decision"

        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        released = await session.call_tool("cancel-async-job", args)
        assert len(cancels(tmp_path)) == 1
        after = await session.call_tool("cancel-async-job", args)

    for pending in (first, retry):
        assert pending.is_error
        assert "approval pending" in text_of(pending) and decision.id in text_of(pending)
        assert decision.expires_at in text_of(pending) and "same arguments" in text_of(pending)
    assert other.is_error and decision.id not in text_of(other)
    assert "holdgate" not in text_of(released)
    assert text_of(after) == text_of(released) and after.is_error == released.is_error, (
        "an approval releases exactly one call; an identical call within claim_within gets that run's result again"
    )
    assert len(cancels(tmp_path)) == 1


async def test_a_retry_after_denial_gets_the_denial(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=0.2) as gw,
        gw.session("jobs") as session,
    ):
        args = {"jobId": "job-11"}
        await session.call_tool("cancel-async-job", args)
        [decision] = await decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "no"})
        retry = await session.call_tool("cancel-async-job", args)
    assert retry.is_error and "denied by bob" in text_of(retry) and decision.id in text_of(retry)
    assert cancels(tmp_path) == []


async def test_metrics_count_calls_decisions_and_held_calls(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("list-async-jobs", {})
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "m-1"}))
        [decision] = await wait_for_decisions(gw)
        while gw.state.approvals.bus.held_calls() == 0:
            await asyncio.sleep(0.01)
        holding = (await api(gw, "GET", "/metrics")).text
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.wait_for(call, 10)
        after = (await api(gw, "GET", "/metrics")).text
    assert "holdgate_held_calls 1.0" in holding
    assert "holdgate_held_calls 0.0" in after
    assert 'holdgate_tool_calls_total{outcome="ok",server="jobs",verdict="allowed"}' in after
    assert 'holdgate_decisions_total{status="approved"}' in after
