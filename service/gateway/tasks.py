"""Held calls as MCP tasks: a task-augmented `tools/call` that needs approval is answered at once with a task,
backed by the call's decision, and the call runs once when the decision approves it.

`HeldTasks` owns the life of such a task, in both protocol revisions (the wire shapes are
`service.gateway.task_wire`'s):

- `start`: the held call's decision (opened or joined as for any held call) gets a task row (`TaskStore`) and a
  driver in this process;
- a driver (`_drive`) waits on the decision like a held call does (`CallHolding.wait`): an approval it claims runs
  the call once through the server's `ReleasedCallRunner` (the proxy: the "sending" mark, the audit, the recorded
  outcome), and the task ends `completed` (or `failed`) with the upstream's result; a denial, a timeout or a
  cancel ends it with today's wording;
- `settle`: any replica, reading a task (`tasks/get`, `tasks/result`, `tasks/list`), brings it up to date with its
  decision and, when the task is still live and no driver here has it, starts one. That is how a task outlives its
  replica or a restart: the decision and the task are rows, the drivers are memory;
- `cancel`: `tasks/cancel` ends a pending decision `cancelled` (the one compare-and-set: racing an approval, one of
  them wins) and the task `cancelled`; an approved call not yet started never starts.

A task's call runs through the server's shared upstream session, never the client's own session: the task
outlives the request (and may be run by another replica than the one its client spoke to).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mcp import MCPError

from service.approvals import FINISHED, LAPSED, UNKNOWN, CallHolding
from service.audit.service import AuditRecord, AuditWriter
from service.background import cancel_and_wait, wait_until_set
from service.gateway.calls import ToolCall
from service.gateway.hold import ending_message, waiting_message
from service.gateway.task_store import LIVE, RUNNING, TERMINAL, WORKING, NewTask, TaskStore, task_arguments
from service.models import Decision, HeldTask
from service.policy.holder import PolicySource

logger = logging.getLogger(__name__)

ERA_2025 = "2025-11-25"
ERA_2026 = "2026-07-28"


class ReleasedCallRunner(Protocol):
    """Runs an approved call whose decision this process claimed (the server's proxy): marks it sending, sends
    it upstream, audits it and records its outcome on the decision. Returns the CallToolResult JSON, or raises
    `MCPError` (the upstream's error, or the upstream unreachable)."""

    async def run_released(self, call: ToolCall, record: AuditRecord) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A client's request for a task: the revision it speaks and the ttl it asked for (2025-11-25 only)."""

    era: str
    ttl_ms: int | None = None


class TaskEnded(Exception):
    """The task has already ended (cancelling it is refused, as the specification says)."""

    def __init__(self, task: HeldTask) -> None:
        super().__init__(f"task {task.id} has already ended ({task.status})")
        self.task = task


class HeldTasks:
    """Tasks backed by decisions: create, drive, settle, cancel, and wait for an ending."""

    def __init__(
        self,
        store: TaskStore,
        holding: CallHolding,
        *,
        policy: PolicySource,
        audit: AuditWriter,
        keep_s: float,
        max_ttl_s: float,
        poll_interval_ms: int,
        recheck_s: float = 5.0,
    ) -> None:
        self.store = store
        self.holding = holding
        self.policy = policy
        self.audit = audit
        self.keep_s = keep_s
        """How long an ended task stays readable after its decision's expiry (the ttl's floor)."""
        self.max_ttl_s = max_ttl_s
        self.poll_interval_ms = poll_interval_ms
        self.recheck_s = recheck_s
        """How often a waiting driver or `tasks/result` looks at the rows without being woken (another replica's
        changes to a task row reach no bus here)."""
        self.runners: dict[str, ReleasedCallRunner] = {}
        """The proxies by server name (set when the gateway starts them)."""
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._purger: asyncio.Task[None] | None = None
        self._changed: dict[str, asyncio.Event] = {}

    # -- making a task ----------------------------------------------------------------------------

    def ttl_ms(self, decision: Decision, requested: int | None) -> int:
        """At least until the decision's expiry plus `keep_s` (a task must not vanish while it may still end, nor
        right after), more if the client asked for more, at most `max_ttl_s`."""
        floor = (decision.expires_at - self.store.clock() + decision.claim_within_s + self.keep_s) * 1000
        wanted = max(floor, float(requested or 0))
        return int(min(wanted, self.max_ttl_s * 1000))

    async def start(self, call: ToolCall, decision: Decision, request: TaskRequest) -> HeldTask:
        """A task for this held call, waiting on `decision`; its driver starts here."""
        task = await self.store.create(
            NewTask(
                call=call,
                era=request.era,
                ttl_ms=self.ttl_ms(decision, request.ttl_ms),
                poll_interval_ms=self.poll_interval_ms,
                status_message=waiting_message(decision),
            ),
            decision_id=decision.id,
        )
        logger.info(
            "task %s: %s/%s for grant %s waits on decision %s", task.id, call.server, call.tool, call.grant, decision.id
        )
        self.drive(task)
        return task

    async def finished(self, call: ToolCall, request: TaskRequest, *, result: dict[str, Any], message: str) -> HeldTask:
        """A task that ended as it was made: a call to a tool that may be held, answered at once this time (the
        policy allowed, denied or rate-limited it)."""
        status = "failed" if result.get("isError") is True and request.era == ERA_2025 else "completed"
        ttl = int(min(max(self.keep_s * 1000, float(request.ttl_ms or 0)), self.max_ttl_s * 1000))
        return await self.store.create_finished(
            NewTask(
                call=call, era=request.era, ttl_ms=ttl, poll_interval_ms=self.poll_interval_ms, status_message=message
            ),
            status=status,
            result=result,
        )

    # -- drivers ----------------------------------------------------------------------------------

    def drive(self, task: HeldTask) -> None:
        """Make sure a driver in this process waits on this live task's decision."""
        if task.status not in LIVE or not task.decision_id or self.holding.closing:
            return
        running = self._drivers.get(task.id)
        if running is not None and not running.done():
            return
        driver = asyncio.get_running_loop().create_task(self._drive_logged(task.id), name=f"task:{task.id}")
        self._drivers[task.id] = driver
        driver.add_done_callback(self._driver_done)

    def _driver_done(self, driver: asyncio.Task[None]) -> None:
        task_id = driver.get_name().removeprefix("task:")
        if self._drivers.get(task_id) is driver:
            del self._drivers[task_id]

    async def resume(self) -> int:
        """At start-up: a driver for every live task (the replica or process that drove it may be gone)."""
        live = await self.store.live()
        for task in live:
            self.drive(task)
        return len(live)

    def start_purging(self, interval_s: float) -> None:
        """Delete tasks past their ttl every `interval_s` (stopped by `aclose`)."""
        self._purger = asyncio.get_running_loop().create_task(self._purge_every(interval_s), name="tasks-purge")

    async def _purge_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                purged = await self.store.purge()
            except Exception:
                logger.exception("tasks: the purge of tasks past their ttl failed; it runs again later")
                continue
            if purged:
                logger.info("tasks: %d task(s) past their ttl deleted", purged)

    async def aclose(self) -> None:
        """The service stops: drivers stop waiting (nothing is cancelled; a decision stays as it is)."""
        drivers = list(self._drivers.values())
        if self._purger is not None:
            drivers.append(self._purger)
        with contextlib.suppress(Exception):  # a driver logs its own failure, the purge its own
            await cancel_and_wait(*drivers)

    async def _drive_logged(self, task_id: str) -> None:
        try:
            await self._drive(task_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("task %s: its driver failed; the next read of the task starts another", task_id)
        finally:
            self._wake(task_id)

    async def _drive(self, task_id: str) -> None:
        task = await self.store.load(task_id)
        if task is None or task.status not in LIVE:
            return
        with self.holding.wait(task.decision_id) as wait:
            while True:
                ended = await wait.take()
                if ended is not None and ended.claimed:
                    await self._end_claimed(task, ended.decision)
                    return
                task = await self.settle(task, drive=False)
                if task.status not in LIVE or self.holding.closing:
                    return
                await wait.woken(self.recheck_s)
                current = await self.store.load(task_id)
                if current is None:
                    return
                task = current

    async def _end_claimed(self, task: HeldTask, decision: Decision) -> None:
        """This driver took the decision's ending: run the approved call once, or end the task as it ended."""
        if decision.status != "approved":
            await self._end(task, decision, ending_message(decision))
            return
        running = await self.store.move(task.id, expected=(WORKING,), to=RUNNING, status_message=running_text(decision))
        if running is None:  # cancelled meanwhile: the approval is not spent on nobody
            await self.holding.give_back(decision.id)
            return
        runner = self.runners.get(task.server)
        arguments = task_arguments(task)
        call = ToolCall(
            grant=task.grant,
            server=task.server,
            tool=task.tool,
            arguments=dict(arguments or {}),
            arguments_absent=arguments is None,
        )
        if runner is None:
            await self.holding.unsent(decision.id)
            await self._finish(
                running,
                error={"code": -32603, "message": f"holdgate: server '{task.server}' is not configured any more"},
            )
            return
        verdict = self.policy.current.evaluate(call.grant, call.server, call.tool, call.arguments, now=time.time())
        record = AuditRecord(
            ts=self.store.clock(),
            grant=call.grant,
            server=call.server,
            tool=call.tool,
            arguments=call.arguments,
            redact=verdict.redact,
            rule=decision.rule,
            decision_id=decision.id,
        )
        try:
            result = await runner.run_released(call, record)
        except MCPError as exc:
            await self._finish(running, error=exc.error.model_dump(by_alias=True, mode="json", exclude_none=True))
            return
        await self._finish(running, result=result)

    async def _finish(
        self, task: HeldTask, *, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None
    ) -> HeldTask | None:
        """The run's answer ends the task: a tool result `completed` (2025-11-25: `failed` when it is an error
        result, as that revision says), a JSON-RPC error `failed`."""
        if error is not None:
            moved = await self.store.move(
                task.id,
                expected=LIVE,
                to="failed",
                status_message=str(error.get("message", "")),
                result=error,
                result_is_error=True,
            )
        else:
            assert result is not None
            failed = result.get("isError") is True and task.era == ERA_2025
            moved = await self.store.move(
                task.id,
                expected=LIVE,
                to="failed" if failed else "completed",
                status_message=_result_summary(result),
                result=result,
            )
        self._wake(task.id)
        return moved

    async def _end(self, task: HeldTask, decision: Decision, message: str) -> HeldTask:
        """The call will not run: the task ends with the tool error today's held call gets (`message`)."""
        result = {"content": [{"type": "text", "text": message}], "isError": True}
        failed = "failed" if task.era == ERA_2025 else "completed"  # 2026: an error *result* completes the task
        moved = await self.store.move(task.id, expected=(WORKING,), to=failed, status_message=message, result=result)
        self._wake(task.id)
        if moved is None:
            return await self.store.reload(task)
        self.audit.record(
            self._record(moved, decision).finish(
                decision.status if decision.status != "approved" else "approved",
                reason=message,
                started=time.perf_counter(),
            )
        )
        return moved

    def _record(self, task: HeldTask, decision: Decision) -> AuditRecord:
        return AuditRecord(
            ts=task.created_at,
            grant=task.grant,
            server=task.server,
            tool=task.tool,
            arguments=json.loads(decision.arguments) if decision.arguments else {},
            redact=(),
            rule=decision.rule,
            decision_id=decision.id,
            args_sha256=decision.args_sha256,
        )

    # -- reading ----------------------------------------------------------------------------------

    async def settle(self, task: HeldTask, *, drive: bool = True) -> HeldTask:
        """The task brought up to date with its decision (any replica, on any read): an ended decision nobody is
        left to report ends the task; a live task gets a driver here (`drive`)."""
        if task.status in TERMINAL or not task.decision_id:
            return task
        settled, _decision = await self._settle(task, await self.holding.load(task.decision_id), drive=drive)
        return settled

    async def _settle(self, task: HeldTask, decision: Decision, *, drive: bool) -> tuple[HeldTask, Decision]:
        now = self.store.clock()
        if task.status == WORKING:
            if decision.status in ("denied", "expired", "cancelled"):
                return await self._end(task, decision, ending_message(decision)), decision
            if decision.status == "approved" and decision.claimed_at is not None:
                if decision.outcome == LAPSED:
                    return await self._end(task, decision, lapsed_message(decision)), decision
                if (
                    decision.outcome is not None
                    and decision.outcome_at is not None
                    and (now - decision.outcome_at > self.holding.service.lease_s)
                ):
                    # The one release went to another call of the same tool and arguments, long enough ago.
                    return await self._end(task, decision, released_elsewhere_message(decision)), decision
        elif task.status == RUNNING:
            if decision.outcome == UNKNOWN:
                return await self._end_running(task, decision), decision
            if decision.outcome is None and decision.claimed_at is None:
                # Its driver's process stopped before sending; the claim was given back: run it again from here.
                moved = await self.store.move(task.id, expected=(RUNNING,), to=WORKING)
                task = moved or task
            elif (
                decision.outcome is not None
                and decision.outcome_at is not None
                and now - decision.outcome_at > self.holding.service.lease_s
            ):
                return await self._end_running(task, decision), decision
        if drive:
            self.drive(task)
        return task, decision

    async def _end_running(self, task: HeldTask, decision: Decision) -> HeldTask:
        """A running task whose driver stopped without ending it: the decision's record says how the call went."""
        if decision.outcome in FINISHED and decision.result is not None:
            moved = await self._finish(task, result=json.loads(decision.result))
        else:
            message = may_have_run_text(decision)
            moved = await self.store.move(
                task.id,
                expected=(RUNNING,),
                to="failed",
                status_message=message,
                result={"code": -32603, "message": message},
                result_is_error=True,
            )
            self._wake(task.id)
        return moved or await self.store.reload(task)

    async def view(self, task: HeldTask) -> tuple[HeldTask, Decision | None]:
        """The task settled, and its decision (None for a task that ended as it was made): two reads."""
        if not task.decision_id:
            return task, None
        return await self._settle(task, await self.holding.load(task.decision_id), drive=True)

    async def until_ended(self, task: HeldTask, *, gone: Callable[[], bool]) -> HeldTask | None:
        """Wait for the task to end (`tasks/result`); None when the service stops or the client went away first."""
        while True:
            task = await self.settle(task)
            if task.status in TERMINAL:
                return task
            if self.holding.closing or gone():
                return None
            event = self._changed.setdefault(task.id, asyncio.Event())
            await wait_until_set(event, min(self.recheck_s, 1.0))
            current = await self.store.load(task.id)
            if current is None:
                return None
            task = current

    def _wake(self, task_id: str) -> None:
        event = self._changed.pop(task_id, None)
        if event is not None:
            event.set()

    # -- cancelling -------------------------------------------------------------------------------

    async def cancel(self, task: HeldTask) -> HeldTask:
        """`tasks/cancel`: the task ends `cancelled` (a compare-and-set: it may have ended first, then `TaskEnded`),
        then its pending decision ends `cancelled` through the one compare-and-set of decisions. An approval racing
        it either loses (the decision is cancelled) or wins; then the driver finds the task cancelled before it
        starts the call, and gives the approval back unspent. A call already running is not stopped: the task stays
        `cancelled`, as the specification says, and the decision records how the call went."""
        if task.status in TERMINAL:
            raise TaskEnded(task)
        reason = f"the agent cancelled task {task.id}"
        moved = await self.store.move(task.id, expected=LIVE, to="cancelled", status_message=f"holdgate: {reason}")
        self._wake(task.id)
        if moved is None:
            raise TaskEnded(await self.store.reload(task))
        if moved.decision_id:
            decision = await self.holding.cancel(moved.decision_id, by=moved.grant, reason=reason)
            if decision is not None:
                self.audit.record(
                    self._record(moved, decision).finish("cancelled", reason=reason, started=time.perf_counter())
                )
        return moved


def running_text(decision: Decision) -> str:
    return f"approved by {decision.decided_by} (decision {decision.id}); the call is running"


def lapsed_message(decision: Decision) -> str:
    return (
        f"holdgate: the approval of decision {decision.id} for {decision.server}/{decision.tool} was not collected "
        "in time and lapsed; the call was not run."
    )


def released_elsewhere_message(decision: Decision) -> str:
    return (
        f"holdgate: decision {decision.id} was approved, but its one release went to another identical call of "
        f"{decision.tool}; this task's call was not run. Call again to ask for a new approval."
    )


def may_have_run_text(decision: Decision) -> str:
    how = "its outcome is unknown" if decision.outcome == UNKNOWN else f"it ended {decision.outcome}"
    return (
        f"holdgate: the approved call of decision {decision.id} ({decision.server}/{decision.tool}) was sent "
        f"upstream and {how} (the gateway process running it stopped); it may have run, and it was not run again."
    )


def _result_summary(result: dict[str, Any]) -> str:
    return "the call ran; its result is ready" if result.get("isError") is not True else "the call ran and failed"
