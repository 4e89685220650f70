"""A release whose holder died, seen through a real gateway: the retry, REST, the decision page, the CLI and audit.

The dead process is a second `ApprovalService` on the gateway's database that claims (and maybe marks "sending")
and then stops renewing; the gateway's lease tick reconciles it once the injected clock passes the lease.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from mcp import MCPError

from service.approvals import ApprovalService
from service.models import Decision
from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.dashboard.support import browser, sign_in
from tests.gateway.test_http_upstream import EverythingHttp
from tests.support.harness import Clock, audit_events, executed_calls, run_gateway, servers, text_of

ARGS = {"jobId": "job-u"}
LEASE_S = 0.6


def cancels(tmp_path) -> int:
    return sum(1 for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job")


async def claimed_by_a_process_that_dies(gw, clock: Clock, *, sending: bool) -> Decision:
    """An approved decision for ARGS, claimed by another process (and marked sending), which then dies."""
    dead = ApprovalService(gw.state.sessions, clock=clock, lease_s=LEASE_S)
    policy = gw.state.policy.current
    decision, _ = await dead.open_or_join(
        grant="agent",
        server="jobs",
        tool="cancel-async-job",
        arguments=ARGS,
        args_sha256=await gw.state.audit.args_digest.digest(ARGS),  # the gateway's keyed digest
        verdict=policy.evaluate("agent", "jobs", "cancel-async-job"),
        policy_version=policy.version,
        # Bound as the gateway binds it: "agent" is also a declared person, so its agent acts for that person.
        acting_for=gw.state.approvals.holding.acting_for("agent", None),
    )
    await dead.transition(decision.id, "approved", by="alice", via="api")
    assert await dead.claim(decision.id) is not None
    if sending:
        assert await dead.mark_sending(decision.id)
    clock.now += LEASE_S + 1  # no renewal: the lease expires
    return decision


async def reconciled(gw, decision_id: str) -> Decision:
    for _ in range(200):
        row = await gw.state.approvals.service.load(decision_id)
        if row.claimed_at is None or row.outcome is not None:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError("the lease tick did not reconcile the claim")


async def test_a_call_sent_by_a_process_that_died_is_outcome_unknown_everywhere_and_needs_a_new_approval(
    tmp_path, holdgate
):
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock, claim_lease_s=LEASE_S
        ) as gw,
        gw.session("jobs") as session,
        browser(gw) as client,
    ):
        decision = await claimed_by_a_process_that_dies(gw, clock, sending=True)
        row = await reconciled(gw, decision.id)
        assert row.outcome == "unknown"

        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "alice")).json()
        assert view["status"] == "approved" and view["execution"]["outcome"] == "unknown"
        await sign_in(client, "alice")
        assert 'data-testid="outcome-unknown"' in (await client.get(f"/decisions/{decision.id}")).text
        listed = await holdgate("decisions", "list")
        assert "UNKNOWN" in listed.output
        shown = await holdgate("decisions", "show", decision.id)
        assert shown.exit_code == 0 and "outcome UNKNOWN: it may have run" in shown.output
        as_json = json.loads((await holdgate("decisions", "list", "--json")).output)
        assert [d["execution"]["outcome"] for d in as_json["items"]] == ["unknown"]
        await gw.state.audit.flush()
        assert [(e.decision_id, e.outcome) for e in await audit_events(gw) if e.outcome == "unknown"] == [
            (decision.id, "unknown")
        ]

        retry = await session.call_tool("cancel-async-job", ARGS)
        assert retry.is_error and decision.id in text_of(retry) and "may have run" in text_of(retry)
        [fresh] = [d for d in await decisions(gw) if d.id != decision.id]
        assert fresh.status == "pending" and fresh.previous_attempt == decision.id
        assert f"previous attempt {decision.id} may have run" in fresh.rule_reason
        page = (await client.get(f"/decisions/{fresh.id}")).text
        assert 'data-testid="previous-attempt"' in page and decision.id in page
        assert cancels(tmp_path) == 0, "nothing ran again on the first approval"

        held = asyncio.create_task(session.call_tool("cancel-async-job", ARGS))
        await asyncio.sleep(0.3)
        await api(gw, "POST", f"/api/decisions/{fresh.id}/approve", "bob")
        ran = await asyncio.wait_for(held, 10)
        assert cancels(tmp_path) == 1, "the approver, knowing, approved one more run"
        replay = await session.call_tool("cancel-async-job", ARGS)
    assert text_of(replay) == text_of(ran) and cancels(tmp_path) == 1, "the lost answer again; no second run"


async def test_a_call_claimed_by_a_process_that_died_before_sending_runs_once_on_retry_without_asking_again(tmp_path):
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock, claim_lease_s=LEASE_S
        ) as gw,
        gw.session("jobs") as session,
    ):
        decision = await claimed_by_a_process_that_dies(gw, clock, sending=False)
        retry = await session.call_tool("cancel-async-job", ARGS)
        again = await session.call_tool("cancel-async-job", ARGS)
        rows = await decisions(gw)
    assert "holdgate" not in text_of(retry), text_of(retry)
    assert text_of(again) == text_of(retry), "a further retry gets the stored result"
    assert [d.id for d in rows] == [decision.id], "no second approval"
    assert rows[0].execution is not None and rows[0].execution.outcome == "tool_error"  # job-u is not a real job
    assert cancels(tmp_path) == 1
    assert json.loads(json.dumps(rows[0].model_dump()))["released"] is True


async def test_an_approved_call_whose_upstream_is_down_is_not_spent_and_runs_once_when_it_is_back(tmp_path):
    """The failure comes before the "sending" mark (the session's upstream cannot be opened): the approval stays."""
    upstream = EverythingHttp()  # not started yet: the gateway's upstream is down
    policy = approval_policy()
    policy["tools"] = {"get-sum": policy["tools"]["cancel-async-job"]}
    try:
        async with (
            run_gateway(
                tmp_path,
                policy=policy,
                servers={"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}},
                upstream_connect_timeout_s=2,
            ) as gw,
            gw.session("everything") as session,
        ):
            call = asyncio.create_task(session.call_tool("get-sum", {"a": 2, "b": 3}))
            [decision] = await wait_for_decisions(gw)
            await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
            with pytest.raises(MCPError, match="unavailable"):
                await asyncio.wait_for(call, 30)
            row = await gw.state.approvals.service.load(decision.id)
            assert row.claimed_at is None and row.sending_at is None and row.outcome is None

            await upstream.start()
            retry = await session.call_tool("get-sum", {"a": 2, "b": 3})
            rows = await decisions(gw)
    finally:
        upstream.stop()
    assert not retry.is_error and "5" in text_of(retry)
    assert [d.id for d in rows] == [decision.id] and rows[0].execution is not None, "run on the first approval"
