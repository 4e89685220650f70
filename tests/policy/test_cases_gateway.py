"""Cases end to end: a real MCP client through holdgate to the demo jobs server, the policy choosing
allow, approval or denial by the call's arguments, and a condition that errors failing closed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.support.harness import audit_events, executed_calls, run_gateway, servers, text_of


def cancel_with_cases() -> dict[str, Any]:
    """cancel-async-job: allowed, but a production job needs ops' approval and one job is never cancelled."""
    policy = approval_policy()
    policy["tools"]["cancel-async-job"] = {
        "action": "allow",
        "cases": [
            {
                "when": "args.jobId.startsWith('prod-')",
                "action": "require_approval",
                "reason": "cancels a production job",
                "approval": {"approvers": ["group:ops"], "channels": ["console"], "timeout": "15m"},
            },
            {"when": "args.jobId == 'job-payroll'", "action": "deny", "reason": "payroll is never cancelled"},
        ],
    }
    return policy


def cancelled_ids(tmp_path: Path) -> list[str]:
    return [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


async def test_cases_choose_allow_approval_or_denial_by_argument(tmp_path: Path, database: dict[str, Any]) -> None:
    async with (
        run_gateway(
            tmp_path, policy=cancel_with_cases(), servers=servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        allowed = await session.call_tool("cancel-async-job", {"jobId": "dev-1"})
        denied = await session.call_tool("cancel-async-job", {"jobId": "job-payroll"})
        assert cancelled_ids(tmp_path) == ["dev-1"]

        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "prod-7"}))
        [decision] = await wait_for_decisions(gw)
        assert decision.rule == "cancel-async-job.cases[0]"
        assert decision.arguments == {"jobId": "prod-7"}
        assert decision.approvers == ["alice", "bob"]
        assert cancelled_ids(tmp_path) == ["dev-1"], "nothing runs before a person approves"
        approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        assert approved.status_code == 200, approved.text
        released = await asyncio.wait_for(held, 10)

        await gw.state.audit.flush()
        events = [(e.verdict, e.rule, e.arguments) for e in await audit_events(gw)]

    assert "holdgate" not in text_of(allowed), "an allowed call gets the upstream's own result"
    assert denied.is_error
    assert "payroll is never cancelled" in text_of(denied)
    assert "cancel-async-job.cases[1]" in text_of(denied)
    assert "holdgate" not in text_of(released)
    assert cancelled_ids(tmp_path) == ["dev-1", "prod-7"]
    assert events == [
        ("allowed", "cancel-async-job", '{"jobId": "dev-1"}'),
        ("denied", "cancel-async-job.cases[1]", '{"jobId": "job-payroll"}'),
        ("approved", "cancel-async-job.cases[0]", '{"jobId": "prod-7"}'),
    ]


async def test_a_condition_that_errors_fails_closed_with_a_reason_for_the_agent_and_the_audit(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    async with (
        run_gateway(tmp_path, policy=cancel_with_cases(), servers=servers(tmp_path), **database) as gw,
        gw.session("jobs") as session,
    ):
        # No jobId: `args.jobId.startsWith('prod-')` cannot be evaluated, so whether this cancels a
        # production job is unknown; the call must not run.
        missing = await session.call_tool("cancel-async-job", {"id": "prod-7"})
        wrong_type = await session.call_tool("cancel-async-job", {"jobId": 7})
        still_fine = await session.call_tool("cancel-async-job", {"jobId": "dev-2"})
        await gw.state.audit.flush()
        events = await audit_events(gw)

    assert missing.is_error
    text = text_of(missing)
    assert text.startswith("holdgate denied 'cancel-async-job' on 'jobs': condition `args.jobId.startsWith('prod-')`")
    assert 'Key not found in map : "jobId"' in text
    assert "so the call is denied" in text
    assert "(rule cancel-async-job.cases[0])" in text
    assert wrong_type.is_error and "No matching overloads" in text_of(wrong_type)
    assert "holdgate" not in text_of(still_fine), "the upstream answered (unknown job), holdgate did not refuse"
    assert cancelled_ids(tmp_path) == ["dev-2"], "neither failed call reached the upstream"

    first, second, third = events
    assert (first.verdict, first.rule, first.outcome) == ("denied", "cancel-async-job.cases[0]", None)
    assert first.reason is not None and 'Key not found in map : "jobId"' in first.reason
    assert "args.jobId.startsWith('prod-')" in first.reason
    assert second.verdict == "denied" and second.reason is not None and "No matching overloads" in second.reason
    assert (third.verdict, third.rule) == ("allowed", "cancel-async-job")
