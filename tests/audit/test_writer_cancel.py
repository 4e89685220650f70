"""The audit writer stopped mid-write (the shutdown cancels it): every record is written once, none twice, none
lost, wherever the cancel lands. Both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from service import db
from service.audit.keys import ArgsDigester
from service.audit.service import AuditWriter
from tests.audit.test_unrecordable import events, record, verified


@contextmanager
def watched_sessions(
    engine: AsyncEngine, moment: str, on_commit: Callable[[], None]
) -> Iterator[async_sessionmaker[AsyncSession]]:
    """Sessions on `engine` that call `on_commit()` at `moment` of each of their commits: "during" (the COMMIT is
    on its way to the database) or "after" (the database has committed; the session has still to close)."""

    class Watched(Session):
        pass

    def mark(session: Session) -> None:
        session.connection().info["watched"] = True

    def on_connection_commit(conn: Any) -> None:
        if conn.info.pop("watched", False):
            on_commit()

    if moment == "after":
        event.listen(Watched, "after_commit", lambda session: on_commit())
    else:
        event.listen(Watched, "before_commit", mark)
        event.listen(engine.sync_engine, "commit", on_connection_commit)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False, sync_session_class=Watched)
    finally:
        if moment != "after":
            event.remove(engine.sync_engine, "commit", on_connection_commit)


@pytest.mark.parametrize("moment", ["during", "after"])
async def test_a_writer_cancelled_as_its_batch_commits_writes_each_record_once(engine, moment):
    """The shutdown's cancel lands as the writer's batch commits. Raised there, it made the writer put the batch
    back in the queue although the database had it, and the flush at shutdown wrote the three records again."""
    writer: AuditWriter | None = None

    def cancel_the_writer() -> None:
        assert writer is not None and writer._task is not None
        writer._task.cancel()  # what `aclose` does at shutdown, at this very moment

    with watched_sessions(engine, moment, cancel_the_writer) as sessions:
        # The digest key is read through plain sessions: only the commit of the audit rows is watched.
        digester = ArgsDigester(db.session_factory(engine))
        writer = AuditWriter(sessions, flush_interval=3600, batch_size=3, args_digest=digester)
        writer.start()
        for i in range(3):
            writer.record(record(i))  # a full batch: the writer's turn comes now
        assert writer._task is not None
        async with asyncio.timeout(30):
            await asyncio.wait([writer._task])
        assert writer._task.cancelled(), "the writer ends cancelled, as the shutdown asked"
        assert writer.backlog == 0, "the committed batch is not queued again"
        await writer.aclose()  # the shutdown's flush: it writes whatever is still queued
    rows = await events(engine)
    assert [json.loads(r.arguments)["jobId"] for r in rows] == ["job-0", "job-1", "job-2"]
    assert (await verified(engine)).ok


async def test_a_writer_woken_as_the_shutdown_stops_it_still_stops(engine):
    """A full batch queued in the very step the shutdown cancels the writer: with `asyncio.wait_for` as its nap,
    Python 3.11 lost the cancel, the writer went on looping and `aclose` never returned."""
    sessions = db.session_factory(engine)
    writer = AuditWriter(sessions, flush_interval=3600, batch_size=1, args_digest=ArgsDigester(sessions))
    writer.start()
    await asyncio.sleep(0)  # the writer's task runs to its nap

    async def record_and_close() -> None:
        writer.record(record(0))  # wakes it
        await writer.aclose()  # cancels it in the same step

    closing = asyncio.create_task(record_and_close())
    await asyncio.wait({closing}, timeout=30)  # a bound, not a measure: a lost cancel fails the test
    closed = closing.done()
    assert writer._task is not None
    writer._task.cancel()  # (only matters if the first cancel was lost) so the test ends
    await closing
    assert closed and writer._task.cancelled()
    assert [json.loads(r.arguments)["jobId"] for r in await events(engine)] == ["job-0"], "the flush wrote it"
