"""Timeouts and reminders: APScheduler timers for precision, a periodic sweep for correctness.

Each pending decision gets an in-memory date job at `expires_at` (and one at `remind_at`). Timers are
rebuilt from the database at start-up, set on every replica when one opens a decision (on PostgreSQL,
`service.approvals.pg_listen`), and a sweep runs right away and then every
`sweep_interval` seconds, expiring whatever is overdue — including decisions that fell due while
the service was down, and any a lost timer missed. Timer and sweep both go through
`ApprovalService.expire`, whose compare-and-set makes the timeout happen once however many race.
APScheduler's persistent job stores are deliberately not used (not safe across processes, and they
drop jobs that fell due during downtime): the database rows are the schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service.approvals.service import ApprovalService
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

    async def start(self) -> None:
        """Start the scheduler, schedule every pending decision, sweep once now."""
        self.scheduler.start()
        self.scheduler.add_job(
            self.sweep,
            "interval",
            seconds=self.sweep_interval,
            id="sweep",
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=1,
        )
        pending = await self.service.pending()
        for decision in pending:
            self.watch(decision)
        logger.info("timeouts: %d pending decision(s) rescheduled", len(pending))

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def watch(self, decision: Decision) -> None:
        """Keep the timers in step with a decision: set while pending, dropped once it ended."""
        if decision.status != "pending":
            self.forget(decision.id)
            return
        self._at(f"expire:{decision.id}", decision.expires_at, self.fire_timeout, decision.id)
        if decision.remind_at is not None and decision.reminded_at is None:
            self._at(f"remind:{decision.id}", decision.remind_at, self.fire_reminder, decision.id)

    def keep(self, decision_id: str, expires_at: float, remind_at: float | None) -> None:
        """Timers for a decision another replica opened (its announcement), as if opened here."""
        self._at(f"expire:{decision_id}", expires_at, self.fire_timeout, decision_id)
        if remind_at is not None:
            self._at(f"remind:{decision_id}", remind_at, self.fire_reminder, decision_id)

    def forget(self, decision_id: str) -> None:
        """Another replica ended the decision: its timers here have nothing left to do."""
        self._drop(f"expire:{decision_id}")
        self._drop(f"remind:{decision_id}")

    async def fire_timeout(self, decision_id: str) -> None:
        decision = await self.service.expire(decision_id)
        if decision is None:
            await self._retry_if_early(decision_id)

    async def fire_reminder(self, decision_id: str) -> None:
        await self.service.remind(decision_id)

    async def sweep(self) -> None:
        """Expire the overdue and send due reminders; what the timers should have done, if they did not."""
        try:
            for decision_id in await self.service.overdue_ids():
                await self.service.expire(decision_id)
            for decision_id in await self.service.reminder_ids_due():
                await self.service.remind(decision_id)
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
        self.scheduler.add_job(
            func,
            "date",
            run_date=run_date,
            args=[decision_id],
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _drop(self, job_id: str) -> None:
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(job_id)
