"""A pending decision whose deadline cannot be scheduled never stops the service from starting.

Before durations were bounded, a `timeout` of `99999999d` was accepted and its decision written with
an `expires_at` no datetime can hold; rebuilding the timers at start-up then raised and the service
could not start again. Such a row now expires at start-up (fail closed) with a warning.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import update

from service.db import session_scope
from service.models import Decision
from tests.approvals.support import approval_policy, decisions, wait_for_decisions
from tests.support.harness import Clock, executed_calls, run_gateway, servers, text_of


async def test_a_row_with_an_absurd_deadline_is_expired_and_start_up_goes_on(tmp_path, database, caplog):
    clock = Clock(time.time())
    settings = {"approval_hold_s": 0.2, "approval_sweep_interval_s": 0.05, **database}
    # on_timeout approve: an unschedulable row must still never be approved by nobody
    policy = approval_policy(on_timeout="approve")
    async with (
        run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), clock=clock, **settings) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("cancel-async-job", {"jobId": "far"})
        await session.call_tool("cancel-async-job", {"jobId": "never-reminded"})
        by_job = {d.arguments["jobId"]: d.id for d in await decisions(gw)}
        async with session_scope(gw.state.approvals.service.sessions) as db:
            # what an older version wrote for `timeout: 99999999d`, and a reminder time no timer can hold
            await db.execute(
                update(Decision).where(Decision.id == by_job["far"]).values(expires_at=clock() + 99999999 * 86400)
            )
            await db.execute(
                update(Decision).where(Decision.id == by_job["never-reminded"]).values(remind_at=float("inf"))
            )
        tokens = gw.tokens

    caplog.set_level(logging.WARNING, logger="service.approvals.timeouts")
    async with (
        run_gateway(tmp_path, policy=None, servers={}, grants=[], tokens=tokens, clock=clock, **settings) as gw,
        gw.session("jobs") as session,
    ):
        expired = {d.id: d for d in await wait_for_decisions(gw, 2, status="expired")}
        listed = await session.call_tool("list-async-jobs", {})
        retry = await session.call_tool("cancel-async-job", {"jobId": "far"})

    assert set(expired) == set(by_job.values())
    for decision in expired.values():
        assert decision.decided_by == "timeout"
        assert "could not be scheduled" in (decision.reason or "")
    warned = [r.getMessage() for r in caplog.records if "cannot be scheduled" in r.getMessage()]
    assert len(warned) == 2 and all(any(d in m for m in warned) for d in by_job.values())
    assert not listed.is_error, "the service serves after start-up"
    assert retry.is_error and "holdgate" in text_of(retry)
    assert [c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"] == []
