"""What a decision change tells others, written in the changing transaction so it is sent exactly when the
change commits (and never for a change that rolled back).

- `enqueue_notifications`: the channels' outbox rows (`request`, `reminder`, `update`); the outbox worker
  delivers them after the commit (`service.approvals.outbox`).
- `announce` / `announce_opened`: on PostgreSQL, a `NOTIFY` to the other replicas, which wake their held calls
  and set or drop their timers (`service.approvals.pg_listen` reads the payloads written here).

Both are no-ops when there is nothing to say; neither decides anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Decision, OutboxMessage
from service.policy import channel_names

DECISIONS_CHANNEL = "holdgate_decisions"
"""PostgreSQL NOTIFY channel; the payload is a decision id (see service.approvals.pg_listen)."""

OPENED_PREFIX = "open "
"""NOTIFY payload of a decision that is (still) pending: `open <id> <expires_at> <remind_at or ->`, so every replica
keeps its timers (an opening, or a wait withdrawn)."""


async def enqueue_notifications(session: AsyncSession, decisions: Iterable[Decision], kind: str, now: float) -> None:
    """The channels' notifications for `decisions`, in this transaction (one INSERT for all of them)."""
    rows = [
        {"decision_id": d.id, "channel": channel, "kind": kind, "created_at": now, "next_attempt_at": now}
        for d in decisions
        for channel in filter(None, d.channels.split(","))
        if channel not in channel_names.IN_BAND  # asked inside the held request (`client`): nothing to deliver
    ]
    if rows:
        await session.execute(insert(OutboxMessage), rows)


async def announce(session: AsyncSession, decision_ids: Sequence[str]) -> None:
    """Tell other replicas (on PostgreSQL) that `decision_ids` changed; sent when the transaction commits."""
    if decision_ids and session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :id)"),
            [{"channel": DECISIONS_CHANNEL, "id": decision_id} for decision_id in decision_ids],
        )


async def announce_opened(session: AsyncSession, decisions: Sequence[Decision]) -> None:
    """Tell other replicas (on PostgreSQL) of new decisions and when they fall due; sent when the transaction commits.

    Every replica then sets the timers, so a timeout fires on time even when the replica that opened it died.
    """
    if decisions and session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            [
                {
                    "channel": DECISIONS_CHANNEL,
                    "payload": f"{OPENED_PREFIX}{d.id} {d.expires_at!r} "
                    + (repr(d.remind_at) if d.remind_at is not None and d.reminded_at is None else "-"),
                }
                for d in decisions
            ],
        )
