"""`cancel_and_wait`: a stopped task has ended when it returns, and a cancel of the caller is never swallowed.

What the shutdowns rely on: the task is cancelled once and waited for (its clean-up is not cut short by a second
cancel), its own CancelledError stays inside, its failure comes out as `await task` would raise it, and a caller
cancelled while it waits still sees the task end, then gets its CancelledError (the old `suppress(CancelledError)`
around `await task` returned normally: a teardown that ignored its own cancel). Events, no sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from service.background import cancel_and_wait, wait_until_set


class Slow:
    """A task that takes its cancel as a request to stop: it cleans up until `release`, then returns (or, with
    `failing`, raises)."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.running = asyncio.Event()
        self.caught = asyncio.Event()
        self.release = asyncio.Event()
        self.cancels = 0
        self.cleaned_up = False

    async def run(self) -> str:
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancels += 1
            self.caught.set()
        await self.release.wait()  # a second cancel would land here and cut the clean-up short
        self.cleaned_up = True
        if self.failing:
            raise RuntimeError("clean-up failed")
        return "stopped"


async def reached(event: asyncio.Event) -> None:
    """Wait for `event`, bounded: a broken `cancel_and_wait` fails the test rather than hanging it."""
    async with asyncio.timeout(30):
        await event.wait()


@pytest.fixture
async def slow() -> AsyncIterator[Slow]:
    made = Slow()
    yield made
    made.release.set()  # a failed test leaves no task that would hold up the event loop's close


@pytest.fixture
async def failing() -> AsyncIterator[Slow]:
    made = Slow(failing=True)
    yield made
    made.release.set()


async def started(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task = asyncio.create_task(coro)
    await asyncio.sleep(0)  # let it reach its first await
    return task


async def test_a_task_that_ends_on_its_cancel_is_cancelled_and_ended():
    running = asyncio.Event()

    async def work() -> None:
        running.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await reached(running)
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_task_that_ignores_its_cancel_for_a_while_is_waited_for_and_not_cancelled_again(slow: Slow):
    task = asyncio.create_task(slow.run())
    await reached(slow.running)
    stopping = asyncio.create_task(cancel_and_wait(task))
    await reached(slow.caught)
    assert not stopping.done(), "cancel_and_wait returned before the task ended"
    slow.release.set()
    await stopping
    assert task.done() and task.result() == "stopped"
    assert (slow.cancels, slow.cleaned_up) == (1, True)


async def test_a_caller_cancelled_while_it_waits_sees_the_task_end_then_gets_its_cancel(slow: Slow):
    task = asyncio.create_task(slow.run())
    await reached(slow.running)
    seen: list[tuple[str, bool]] = []

    async def shutdown() -> None:
        try:
            await cancel_and_wait(task)
        except asyncio.CancelledError:
            seen.append(("cancelled", task.done()))
            raise
        seen.append(("carried on", task.done()))

    stopping = asyncio.create_task(shutdown())
    await reached(slow.caught)
    stopping.cancel()
    slow.release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert seen == [("cancelled", True)], "the caller's cancel was swallowed, or came before the task ended"
    assert stopping.cancelled()
    assert (slow.cancels, slow.cleaned_up, task.result()) == (1, True, "stopped"), "the task was cancelled twice"


async def test_a_caller_cancelled_under_a_timeout_scope_gets_its_timeout(slow: Slow):
    """asyncio.timeout turns the cancel it made into TimeoutError only if the CancelledError reaches it."""
    task = asyncio.create_task(slow.run())
    await reached(slow.running)

    async def shutdown() -> None:
        async with asyncio.timeout(None) as scope:
            stopping.append(scope)
            await cancel_and_wait(task)

    stopping: list[asyncio.Timeout] = []
    closing = asyncio.create_task(shutdown())
    await reached(slow.caught)
    stopping[0].reschedule(asyncio.get_running_loop().time())  # due now: the scope cancels the caller
    slow.release.set()
    with pytest.raises(TimeoutError):
        await closing
    assert task.result() == "stopped"


async def test_a_task_already_done_is_left_as_it_is():
    async def work() -> str:
        return "done"

    task = asyncio.create_task(work())
    await task
    await cancel_and_wait(task)
    assert task.result() == "done"


async def test_a_task_already_cancelled_is_fine():
    task = await started(asyncio.Event().wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_task_that_failed_has_its_failure_raised_as_await_would():
    async def broken() -> None:
        raise LookupError("before the stop")

    task = asyncio.create_task(broken())
    await asyncio.wait({task})
    with pytest.raises(LookupError, match="before the stop"):
        await cancel_and_wait(task)


async def test_a_task_that_fails_on_its_cancel_has_its_failure_raised():
    running = asyncio.Event()

    async def work() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("clean-up failed") from None

    task = asyncio.create_task(work())
    await reached(running)
    with pytest.raises(RuntimeError, match="clean-up failed"):
        await cancel_and_wait(task)


async def test_several_tasks_are_all_cancelled_and_their_failures_grouped(slow: Slow):
    quiet = await started(asyncio.Event().wait())

    async def fails(why: str) -> None:
        raise ValueError(why)

    first, second = asyncio.create_task(fails("one")), asyncio.create_task(fails("two"))
    await asyncio.wait({first, second})
    patient = asyncio.create_task(slow.run())
    await reached(slow.running)
    stopping = asyncio.create_task(cancel_and_wait(quiet, first, patient, second))
    await reached(slow.caught)
    assert not stopping.done()
    slow.release.set()
    with pytest.raises(ExceptionGroup) as raised:
        await stopping
    assert [str(exc) for exc in raised.value.exceptions] == ["one", "two"]
    assert quiet.cancelled() and patient.result() == "stopped"


async def test_a_failure_hidden_by_the_callers_cancel_is_logged(failing: Slow, caplog: pytest.LogCaptureFixture):
    task = asyncio.create_task(failing.run())
    await reached(failing.running)
    stopping = asyncio.create_task(cancel_and_wait(task))
    await reached(failing.caught)
    stopping.cancel()
    failing.release.set()
    with caplog.at_level(logging.ERROR, logger="holdgate.background"), pytest.raises(asyncio.CancelledError):
        await stopping
    [line] = [r for r in caplog.records if r.name == "holdgate.background"]
    assert line.exc_info is not None and str(line.exc_info[1]) == "clean-up failed"


async def test_a_loop_napping_in_wait_until_set_is_stopped_even_when_woken_in_the_same_step():
    """Python 3.11's wait_for, woken and cancelled in one step, returned normally: the loop went on for ever."""
    wake = asyncio.Event()
    turns: list[bool] = []

    async def loop() -> None:
        while True:
            turns.append(await wait_until_set(wake, 3600))
            wake.clear()

    task = await started(loop())  # napping

    async def wake_and_stop() -> None:
        wake.set()
        await cancel_and_wait(task)  # cancels it in the same step

    stopping = asyncio.create_task(wake_and_stop())
    await asyncio.wait({stopping}, timeout=30)  # a bound, not a measure: a lost cancel fails the test
    stopped = stopping.done()
    task.cancel()  # (only matters if the first cancel was lost) so the test ends
    await stopping
    assert stopped and task.cancelled() and turns == []


async def test_wait_until_set_says_whether_the_event_was_set():
    wake = asyncio.Event()
    assert await wait_until_set(wake, 0) is False
    wake.set()
    assert await wait_until_set(wake, 3600) is True
