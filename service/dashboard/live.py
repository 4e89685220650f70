"""Live updates for open dashboards: decision changes, pushed as Server-Sent Events.

`ApprovalService` calls its listeners after each committed decision change in this process; the
feed turns those into events for every open page. Decisions taken in another process (the CLI,
another replica) never reach these listeners, so each stream also compares a cheap fingerprint of
the decisions table every few seconds. A page that gets an event re-fetches the fragment it shows;
the event only says "look again", the database says what happened. Each stream ends after a while
(the browser reconnects at once), so a shutdown never waits long on an open page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from service.models import Decision

logger = logging.getLogger(__name__)


class LiveFeed:
    """Fan-out of decision changes to the open event streams of this process."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._attached: object | None = None

    def attach(self, service: Any) -> None:
        """Listen to `service` (an ApprovalService) once."""
        if self._attached is not service:
            service.listeners.append(self.on_decision)
            self._attached = service

    def on_decision(self, decision: Decision) -> None:
        event = {"id": decision.id, "status": decision.status}
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled page catches up on its next fetch
                queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=100)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    async def stream(
        self,
        *,
        fingerprint: Callable[[], Awaitable[Any]],
        disconnected: Callable[[], Awaitable[bool]],
        poll_interval: float = 2.0,
        lifetime: float = 30.0,
    ) -> AsyncIterator[str]:
        """The text of one event stream: `decision` events, keep-alive comments, then an end."""
        yield "retry: 1000\n\n"
        deadline = time.monotonic() + lifetime
        with self.subscribe() as queue:
            last = await fingerprint()
            while time.monotonic() < deadline:
                if await disconnected():
                    return
                try:
                    event = await asyncio.wait_for(queue.get(), poll_interval)
                except TimeoutError:
                    try:
                        now = await fingerprint()
                    except Exception as exc:  # the database may be briefly away
                        logger.warning("dashboard live poll failed: %s", exc)
                        continue
                    if now != last:
                        last = now
                        yield _event({"id": None, "status": "changed"})
                    else:
                        yield ": keep-alive\n\n"
                    continue
                yield _event(event)


def _event(data: dict[str, Any]) -> str:
    return f"event: decision\ndata: {json.dumps(data)}\n\n"
