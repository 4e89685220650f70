"""Group commit: requests that arrive together share one database transaction.

When a decision is approved in bulk, thousands of held calls wake at once and each wants a small
write (claim the release, record the execution). One transaction each would make the release as
slow as the database's commit rate; `GroupCommit` hands every request waiting at that moment to a
single `write(batch)` and gives each caller its own answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from service import logcontext

Item = TypeVar("Item")
Answer = TypeVar("Answer")

MAX_BATCH = 500


class GroupCommit(Generic[Item, Answer]):
    def __init__(self, write: Callable[[Sequence[Item]], Awaitable[Sequence[Answer]]]) -> None:
        self._write = write
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        """Queue `item` for the next batch and wait for its answer (the batch's error, if it failed)."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="group-commit", context=logcontext.detached())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let the requests of this moment join the first batch
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                answers = await self._write([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
