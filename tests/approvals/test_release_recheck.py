"""The release check, end to end: a real MCP client through holdgate to the demo jobs server, on SQLite and
PostgreSQL. The policy changes while a call is held; when a person then approves it, the call runs only if the
policy now in force still allows it or asks the same rule's approval."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.dashboard.support import browser, sign_in
from tests.support.harness import audit_events, executed_calls, run_gateway, servers, text_of


def cancelled(tmp_path: Path) -> list[str]:
    return [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


@asynccontextmanager
async def held_cancel(
    tmp_path: Path, database: dict[str, Any], job_id: str
) -> AsyncIterator[tuple[Any, Any, asyncio.Task[Any], Any]]:
    """A gateway under the approval policy, a session to it, and `cancel-async-job` on `job_id` held there:
    yields the gateway, the session, the held call's task and its pending decision."""
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": job_id}))
        [decision] = await wait_for_decisions(gw)
        yield gw, session, held, decision


def change_policy(gw, tmp_path: Path, policy: dict[str, Any]) -> None:
    (tmp_path / "config" / "policy.json").write_text(json.dumps(policy))
    assert gw.state.policy.reload(), gw.state.policy.last_error


async def test_a_policy_tightened_while_a_call_is_held_denies_it_at_release(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    async with held_cancel(tmp_path, database, "job-7") as (gw, session, held, decision):
        frozen = approval_policy()
        frozen["tools"]["cancel-async-job"] = {"action": "deny", "reason": "jobs are frozen for the audit"}
        change_policy(gw, tmp_path, frozen)
        approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        result = await asyncio.wait_for(held, 10)
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "alice")).json()
        async with browser(gw) as client:
            await sign_in(client, "bob")
            page = await client.get(f"/decisions/{decision.id}")
        retry = await session.call_tool("cancel-async-job", {"jobId": "job-7"})
        await gw.state.audit.flush()
        events = await audit_events(gw)

    assert approved.status_code == 200, "the vote itself is taken: the decision was pending"
    assert result.is_error
    assert text_of(result) == (
        "holdgate denied 'cancel-async-job' on 'jobs': jobs are frozen for the audit (rule cancel-async-job). It was "
        f"approved by alice (decision {decision.id}), but the policy now in force says: the policy denies it (rule "
        "cancel-async-job: jobs are frozen for the audit); the call was not run."
    )
    assert cancelled(tmp_path) == [], "nothing reached the upstream"
    assert view["status"] == "approved" and view["released"] is False
    assert view["execution"]["outcome"] == "policy_denied"
    assert "jobs are frozen for the audit" in view["execution"]["detail"]
    assert view["state"].startswith("approved, not run: at its release the policy now in force says")
    assert page.status_code == 200
    assert (
        'data-testid="release-refused"><strong>Not run</strong>: approved, but when the call was released' in page.text
    )
    assert "jobs are frozen for the audit" in page.text
    assert retry.is_error and "jobs are frozen for the audit" in text_of(retry), "the retry meets the new policy"

    held_event = next(e for e in events if e.decision_id == decision.id)
    assert (held_event.verdict, held_event.outcome, held_event.rule) == ("denied", "policy_denied", "cancel-async-job")


async def test_a_policy_that_now_allows_the_call_runs_it(tmp_path: Path, database: dict[str, Any]) -> None:
    async with held_cancel(tmp_path, database, "job-8") as (gw, _session, held, decision):
        relaxed = approval_policy()
        relaxed["tools"]["cancel-async-job"] = {"action": "allow"}
        change_policy(gw, tmp_path, relaxed)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "bob")
        result = await asyncio.wait_for(held, 10)

    assert "holdgate" not in text_of(result)
    assert cancelled(tmp_path) == ["job-8"]


async def test_a_policy_that_now_asks_another_rule_does_not_run_it_on_this_approval(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    async with held_cancel(tmp_path, database, "job-9") as (gw, session, held, decision):
        stricter = approval_policy()
        stricter["tools"]["jobs/cancel-*"] = {"approval": {"approvers": ["carol"]}}
        del stricter["tools"]["cancel-async-job"]
        change_policy(gw, tmp_path, stricter)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        result = await asyncio.wait_for(held, 10)
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "alice")).json()
        again = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-9"}))
        [new] = await wait_for_decisions(gw)
        again.cancel()

    assert result.is_error
    assert text_of(result) == (
        f"holdgate: jobs/cancel-async-job was approved by alice (decision {decision.id}), but the policy now in force "
        "says: it needs approval under rule jobs/cancel-*, not under rule cancel-async-job (this decision's); the call "
        "was not run on that approval. Call cancel-async-job again with the same arguments to ask for it."
    )
    assert view["execution"]["outcome"] == "policy_changed"
    assert cancelled(tmp_path) == []
    assert (new.rule, new.approvers) == ("jobs/cancel-*", ["carol"]), "the same call again asks under the new rule"
