"""Stopping background tasks: cancel them and wait until they have ended, without losing a cancel of the caller.

The idiom this replaces, `task.cancel()` then `with suppress(CancelledError): await task`, cannot tell the
task's CancelledError (the one asked for) from one aimed at the caller while it waits, so a shutdown cancelled
meanwhile swallowed its own cancel and carried on as if nothing had happened (a teardown told to stop went on).
`await task` also hands the caller's cancel on to the task: a second cancel, which cuts short the clean-up the
first one started (an interrupted database connection being closed: see `DecisionTimers.aclose`).

`cancel_and_wait` is the one way the service and the channels stop a task they started; which tasks to stop,
and whether a task's failure matters at shutdown, are the caller's. `wait_until_set` is the nap of a loop such a
task runs, written so that the stop's cancel is never lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("holdgate.background")


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel `tasks` (once each) and return when all have ended; a task's own CancelledError is swallowed.

    A task that failed, then or before, has its exception raised here as `await task` would (several: an
    ExceptionGroup), so a caller that ignores failures says so with `suppress(Exception)`, which lets a
    CancelledError through. If the caller is cancelled while it waits, the tasks get no second cancel and are
    still waited for; the caller's CancelledError is raised once they have ended (their failures, which it
    hides, are logged).
    """
    for task in tasks:
        task.cancel()  # no-op on a task that has ended
    pending = {task for task in tasks if not task.done()}
    caller_cancel: asyncio.CancelledError | None = None
    while pending:
        try:
            _, pending = await asyncio.wait(pending)  # unlike `await task`, passes no cancel on to the tasks
        except asyncio.CancelledError as exc:
            caller_cancel = exc
    failures = [error for task in tasks if not task.cancelled() and (error := task.exception()) is not None]
    if caller_cancel is not None:
        for failure in failures:
            logger.error("a background task failed while it was stopped", exc_info=failure)
        raise caller_cancel
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise BaseExceptionGroup(f"{len(failures)} background tasks failed while they were stopped", failures)


async def wait_until_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set (True) or `seconds` have passed (False): a background loop's nap.

    Not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11, when the event is set in the same step as the
    loop's task is cancelled (a record queued, then the shutdown's `cancel_and_wait`), wait_for returns normally
    and the cancel is lost, so the loop went on for ever and its stop never ended. `asyncio.timeout` keeps it.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
