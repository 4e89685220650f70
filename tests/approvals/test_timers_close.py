"""The timers stop with the service: a job still running when they close has ended when `aclose` returns.

APScheduler's asyncio executor only cancels its running jobs at shutdown. A sweep cancelled in the middle of a
statement still has to close its connection (SQLAlchemy does it in a task of its own, which waits for aiosqlite's
thread), and left to end on its own it outlived the lifespan; in the tests, the event loop's teardown then
cancelled it a second time mid-close, and the close waited for ever on a thread that had been stopped (a worker of
the suite hung in pytest-asyncio's loop close). Real SQLite, where that happens.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from sqlalchemy import event

from service import db
from service.approvals import ApprovalService
from service.approvals.timeouts import DecisionTimers
from tests.approvals.test_release_crash import VERDICT, Clock, call

WRITES = ("INSERT", "UPDATE", "DELETE")


async def test_a_sweep_caught_in_the_middle_of_a_statement_has_ended_when_the_timers_close(tmp_path):
    path = tmp_path / "timers.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    await db.upgrade(engine)
    clock = Clock()
    service = ApprovalService(db.session_factory(engine), clock=clock)
    decision, _ = await service.open_or_join(**call(), verdict=VERDICT)
    clock.now = decision.expires_at + 1  # overdue: the sweep that runs at start expires it, a write
    writing = asyncio.Event()

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(WRITES):
            writing.set()

    # Another process holds the database's write lock: the sweep's write waits for it on aiosqlite's thread.
    other_process = sqlite3.connect(path, isolation_level=None)
    other_process.execute("BEGIN IMMEDIATE")
    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    timers = DecisionTimers(service, clock=clock, sweep_interval=3600)
    me = asyncio.current_task()
    try:
        await timers.start()
        async with asyncio.timeout(30):
            await writing.wait()
        running = [task for task in asyncio.all_tasks() if task is not me]
        assert running, "the sweep is running"
        asyncio.get_running_loop().call_soon(other_process.rollback)  # the lock goes while the timers close
        await timers.aclose()
        assert [task for task in running if not task.done()] == [], "nothing of the timers outlives their close"
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)
        other_process.close()
        left = [task for task in asyncio.all_tasks() if task is not me]
        if left:  # (only when the assertion failed) let them end here rather than in the loop's teardown
            await asyncio.wait(left, timeout=60)
    try:
        assert (await service.load(decision.id)).status == "pending", "the cancelled sweep expired nothing"
    finally:
        await engine.dispose()
