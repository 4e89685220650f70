"""Waking held calls when their decision changes.

In this process, `ApprovalService` tells the bus after each commit and the waiting call wakes at
once. A decision taken elsewhere (the CLI writing the database directly, another replica) reaches
the bus through `poll`: one query per interval for all the decisions this process waits on, not
one per held call (PostgreSQL's LISTEN/NOTIFY can later carry decisions between replicas sooner;
the poll stays as the safety net). Waiters always re-read the row
after waking: the bus says "look again", the database says what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class DecisionBus:
    """asyncio events keyed by decision id; cheap enough for thousands of held calls."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    @contextmanager
    def subscribe(self, decision_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever `decision_id` may have changed; subscribe before reading the row."""
        event = asyncio.Event()
        self._waiters.setdefault(decision_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(decision_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[decision_id]

    def waiting(self, decision_id: str) -> int:
        """How many calls in this process wait on `decision_id`."""
        return len(self._waiters.get(decision_id, ()))

    def held_calls(self) -> int:
        """How many calls in this process wait on any decision."""
        return sum(len(waiters) for waiters in self._waiters.values())

    def waiting_ids(self) -> list[str]:
        return list(self._waiters)

    def publish(self, decision_id: str) -> None:
        for event in self._waiters.get(decision_id, ()):
            event.set()

    async def poll(
        self, statuses: Callable[[Sequence[str]], Awaitable[dict[str, str]]], interval: float, batch: int = 500
    ) -> None:
        """Forever: wake the waiters of decisions that are no longer pending in the database."""
        while True:
            await asyncio.sleep(interval)
            ids = self.waiting_ids()
            for start in range(0, len(ids), batch):
                try:
                    found = await statuses(ids[start : start + batch])
                except Exception as exc:  # the database may be briefly away; held calls keep waiting
                    logger.warning("decision poll failed: %s", exc)
                    break
                for decision_id, status in found.items():
                    if status != "pending":
                        self.publish(decision_id)
