"""Delivering the outbox: every channel notification is a row, sent until the channel accepts it.

`ApprovalService` writes the rows in the same transaction as the decision change, so a crash or a
channel outage delays a notification but loses none. The worker takes due rows under a short
lease (compare-and-set on `leased_until`, so replicas never send one row twice), hands each to its
channel, and on failure backs off exponentially up to `max_attempts`. A channel's failure only
delays people; it never decides anything (a decision nobody saw simply times out, per its rule).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from service import logcontext, metrics
from service.approvals.channels import Channel, MessageKind, is_message_kind
from service.approvals.schemas import DecisionView
from service.background import wait_until_set
from service.db import session_scope
from service.models import Decision, OutboxMessage, Vote

logger = logging.getLogger(__name__)

LEASE_S = 60.0
FLUSH_AFTER_S = LEASE_S / 4
"""A batch's endings are written when it is done, or sooner once this long has passed since the lease, so
a slow channel never lets the lease run out under rows that were already sent (another worker would send
them again). A crash before the write sends them again after the lease: delivery is at least once."""
MAX_BACKOFF_S = 300.0
SETTLE_S = 0.05
"""How long a woken worker lets the moment's other work go first. A decision's commit wakes both the
held call (which must claim its release and forward it: the latency people wait on) and this worker;
on SQLite their writes share one lock, and the channel update can wait 50 ms. It also gathers the
notifications of a burst into one lease."""
BUSY_LAG_S = 0.02
"""An event loop that is this late to wake a 10 ms sleep is saturated (a bulk approval releasing thousands of
held calls): the worker waits for it to calm down before sending, so notifications do not slow the release."""
MAX_DEFER_S = 5.0
"""The longest a saturated loop delays the channels' notifications."""


class OutboxWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        channels: Mapping[str, Channel],
        *,
        clock: Callable[[], float],
        poll_interval: float = 1.0,
        max_attempts: int = 10,
        retry_base: float = 2.0,
        batch: int = 100,
    ) -> None:
        self.sessions = sessions
        self.channels = dict(channels)
        self.clock = clock
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.batch = batch
        self._wake = asyncio.Event()

    def wake(self, _decision: Decision | None = None) -> None:
        """A listener for `ApprovalService`: there may be new rows to send."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: send what is due, then wait for a wake-up or the poll interval."""
        while True:
            self._wake.clear()
            try:
                await until_quiet()
                while await self.deliver_due() == self.batch:
                    await until_quiet()
            except Exception:
                logger.exception("outbox delivery failed; retrying")
            if await wait_until_set(self._wake, self.poll_interval):
                await asyncio.sleep(SETTLE_S)

    async def deliver_due(self) -> int:
        """Send one batch of due rows; returns how many were taken."""
        leased_at = self.clock()
        leased = await self._lease_due(leased_at)
        if leased:
            batch = await self._read(leased, leased_at)
            for message in batch.messages:
                if batch.superseded(message):
                    batch.finish(message, attempts=message.attempts + 1, sent_at=self.clock())
                    continue
                await self._deliver(message, batch)
                if self.clock() - batch.leased_at >= FLUSH_AFTER_S:
                    await self._flush(batch)
            await self._flush(batch)
        return len(leased)

    async def _lease_due(self, now: float) -> list[int]:
        """Take up to `batch` due rows for this worker: FOR UPDATE SKIP LOCKED, so replicas split them."""
        async with session_scope(self.sessions) as session:
            ids = [
                _stored_id(message_id)
                for message_id in await session.scalars(
                    select(col(OutboxMessage.id))
                    .where(
                        col(OutboxMessage.sent_at).is_(None),
                        col(OutboxMessage.failed_at).is_(None),
                        col(OutboxMessage.next_attempt_at) <= now,
                        or_(col(OutboxMessage.leased_until).is_(None), col(OutboxMessage.leased_until) < now),
                    )
                    .order_by(col(OutboxMessage.id))
                    .limit(self.batch)
                    .with_for_update(skip_locked=True)
                )
            ]
            if ids:
                await session.execute(
                    update(OutboxMessage).where(col(OutboxMessage.id).in_(ids)).values(leased_until=now + LEASE_S)
                )
            return ids

    async def _read(self, message_ids: list[int], leased_at: float) -> _Batch:
        """Everything the leased rows need, in four queries for the whole batch (not four per row)."""
        async with self.sessions() as session:
            messages = list(
                await session.scalars(
                    select(OutboxMessage).where(col(OutboxMessage.id).in_(message_ids)).order_by(col(OutboxMessage.id))
                )
            )
            decision_ids = {m.decision_id for m in messages}
            decisions = {
                d.id: d for d in await session.scalars(select(Decision).where(col(Decision.id).in_(decision_ids)))
            }
            votes: dict[str, list[Vote]] = {}
            for vote in await session.scalars(
                select(Vote).where(col(Vote.decision_id).in_(decision_ids)).order_by(col(Vote.id))
            ):
                votes.setdefault(vote.decision_id, []).append(vote)
            refs = await session.execute(
                select(
                    col(OutboxMessage.decision_id), col(OutboxMessage.channel), col(OutboxMessage.channel_ref)
                ).where(col(OutboxMessage.decision_id).in_(decision_ids), col(OutboxMessage.kind) == "request")
            )
            return _Batch(messages, decisions, votes, {(d, c): ref for d, c, ref in refs}, leased_at)

    async def _deliver(self, message: OutboxMessage, batch: _Batch) -> None:
        with logcontext.bound(decision_id=message.decision_id):
            await self._deliver_one(message, batch)

    async def _deliver_one(self, message: OutboxMessage, batch: _Batch) -> None:
        decision = batch.decisions[message.decision_id]
        ref = batch.refs.get((decision.id, message.channel)) if message.kind != "request" else None
        channel = self.channels.get(message.channel)
        now = self.clock()
        kind = message.kind
        if not is_message_kind(kind):
            logger.error("decision %s: outbox row %s has an unknown kind %r; not sent", decision.id, message.id, kind)
            batch.finish(message, failed_at=now, last_error=f"unknown message kind {kind!r}")
            metrics.count_outbox_failure(message.channel, given_up=True)
            return
        if channel is None:
            logger.error(
                "decision %s: channel %r is not configured on this gateway; its %s is not sent",
                decision.id,
                message.channel,
                message.kind,
            )
            batch.finish(message, failed_at=now, last_error=f"channel {message.channel!r} not configured")
            metrics.count_outbox_failure(message.channel, given_up=True)
            return
        try:
            view = DecisionView.of(decision, batch.votes.get(decision.id, []))
            new_ref = await channel.deliver(kind, view, ref)
        except Exception as exc:
            attempts = message.attempts + 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            metrics.count_outbox_failure(message.channel, given_up=False)
            if attempts >= self.max_attempts:
                logger.error(
                    "decision %s: %s %s failed for good: %s", decision.id, message.channel, message.kind, error
                )
                batch.finish(message, attempts=attempts, failed_at=now, last_error=error)
                metrics.count_outbox_failure(message.channel, given_up=True)
            else:
                delay = min(self.retry_base * 2.0 ** (attempts - 1), MAX_BACKOFF_S)
                logger.warning(
                    "decision %s: %s %s failed (attempt %d, retry in %gs): %s",
                    decision.id,
                    message.channel,
                    message.kind,
                    attempts,
                    delay,
                    error,
                )
                batch.finish(
                    message, attempts=attempts, next_attempt_at=now + delay, leased_until=None, last_error=error
                )
            return
        if message.kind == "request":  # an update later in this batch edits what was just posted
            batch.refs[(decision.id, message.channel)] = new_ref
        batch.finish(message, attempts=message.attempts + 1, sent_at=now, channel_ref=new_ref)

    async def _flush(self, batch: _Batch) -> None:
        """Record how the delivered rows went, in one transaction (an UPDATE by primary key per kind of ending)."""
        if batch.finished:
            finished, batch.finished = batch.finished, []
            async with session_scope(self.sessions) as session:
                await session.execute(update(OutboxMessage), finished)


@dataclass
class _Batch:
    """The leased rows with their decisions, votes and the channels' references to the original requests."""

    messages: list[OutboxMessage]
    decisions: dict[str, Decision]
    votes: dict[str, list[Vote]]
    refs: dict[tuple[str, str], str | None]
    leased_at: float
    finished: list[dict[str, Any]] = field(default_factory=list)
    """Endings not written yet (`_flush`): sent, retry later, or failed for good."""
    _last_updates: dict[tuple[str, str], int | None] | None = None

    def finish(self, message: OutboxMessage, **values: Any) -> None:
        self.finished.append({"id": _stored_id(message.id), **values})

    def superseded(self, message: OutboxMessage) -> bool:
        """An update followed, in this batch, by another update of the same decision on the same channel.

        A channel renders an update from the decision as it is now (read once for the batch), so both would
        show the same thing: only the last is sent (e.g. "approved" and then "executed" after a bulk release).
        """
        if message.kind != "update":
            return False
        if self._last_updates is None:
            self._last_updates = {(m.decision_id, m.channel): m.id for m in self.messages if m.kind == "update"}
        return self._last_updates[(message.decision_id, message.channel)] != message.id


async def was_sent(
    sessions: async_sessionmaker[AsyncSession], *, decision_id: str, channel: str, kind: MessageKind
) -> bool:
    """Whether a `kind` notification of this decision has already gone out on `channel`.

    For a channel that tells of a decision's ending once: the outbox sends an `update` for the ending and
    another when the released call finishes, and email mails only the first (nobody gets two notes about one
    decision). The outbox's rows are the record of what went out, so the question is asked here.
    """
    async with sessions() as session:
        sent = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                col(OutboxMessage.decision_id) == decision_id,
                col(OutboxMessage.channel) == channel,
                col(OutboxMessage.kind) == kind,
                col(OutboxMessage.sent_at).is_not(None),
            )
        )
    return bool(sent)


def _stored_id(message_id: int | None) -> int:
    """The id of a row read back from the outbox table (the model leaves it optional for rows not inserted yet)."""
    if message_id is None:
        raise ValueError("an outbox row read from the database has no id")
    return message_id


async def until_quiet(max_wait: float = MAX_DEFER_S) -> None:
    """Wait while the event loop is saturated, for at most `max_wait` seconds (background work lets calls go first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    while loop.time() < deadline:
        asked = loop.time()
        await asyncio.sleep(0.01)
        if loop.time() - asked < 0.01 + BUSY_LAG_S:
            return
