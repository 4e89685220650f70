"""The release as a lease, with an injected clock: what a claim whose holder died becomes, and what a retry gets.

Two `ApprovalService`s on one database stand for two processes (each has its own claim-holder id); "dying" is
simply no longer renewing. Real SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial

import pytest
from sqlalchemy import select

from service import db
from service.approvals import RESULT_LIMIT_BYTES, ApprovalService
from service.approvals.bus import DecisionBus
from service.approvals.leases import ClaimLeases
from service.approvals.pg_listen import PgDecisionListener
from service.approvals.timeouts import DecisionTimers
from service.approvals.wiring import audit_decision_event
from service.audit.service import AuditWriter
from service.models import AuditEvent, Decision
from service.policy import ApprovalSpec, Approver, Verdict
from service.policy.redaction import args_digest

ARGS = {"jobId": "j-1"}
KEY = b"test-args-digest-key"
VERDICT = Verdict(
    action="require_approval", rule="cancel-async-job", approval=ApprovalSpec(approvers=(Approver(name="alice"),))
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sessions(tmp_path, database) -> AsyncIterator:
    engine = db.create_engine(database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    await db.upgrade(engine)
    yield db.session_factory(engine)
    await engine.dispose()


def processes(sessions, clock: Clock) -> tuple[ApprovalService, ApprovalService]:
    return ApprovalService(sessions, clock=clock, lease_s=15), ApprovalService(sessions, clock=clock, lease_s=15)


async def approved(service: ApprovalService) -> Decision:
    decision, _ = await service.open_or_join(**call(), verdict=VERDICT)
    return await service.transition(decision.id, "approved", by="alice", via="api")


def call() -> dict:
    return dict(
        grant="agent",
        server="jobs",
        tool="cancel-async-job",
        arguments=ARGS,
        args_sha256=args_digest(KEY, ARGS),
        policy_version="v1",
    )


async def earlier(service: ApprovalService) -> Decision | None:
    binding = {k: v for k, v in call().items() if k != "arguments"}
    return await service.earlier_run(**binding, within_s=600)


async def test_a_claim_whose_holder_died_before_sending_goes_back_to_approved_and_runs_once_on_retry(sessions):
    clock = Clock()
    dead, survivor = processes(sessions, clock)
    decision = await approved(dead)
    assert await dead.claim(decision.id) is not None  # then the process dies: no "sending", no renewal

    clock.now += 10
    assert (await survivor.reconcile()).released == [], "a live lease is not touched"
    assert (await earlier(survivor)).id == decision.id, "a retry meanwhile waits for the run in flight"
    clock.now += 6
    reconciled = await survivor.reconcile()
    assert [d.id for d in reconciled.released] == [decision.id] and reconciled.unknown == []
    assert await earlier(survivor) is None, "nothing ran: the retry takes the normal path"

    joined, created = await survivor.open_or_join(**call(), verdict=VERDICT)
    assert (joined.id, created) == (decision.id, False), "the retry collects the same approval"
    assert await survivor.claim(decision.id) is not None
    assert await survivor.mark_sending(decision.id)
    assert not await dead.mark_sending(decision.id), "the old holder (had it survived) can no longer send"
    assert await survivor.claim(decision.id) is None, "one run only"


async def test_a_claim_whose_holder_died_while_sending_is_outcome_unknown_and_audited(sessions):
    clock = Clock()
    dead, survivor = processes(sessions, clock)
    audit = AuditWriter(sessions, clock=clock)
    survivor.audit_event = partial(audit_decision_event, audit, clock)
    decision = await approved(dead)
    await dead.claim(decision.id)
    assert await dead.mark_sending(decision.id)

    clock.now += 16
    reconciled = await ClaimLeases(survivor).tick()
    assert [d.id for d in reconciled.unknown] == [decision.id] and reconciled.released == []
    await audit.flush()
    row = await survivor.load(decision.id)
    assert row.outcome == "unknown" and "may have run" in row.outcome_detail
    async with sessions() as session:
        events = list(await session.scalars(select(AuditEvent).where(AuditEvent.decision_id == decision.id)))
    assert [(e.verdict, e.outcome, e.reason) for e in events] == [("approved", "unknown", "outcome unknown")]
    assert (await ClaimLeases(survivor).tick()).unknown == [], "reconciled once"

    retry = await earlier(survivor)
    assert retry is not None and retry.outcome == "unknown"
    fresh, created = await survivor.open_or_join(**call(), verdict=VERDICT, previous_attempt=retry)
    assert created and fresh.previous_attempt == decision.id
    assert f"previous attempt {decision.id} may have run" in fresh.reason
    assert await survivor.claim(fresh.id) is None, "it runs again only once a person approves the new decision"


async def test_a_renewed_lease_outlives_its_original_expiry(sessions):
    clock = Clock()
    holder, peer = processes(sessions, clock)
    decision = await approved(holder)
    await holder.claim(decision.id)
    for _ in range(5):
        clock.now += 10
        assert await holder.renew_leases() == 1
        reconciled = await peer.reconcile()
        assert reconciled.released == [] and reconciled.unknown == []
    assert await holder.mark_sending(decision.id)


async def test_a_finished_run_is_replayed_to_a_retry_within_claim_within_and_not_after(sessions):
    clock = Clock()
    service, _ = processes(sessions, clock)
    decision = await approved(service)
    await service.claim(decision.id)
    assert await service.mark_sending(decision.id)
    result = {"content": [{"type": "text", "text": "cancelled j-1"}]}
    await service.record_execution(decision.id, outcome="ok", detail=None, duration_ms=3, result=result)

    clock.now += 599
    replay = await earlier(service)
    assert replay is not None and replay.id == decision.id and replay.result is not None
    assert replay.outcome == "ok" and replay.lease_until is None
    assert await service.renew_leases() == 0, "a finished call's lease is no longer renewed"
    clock.now += 2
    assert await earlier(service) is None, "past claim_within, the same call asks again"


async def test_a_result_over_the_bound_is_not_kept_but_the_outcome_is(sessions):
    clock = Clock()
    service, _ = processes(sessions, clock)
    decision = await approved(service)
    await service.claim(decision.id)
    await service.mark_sending(decision.id)
    huge = {"content": [{"type": "text", "text": "x" * RESULT_LIMIT_BYTES}]}
    await service.record_execution(decision.id, outcome="ok", detail=None, duration_ms=3, result=huge)
    row = await earlier(service)
    assert row is not None and row.outcome == "ok" and row.result is None


async def test_a_call_that_never_left_gives_its_claim_back_at_once(sessions):
    clock = Clock()
    service, _ = processes(sessions, clock)
    decision = await approved(service)
    await service.claim(decision.id)
    await service.release_unsent(decision.id)
    assert await earlier(service) is None
    assert await service.claim(decision.id) is not None, "the same approval runs the next identical call"


# -- leases and lapse together (issue 14's two halves) ------------------------------------------------------------


async def test_a_claim_given_back_after_its_holder_died_near_collect_by_does_not_lapse_at_once(sessions):
    clock = Clock()
    dead, survivor = processes(sessions, clock)
    decision = await approved(dead)
    assert decision.collect_by == clock.now + 600
    clock.now += 590  # claimed 10 s before the approval would have lapsed
    assert await dead.claim(decision.id) is not None

    clock.now += 16  # the holder died; its lease ran out after collect_by
    reconciled = await survivor.reconcile()
    assert [d.id for d in reconciled.released] == [decision.id]
    row = await survivor.load(decision.id)
    assert row.collect_by == clock.now + 600, "a crash gives the approval a fresh claim_within"
    assert row.claimed_at is None and row.claim_holder is None and row.lease_until is None
    assert await survivor.lapse(decision.id) is None, "not lapsed: nobody left it uncollected"
    assert await survivor.claim(decision.id) is not None, "the retry collects it"


async def test_a_lapsed_approval_never_counts_as_an_earlier_run(sessions):
    clock = Clock()
    service, _ = processes(sessions, clock)
    decision = await approved(service)
    clock.now += 601
    lapsed = await service.lapse(decision.id)
    assert lapsed is not None and lapsed.outcome == "lapsed" and lapsed.outcome_at == clock.now
    assert await earlier(service) is None, "a lapsed approval never ran: no replay, no 'may have run'"
    fresh, created = await service.open_or_join(**call(), verdict=VERDICT)
    assert created and fresh.previous_attempt is None
    assert "may have run" not in (fresh.reason or "")


async def test_an_ending_given_back_for_a_call_that_went_away_clears_its_lease_but_a_sent_one_stays(sessions):
    clock = Clock()
    service, peer = processes(sessions, clock)
    decision = await approved(service)
    assert await service.claim(decision.id) is not None
    assert await service.give_back_ending(decision.id)
    row = await service.load(decision.id)
    assert (row.claimed_at, row.claim_holder, row.lease_until) == (None, None, None)
    assert row.collect_by == decision.collect_by, "a call that went away keeps the deadline it had"
    assert await service.renew_leases() == 0

    assert await peer.claim(decision.id) is not None
    assert await peer.mark_sending(decision.id)
    assert not await peer.give_back_ending(decision.id), "a call that left for the upstream is never given back"
    assert (await peer.load(decision.id)).claim_holder == peer.holder


async def test_a_withdrawn_wait_is_announced_as_still_pending_so_every_replica_keeps_its_expiry_timer(postgres_url):
    engine = db.create_engine(postgres_url)
    await db.upgrade(engine)
    clock = Clock()
    service = ApprovalService(db.session_factory(engine), clock=clock)
    timers = DecisionTimers(service, clock=clock, sweep_interval=3600)
    bus = DecisionBus()
    listener = PgDecisionListener(postgres_url, bus, timers)
    await timers.start()
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        decision, _ = await service.open_or_join(**call(), verdict=VERDICT)  # timers set from its announcement
        for _ in range(100):
            if timers.scheduler.get_job(f"expire:{decision.id}") is not None:
                break
            await asyncio.sleep(0.05)
        with bus.subscribe(decision.id) as changed:
            assert await service.withdraw(decision.id, cancelled=True) is not None
            await asyncio.wait_for(changed.wait(), 10)  # the announcement of the withdrawal arrived
        assert timers.scheduler.get_job(f"expire:{decision.id}") is not None, "still pending: it still expires"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await timers.aclose()
        await engine.dispose()
