"""The audit writer's cadence: one batch per turn (`HOLDGATE_AUDIT_FLUSH_INTERVAL_S`, or 500 records waiting), not a
commit per call. Both databases."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import event

from service import db
from service.audit.service import AuditWriter
from tests.audit.test_unrecordable import events, record, verified


async def test_records_that_arrive_while_a_batch_is_written_wait_for_the_writers_next_turn(engine):
    """Under a steady stream of calls, records kept arriving while a batch was written, and the writer went on
    writing them at once: batches of one or two records back to back, three statements and a commit each. A turn
    now writes what was queued when it began; a call that ends meanwhile waits for the next turn (here, the
    flush at close), still in order and in the chain."""
    writer = AuditWriter(db.session_factory(engine), flush_interval=3600, batch_size=2)
    writers: list[str] = []  # the task behind each INSERT of audit rows

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            task = asyncio.current_task()
            writers.append(task.get_name() if task is not None else "?")
            if len(writers) == 1:
                writer.record(record(2))  # a call that ends while the first batch is being written

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        writer.start()
        writer.record(record(0))
        writer.record(record(1))  # a full batch: the writer's turn comes now, not in an hour
        async with asyncio.timeout(30):
            while not writers:
                await asyncio.sleep(0.01)
        async with writer._flush_lock:  # the writer's turn is over
            assert writer.backlog == 1, "the record that came during the write waits for the next turn"
        await writer.aclose()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)
    me = asyncio.current_task()
    assert me is not None
    assert writers == ["audit-writer", me.get_name()], "one batch in the writer's turn, the late record at close"
    rows = await events(engine)
    assert [json.loads(r.arguments)["jobId"] for r in rows] == ["job-0", "job-1", "job-2"]
    assert (await verified(engine)).ok
