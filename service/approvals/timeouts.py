"""Timeouts and reminders: APScheduler timers for precision, a periodic sweep for correctness.

Each pending decision gets an in-memory date job at `expires_at` (and one at `remind_at`, and one at
`rejoin_by` while its agent has stopped waiting); an approved decision no call has collected gets one at
`collect_by`, when it lapses. Timers are rebuilt from the database at start-up, the expiry and reminder
timers are set on every replica when one opens a decision (on PostgreSQL, `service.approvals.pg_listen`),
and a sweep runs right away and then every `sweep_interval` seconds, doing whatever is overdue — including
decisions that fell due while the service was down, and any a lost timer missed. Timer and sweep both go
through the same compare-and-set (`ApprovalService.expire`, `end_unrejoined`, `lapse`), so each happens once
however many race.
APScheduler's persistent job stores are deliberately not used (not safe across processes, and they
drop jobs that fell due during downtime): the database rows are the schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import update
from sqlmodel import col

from service import logcontext
from service.approvals.service import ApprovalService
from service.db import session_scope
from service.models import Decision

logger = logging.getLogger(__name__)

EARLY_FIRE_GRACE_S = 1.0
"""A timer that fires a little early (clock skew) waits this long at most, then tries again."""


class DecisionTimers:
    """Owns the scheduler; `watch(decision)` is the listener `ApprovalService` calls after each change."""

    def __init__(self, service: ApprovalService, *, clock: Callable[[], float], sweep_interval: float) -> None:
        self.service = service
        self.clock = clock
        self.sweep_interval = sweep_interval
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: set[asyncio.Task[None]] = set()
        """The jobs running now (each in a task of APScheduler's), so `aclose` can wait for them."""

    async def start(self) -> None:
        """Start the scheduler, schedule every pending decision, sweep once now."""
        self.scheduler.start()
        self.scheduler.add_job(
            self._job,
            "interval",
            args=[self.sweep],
            name="sweep",
            seconds=self.sweep_interval,
            id="sweep",
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=1,
        )
        pending = await self.service.pending()
        for decision in pending:
            try:
                self.watch(decision)
            except Exception as exc:  # one row never stops start-up
                await self._expire_unschedulable(decision, exc)
        for decision in await self.service.uncollected():
            self.watch(decision)
        logger.info("timeouts: %d pending decision(s) rescheduled", len(pending))

    async def _expire_unschedulable(self, decision: Decision, error: Exception) -> None:
        """A pending row whose deadline cannot be scheduled (an absurd `expires_at` or `remind_at`, as
        older versions wrote before durations were bounded) expires now, whatever its `on_timeout`
        (fail closed). Its deadline is set to now in the same transaction, so no reader chokes on it later.
        """
        logger.warning(
            "timeouts: decision %s has a deadline that cannot be scheduled (expires_at=%r, remind_at=%r: %s); "
            "expiring it now",
            decision.id,
            decision.expires_at,
            decision.remind_at,
            error,
        )
        now = self.clock()
        try:
            async with session_scope(self.service.sessions) as session:
                await session.execute(
                    update(Decision)
                    .where(col(Decision.id) == decision.id, col(Decision.status) == "pending")
                    .values(expires_at=now, remind_at=None)
                )
                ended = await self.service.transition(
                    decision.id,
                    "expired",
                    by="timeout",
                    via="timeout",
                    reason=f"its deadline could not be scheduled ({error}); expired at start-up",
                    session=session,
                )
            self.service._notify(ended)  # committed: the listeners hear of it as of any transition
        except Exception:  # decided elsewhere meanwhile, or the database refused: the sweep stays the safety net
            logger.exception("timeouts: could not expire unschedulable decision %s", decision.id)

    async def aclose(self) -> None:
        """Stop the timers, and wait until the jobs that were running have ended.

        APScheduler's asyncio executor cannot wait for its jobs: its `shutdown` cancels the running ones and
        forgets them. A job cancelled in the middle of a statement still has to close its connection (SQLAlchemy
        closes an interrupted aiosqlite connection in a task of its own, which waits for aiosqlite's thread to
        finish the statement). Left alone, it outlived the lifespan and the engine disposed after it, and in the
        tests it reached the event loop's teardown, whose second cancel made SQLAlchemy stop aiosqlite's thread
        under that close, which then waited for ever (a worker of the suite hung in pytest-asyncio's loop close).
        `asyncio.wait`, unlike `gather`, does not cancel the jobs again if this wait is itself cancelled.
        """
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)  # cancels the running jobs
        if self._running:
            await asyncio.wait(set(self._running))

    async def _job(self, work: Callable[..., Awaitable[None]], *args: str) -> None:
        """Every job runs through here, so the timers know which are running (`aclose`)."""
        task = asyncio.current_task()
        assert task is not None  # APScheduler runs each coroutine job in a task of its own
        self._running.add(task)
        try:
            await work(*args)
        finally:
            self._running.discard(task)

    def watch(self, decision: Decision) -> None:
        """Keep the timers in step with a decision: set while pending, dropped once it ended."""
        if decision.status != "pending":
            self.forget(decision.id)
            if decision.status == "approved" and decision.claimed_at is None and decision.collect_by is not None:
                self._at(f"lapse:{decision.id}", decision.collect_by, self.fire_lapse, decision.id)
            else:
                self._drop(f"lapse:{decision.id}")
            return
        self._at(f"expire:{decision.id}", decision.expires_at, self.fire_timeout, decision.id)
        if decision.remind_at is not None and decision.reminded_at is None:
            self._at(f"remind:{decision.id}", decision.remind_at, self.fire_reminder, decision.id)
        if decision.rejoin_by is not None:
            self._at(f"rejoin:{decision.id}", decision.rejoin_by, self.fire_rejoin, decision.id)
        else:
            self._drop(f"rejoin:{decision.id}")

    def keep(self, decision_id: str, expires_at: float, remind_at: float | None) -> None:
        """Timers for a decision another replica opened (its announcement), as if opened here."""
        self._at(f"expire:{decision_id}", expires_at, self.fire_timeout, decision_id)
        if remind_at is not None:
            self._at(f"remind:{decision_id}", remind_at, self.fire_reminder, decision_id)

    def forget(self, decision_id: str) -> None:
        """The decision ended (here, or on another replica): its timers of a pending decision have nothing left
        to do. Its lapse timer stays: it is set only here, by `watch`, and stale it changes nothing."""
        self._drop(f"expire:{decision_id}")
        self._drop(f"remind:{decision_id}")
        self._drop(f"rejoin:{decision_id}")

    async def fire_timeout(self, decision_id: str) -> None:
        with logcontext.bound(decision_id=decision_id):
            decision = await self.service.expire(decision_id)
            if decision is None:
                await self._retry_if_early(decision_id)

    async def fire_reminder(self, decision_id: str) -> None:
        with logcontext.bound(decision_id=decision_id):
            await self.service.remind(decision_id)

    async def fire_rejoin(self, decision_id: str) -> None:
        """The agent that stopped waiting did not call again within `rejoin_within`: the decision ends cancelled."""
        with logcontext.bound(decision_id=decision_id):
            await self.service.end_unrejoined(decision_id)

    async def fire_lapse(self, decision_id: str) -> None:
        """Nobody collected the approval within `claim_within`: it lapses."""
        with logcontext.bound(decision_id=decision_id):
            await self.service.lapse(decision_id)

    async def sweep(self) -> None:
        """Expire the overdue and send due reminders; what the timers should have done, if they did not. Standing
        approvals that expired get their audit record here (they stop covering calls at `expires_at` whatever the
        sweep does: the lookup compares with the clock)."""
        try:
            for decision_id in await self.service.overdue_ids():
                await self.service.expire(decision_id)
            for decision_id in await self.service.reminder_ids_due():
                await self.service.remind(decision_id)
            for decision_id in await self.service.rejoin_due_ids():
                await self.service.end_unrejoined(decision_id)
            for decision_id in await self.service.lapse_due_ids():
                await self.service.lapse(decision_id)
            await self.service.end_expired()  # standing approvals: their expiry audited, once
        except Exception:  # the next sweep tries again; a timeout is never silently skipped
            logger.exception("timeout sweep failed")

    async def _retry_if_early(self, decision_id: str) -> None:
        try:
            decision = await self.service.load(decision_id)
        except Exception:
            return
        wait = decision.expires_at - self.clock()
        if decision.status == "pending" and 0 < wait <= EARLY_FIRE_GRACE_S:
            await asyncio.sleep(wait)
            await self.service.expire(decision_id)

    def _at(self, job_id: str, when: float, func, decision_id: str) -> None:
        # The injected clock may run ahead of the wall clock (tests); a timer never fires before
        # the wall-clock moment of `when`, and the sweep covers the rest.
        run_date = datetime.fromtimestamp(max(when, 0), UTC)
        # Not in the context of the call that opened the decision: the scheduler's wake-ups and every job would
        # inherit it (its log fields, its trace). `fire_*` give their lines the decision's id instead.
        logcontext.detached().run(
            self.scheduler.add_job,
            self._job,
            "date",
            run_date=run_date,
            args=[func, decision_id],
            id=job_id,
            name=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _drop(self, job_id: str) -> None:
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(job_id)
