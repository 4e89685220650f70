"""Decisions across replicas on PostgreSQL: LISTEN on a dedicated connection, wake the local bus.

`ApprovalService.transition` sends `pg_notify('holdgate_decisions', id)` in the deciding transaction,
so every replica hears of a decision when it commits. This listener holds one asyncpg connection
per process (outside the pool), LISTENs first, and after every (re)connect wakes all local waiters
so they re-read their rows: notifications are not durable, and one sent while the connection was
down would otherwise be missed until the bus's periodic poll.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from sqlalchemy.engine import make_url

from service.approvals.bus import DecisionBus
from service.approvals.service import DECISIONS_CHANNEL

logger = logging.getLogger(__name__)

RECONNECT_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)


def asyncpg_dsn(database_url: str) -> str:
    """The plain libpq URL for asyncpg, whichever SQLAlchemy driver the service uses."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgDecisionListener:
    def __init__(self, database_url: str, bus: DecisionBus) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self.bus = bus
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
        self.bus.publish(payload)
