"""Tasks the upstream makes itself, passed through to the client under holdgate's own task ids.

A tool the policy lets run (not held) whose upstream declares 2025-11-25 task support for `tools/call` and lists
the tool with `taskSupport` `optional` or `required` keeps that support in holdgate's `tools/list`. A
task-augmented call to it (2025-11-25 `task`, or a 2026-07-28 request declaring the tasks extension) passes the
policy as any call does, then goes upstream with `task`; the upstream's task gets a row (`TaskStore.create_upstream`)
with a random holdgate id (`t_…`), bound to the grant and the server like a held call's task, naming the upstream's
id and the upstream connection it lives on (`origin`). The client only ever sees holdgate's id: another grant's id,
a forged id, or an upstream's own id are all "no task" (-32602), and an upstream task cannot be mistaken for a held
call's task (the row says which it is).

`tasks/get`, `tasks/result`, `tasks/cancel` (and the extension's `tasks/get|update|cancel`) go to the upstream with
its id; the answer comes back with holdgate's. Once the upstream says the task ended, its outcome (`tasks/result`)
is fetched once and kept in the row, so later reads are the row's (the task stays as it ended even if the upstream
forgets it; terminal states never change, as the pages say).

Tasks go through the server's shared upstream session (the tasks must outlive the client's session, and every
session of the grant may ask about them); they live on that connection of this process. A replica whose upstream
connection does not know the id says where the task lives (-32603); a connection of this process that closed lost
its tasks (-32602, as for an expired task).

The era translation (a 2026-07-28 client, a 2025-11-25 upstream): the flat task with `ttlMs`/`pollIntervalMs`;
the upstream's `failed` with a tool result (`isError`) is `completed` with that result (the extension keeps `failed`
for JSON-RPC errors); `input_required` shows as `working` (holdgate cannot relay the upstream's questions; the
upstream's elicitation on the shared session is answered "no client").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import ValidationError

from service.gateway.calls import ToolCall
from service.gateway.task_store import TERMINAL, NewTask, TaskStore
from service.gateway.tasks import ERA_2026, TaskRequest
from service.gateway.upstream import UpstreamClient, UpstreamUnavailable
from service.models import HeldTask

logger = logging.getLogger(__name__)

UPSTREAM_LIVE = ("working", "input_required")
"""The statuses a passed-through task's row may leave (the upstream's own live statuses)."""


class UpstreamTasks:
    """One server's passed-through tasks: made by its upstream, reached through its shared upstream session."""

    def __init__(
        self,
        store: TaskStore,
        *,
        upstream: Callable[[], Awaitable[UpstreamClient]],
        origins: set[str],
        max_ttl_s: float,
        poll_interval_ms: int,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.origins = origins
        """The ids of every upstream connection this process opened for the server (`UpstreamClient.connection_id`)."""
        self.max_ttl_s = max_ttl_s
        self.poll_interval_ms = poll_interval_ms

    async def create(
        self, upstream: UpstreamClient, call: ToolCall, request: TaskRequest
    ) -> tuple[HeldTask | None, dict[str, Any]]:
        """Send the call upstream as a task: the row and the upstream's task, or (None, the upstream's result) when
        the upstream answered the call at once."""
        answer = await upstream.call_tool_as_task(call.tool, call.forwarded_arguments, request.ttl_ms)
        if "task" not in answer:
            return None, answer
        task = _valid_task(answer.get("task"), "tools/call")
        ttl = task.get("ttl")
        cap = int(self.max_ttl_s * 1000)
        row = await self.store.create_upstream(
            NewTask(
                call=call,
                era=request.era,
                ttl_ms=min(ttl, cap) if isinstance(ttl, int) else cap,
                poll_interval_ms=task.get("pollInterval") or self.poll_interval_ms,
                status_message=task.get("statusMessage") or "",
            ),
            upstream_task_id=task["taskId"],
            origin=upstream.connection_id,
        )
        logger.info(
            "task %s: %s/%s for grant %s is the upstream's task (passed through)",
            row.id,
            call.server,
            call.tool,
            call.grant,
        )
        return row, task

    # -- reading --------------------------------------------------------------------------------

    async def current(self, row: HeldTask) -> tuple[HeldTask, dict[str, Any] | None]:
        """The row brought up to date, and the upstream's task as it says now (None: the row answers; it ended)."""
        if settled(row):
            return row, None
        upstream = await self.upstream()
        task = await self._ask(row, upstream, "tasks/get")
        if task["status"] in TERMINAL:
            return await self._ended(row, upstream, task), None
        if task["status"] != row.status or (task.get("statusMessage") or None) != (row.status_message or None):
            moved = await self.store.move(
                row.id, expected=UPSTREAM_LIVE, to=task["status"], status_message=task.get("statusMessage") or ""
            )
            row = moved or row
        return row, task

    async def result(self, row: HeldTask) -> HeldTask:
        """`tasks/result`: the ended row with the outcome kept (waits, upstream, while the task runs)."""
        if settled(row):
            return row
        upstream = await self.upstream()
        outcome, error = await self._outcome(row, upstream)
        task = await self._ask(row, upstream, "tasks/get")  # which status the outcome goes with (or: lost)
        if task["status"] not in TERMINAL:
            raise MCPError(
                code=INTERNAL_ERROR,
                message=f"tasks/result: the upstream answered before task {row.id} ended; call tasks/result again",
            )
        return await self._end(row, task, outcome=outcome, error=error)

    async def cancel(self, row: HeldTask) -> tuple[HeldTask, dict[str, Any] | None]:
        """`tasks/cancel`: the upstream cancels its task, and the row stays `cancelled`, whatever the upstream does
        next. A task that has already ended: -32602, nothing changed."""
        if row.status in TERMINAL:
            raise _ended_already(row)
        upstream = await self.upstream()
        try:
            task = _valid_task(
                await upstream.request_unchecked("tasks/cancel", {"taskId": row.upstream_task_id}), "tasks/cancel"
            )
        except UpstreamUnavailable:
            raise
        except MCPError as exc:
            if exc.error.code != INVALID_PARAMS:
                raise
            current, _task = await self.current(row)  # ended upstream first, or lost (that raises)
            raise _ended_already(current) from None
        moved = await self.store.move(
            row.id, expected=UPSTREAM_LIVE, to="cancelled", status_message=task.get("statusMessage") or "cancelled"
        )
        if moved is None:
            raise _ended_already(await self.store.reload(row))
        return moved, task

    # -- the upstream ---------------------------------------------------------------------------

    async def _ask(self, row: HeldTask, upstream: UpstreamClient, method: str) -> dict[str, Any]:
        try:
            answer = await upstream.request_unchecked(method, {"taskId": row.upstream_task_id})
        except UpstreamUnavailable:
            raise
        except MCPError as exc:
            if exc.error.code == INVALID_PARAMS:
                raise self._lost(row, method, upstream) from None
            raise
        return _valid_task(answer, method)

    def _lost(self, row: HeldTask, method: str, upstream: UpstreamClient) -> MCPError:
        if row.origin == upstream.connection_id or row.origin in self.origins:
            return MCPError(
                code=INVALID_PARAMS,
                message=f"{method}: the upstream no longer knows task {row.id} (its ttl passed, or the upstream "
                "connection it ran on closed)",
            )
        return MCPError(
            code=INTERNAL_ERROR,
            message=f"{method}: task {row.id} is the upstream's own task, made through another holdgate replica's "
            "upstream connection (or before a restart), which this replica cannot reach; ask the replica it was made "
            "on (tasks passed through from an upstream need replica affinity)",
        )

    async def _ended(self, row: HeldTask, upstream: UpstreamClient, task: dict[str, Any]) -> HeldTask:
        """The upstream says the task ended: fetch its outcome once (a cancelled task has none) and keep it."""
        outcome, error = (None, None) if task["status"] == "cancelled" else await self._outcome(row, upstream)
        return await self._end(row, task, outcome=outcome, error=error)

    async def _outcome(
        self, row: HeldTask, upstream: UpstreamClient
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The upstream's `tasks/result` for the task: (the result, None), or (None, the JSON-RPC error it answered
        with, which is the task's outcome too). The upstream unreachable raises."""
        try:
            return await upstream.request_unchecked("tasks/result", {"taskId": row.upstream_task_id}), None
        except UpstreamUnavailable:
            raise
        except MCPError as exc:
            return None, exc.error.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def _end(
        self, row: HeldTask, task: dict[str, Any], *, outcome: dict[str, Any] | None, error: dict[str, Any] | None
    ) -> HeldTask:
        status = task["status"]
        if outcome is not None:
            outcome = {k: v for k, v in outcome.items() if k != "_meta"} | _own_meta(outcome)
        if row.era == ERA_2026 and status == "failed" and error is None:
            status = "completed"  # the extension: a tool's error result completes the task; `failed` is JSON-RPC's
        moved = await self.store.move(
            row.id,
            expected=UPSTREAM_LIVE,
            to=status,
            status_message=task.get("statusMessage") or status,
            result=error if error is not None else outcome,
            result_is_error=error is not None,
        )
        return moved or await self.store.reload(row)


def settled(row: HeldTask) -> bool:
    """Whether the row answers for the task by itself: it ended, with its outcome kept (or cancelled)."""
    return row.status == "cancelled" or (row.status in TERMINAL and row.result is not None)


def live_2025(row: HeldTask, task: dict[str, Any]) -> dict[str, Any]:
    """A live upstream task as a 2025-11-25 `Task`, under holdgate's id."""
    shaped = {
        k: task[k] for k in ("status", "statusMessage", "createdAt", "lastUpdatedAt", "pollInterval") if k in task
    }
    return {"taskId": row.id, **shaped, "ttl": task.get("ttl")}


def live_2026(row: HeldTask, task: dict[str, Any]) -> dict[str, Any]:
    """A live upstream task as the extension's flat task, under holdgate's id (`input_required` shows `working`:
    holdgate has no `inputRequests` of the upstream's to give)."""
    shaped: dict[str, Any] = {
        "taskId": row.id,
        "status": "working" if task["status"] == "input_required" else task["status"],
        "createdAt": task["createdAt"],
        "lastUpdatedAt": task["lastUpdatedAt"],
        "ttlMs": task.get("ttl"),
    }
    if task.get("statusMessage"):
        shaped["statusMessage"] = task["statusMessage"]
    if task.get("pollInterval") is not None:
        shaped["pollIntervalMs"] = task["pollInterval"]
    return shaped


def _own_meta(outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome's `_meta` without the upstream's related-task key (it names the upstream's id)."""
    meta = {k: v for k, v in (outcome.get("_meta") or {}).items() if k != "io.modelcontextprotocol/related-task"}
    return {"_meta": meta} if meta else {}


def _valid_task(answer: Any, method: str) -> dict[str, Any]:
    """The upstream's task (2025-11-25 `Task` fields), checked: an answer that is not one is the upstream's fault."""
    try:
        types.Task.model_validate(answer, by_name=False)
    except ValidationError:
        raise MCPError(
            code=INTERNAL_ERROR, message=f"holdgate: the upstream answered {method} with something that is not a task"
        ) from None
    return dict(answer)


def _ended_already(row: HeldTask) -> MCPError:
    return MCPError(code=INVALID_PARAMS, message=f"tasks/cancel: task {row.id} has already ended ({row.status})")
