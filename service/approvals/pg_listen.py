"""Decisions across replicas on PostgreSQL: LISTEN on a dedicated connection, wake the local bus.

`ApprovalService.transition` sends `pg_notify('holdgate_decisions', id)` in the deciding transaction,
so every replica hears of a decision when it commits. This listener holds one asyncpg connection
per process (outside the pool), LISTENs first, and after every (re)connect wakes all local waiters
so they re-read their rows: notifications are not durable, and one sent while the connection was
down would otherwise be missed until the bus's periodic poll.

Openings are announced too (`open <id> <expires_at> <remind_at>`, see `announce_opened`): every replica
sets the decision's timers, so its timeout fires on time even if the replica that opened it dies. A pending
decision that changes (its agent stopped waiting) is announced the same way; a plain id (a decision that ended,
or whose claim changed) drops them. The timers' sweep stays the safety net for a missed notification.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncpg
from sqlalchemy.engine import make_url

from service.approvals.bus import DecisionBus
from service.approvals.notices import DECISIONS_CHANNEL, OPENED_PREFIX

if TYPE_CHECKING:
    from service.approvals.timeouts import DecisionTimers

logger = logging.getLogger(__name__)

RECONNECT_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)


def asyncpg_dsn(database_url: str) -> str:
    """The plain libpq URL for asyncpg, whichever SQLAlchemy driver the service uses."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgDecisionListener:
    def __init__(self, database_url: str, bus: DecisionBus, timers: DecisionTimers | None = None) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self.bus = bus
        self.timers = timers
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Forever: connect, LISTEN, relay; reconnect with back-off when the connection drops."""
        failures = 0
        while True:
            try:
                await self._listen_once()
                failures = 0
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                failures += 1
                logger.warning("decision listener: %s; reconnecting in %gs", exc, delay)
                await asyncio.sleep(delay)

    async def _listen_once(self) -> None:
        connection = await asyncpg.connect(self._dsn)
        lost = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _conn: lost.set())
            await connection.add_listener(DECISIONS_CHANNEL, self._on_notify)
            self.connected.set()
            for decision_id in self.bus.waiting_ids():  # whatever happened while we were not listening
                self.bus.publish(decision_id)
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), 10)
                except TimeoutError:
                    await connection.execute("SELECT 1")  # notice a dead connection promptly
        finally:
            self.connected.clear()
            if not connection.is_closed():
                await connection.close(timeout=2)
        raise OSError("LISTEN connection lost")

    def _on_notify(self, _connection, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(OPENED_PREFIX):
            self._on_opened(payload[len(OPENED_PREFIX) :])
            return
        self.bus.publish(payload)
        if self.timers is not None:
            self.timers.forget(payload)

    def _on_opened(self, announcement: str) -> None:
        try:
            decision_id, expires_at, remind_at = announcement.split(" ")
            due, remind = float(expires_at), None if remind_at == "-" else float(remind_at)
        except ValueError:
            logger.warning("decision listener: malformed opening %r ignored (the sweep covers it)", announcement)
            return
        self.bus.publish(decision_id)  # a pending decision that changed (an agent stopped waiting) wakes its calls
        if self.timers is not None:
            self.timers.keep(decision_id, due, remind)
