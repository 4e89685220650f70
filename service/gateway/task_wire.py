"""Tasks on the wire, in both protocol revisions: the capability, the task-augmented `tools/call`, and the
`tasks/*` methods, as each revision's pages shape them. The tasks themselves are `service.gateway.tasks`'s.

2025-11-25 (the tasks utility): the server declares `tasks: {list, cancel, requests: {tools: {call}}}` at
`initialize`; a tool that may be held lists `execution.taskSupport: "optional"`; a `tools/call` with `task`
gets `{"task": Task}` at once (`TaskAugmentation`: the SDK checks a 2025-11-25 `tools/call` result against
`CallToolResult`, so this answer is given by a server middleware before that check); `tasks/get` returns the
Task, `tasks/result` blocks until the task ends and returns what the call would have returned (its
`CallToolResult`, or its JSON-RPC error) with `_meta["io.modelcontextprotocol/related-task"]`, `tasks/list`
pages the grant's tasks, `tasks/cancel` returns the Task, `cancelled`.

2026-07-28 (the `io.modelcontextprotocol/tasks` extension): advertised under `capabilities.extensions` in
`server/discover`; a `tools/call` from a request that declared the extension and is held gets the flat
`{"resultType": "task", …}`; `tasks/get` adds `result` (completed) or `error` (failed); `tasks/update`
acknowledges, and brings the answer when the `client` approval channel asks through the task (`input_required`
with `inputRequests` in `tasks/get`, `client_approval.TaskQuestions`); `tasks/cancel` acknowledges;
`tasks/result` and `tasks/list` do not exist there (-32601). Every `tasks/*` request must declare the
extension (-32021 otherwise).

Unknown task ids, other grants' tasks and tasks past their ttl get the same -32602: a grant learns nothing of
another grant's tasks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp import MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import HEADER_MISMATCH, INVALID_PARAMS, METHOD_NOT_FOUND, MISSING_REQUIRED_CLIENT_CAPABILITY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.approvals import iso
from service.gateway.downstream_http import stream_watch
from service.gateway.hold import waiting_message
from service.gateway.mcp_compat import session_initialized
from service.gateway.task_notify import TaskWatchers
from service.gateway.task_passthrough import UpstreamTasks, live_2025, live_2026
from service.gateway.task_store import LIST_PAGE, RUNNING, TaskStore, task_result
from service.gateway.tasks import ERA_2025, ERA_2026, HeldTasks, TaskEnded, TaskRequest
from service.models import Decision, HeldTask

if TYPE_CHECKING:
    from service.gateway.client_approval import TaskQuestions

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
RELATED_TASK_META_KEY = "io.modelcontextprotocol/related-task"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"

TaskCall = Callable[[ServerRequestContext, types.CallToolRequestParams, TaskRequest], Awaitable[dict[str, Any]]]
"""The proxy's `tools/call` asked for as a task: the answer's wire dict."""
GrantOf = Callable[[ServerRequestContext], str]


def is_modern(ctx: ServerRequestContext) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def declares_tasks_extension(ctx: ServerRequestContext) -> bool:
    """Whether this 2026-07-28 request declared the tasks extension in its own client capabilities."""
    params = ctx.params if isinstance(ctx.params, Mapping) else {}
    meta = params.get("_meta")
    capabilities = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, Mapping) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, Mapping) else None
    return isinstance(extensions, Mapping) and TASKS_EXTENSION in extensions


def task_request_2026(ctx: ServerRequestContext) -> TaskRequest | None:
    """The task a 2026-07-28 `tools/call` may be answered with (server-directed: no `task` parameter)."""
    return TaskRequest(era=ERA_2026) if is_modern(ctx) and declares_tasks_extension(ctx) else None


def server_capabilities(
    capabilities: types.ServerCapabilities, protocol_version: str | None
) -> types.ServerCapabilities:
    """The server's capabilities with tasks declared as the client's revision says."""
    if protocol_version in MODERN_PROTOCOL_VERSIONS:
        extensions = {**(capabilities.extensions or {}), TASKS_EXTENSION: {}}
        return capabilities.model_copy(update={"extensions": extensions})
    tasks = types.ServerTasksCapability(
        list=types.TasksListCapability(),
        cancel=types.TasksCancelCapability(),
        requests=types.ServerTasksRequestsCapability(
            tools=types.TasksToolsCapability(call=types.TasksCallCapability())
        ),
    )
    return capabilities.model_copy(update={"tasks": tasks})


def check_mcp_name(ctx: ServerRequestContext, task_id: str) -> None:
    """Over HTTP, the extension's `tasks/get|update|cancel` MUST carry `Mcp-Name: <taskId>` (the SDK checks the
    header only for `tools/call`, `prompts/get` and `resources/read`): a missing or different one is refused with
    the header-mismatch error (-32020, HTTP 400), before anything is looked up or changed."""
    request = ctx.request
    if request is None:
        return  # stdio: no headers
    raw = request.headers.getlist(MCP_NAME_HEADER)
    named = decode_header_value(raw[0]) if len(raw) == 1 else None  # a malformed encoding decodes to None
    if named != task_id:
        raise MCPError(
            code=HEADER_MISMATCH,
            message=f"{ctx.method}: the {MCP_NAME_HEADER} header must name the task the body names ('taskId')",
        )


# -- shapes -----------------------------------------------------------------------------------------


def client_status(task: HeldTask) -> str:
    """The status the client sees: a running call is still `working`."""
    return "working" if task.status == RUNNING else task.status


def status_message(task: HeldTask, decision: Decision | None) -> str | None:
    if task.status == "working" and decision is not None and decision.status == "pending":
        return waiting_message(decision)
    return task.status_message


def last_updated(task: HeldTask, decision: Decision | None) -> float:
    moments = [task.updated_at]
    if decision is not None and task.status == "working" and decision.decided_at is not None:
        moments.append(decision.decided_at)
    return max(moments)


def task_2025(task: HeldTask, decision: Decision | None) -> dict[str, Any]:
    """A 2025-11-25 `Task`."""
    shaped: dict[str, Any] = {
        "taskId": task.id,
        "status": client_status(task),
        "createdAt": iso(task.created_at),
        "lastUpdatedAt": iso(last_updated(task, decision)),
        "ttl": task.ttl_ms,
        "pollInterval": task.poll_interval_ms,
    }
    message = status_message(task, decision)
    if message:
        shaped["statusMessage"] = message
    return shaped


def task_2026(task: HeldTask, decision: Decision | None, *, with_outcome: bool) -> dict[str, Any]:
    """A task of the tasks extension (flat, `ttlMs`/`pollIntervalMs`); `with_outcome`: `tasks/get` adds the
    `result` of a completed task and the `error` of a failed one."""
    shaped: dict[str, Any] = {
        "taskId": task.id,
        "status": client_status(task),
        "createdAt": iso(task.created_at),
        "lastUpdatedAt": iso(last_updated(task, decision)),
        "ttlMs": task.ttl_ms,
        "pollIntervalMs": task.poll_interval_ms,
    }
    message = status_message(task, decision)
    if message:
        shaped["statusMessage"] = message
    if with_outcome and task.status in ("completed", "failed"):
        outcome = task_result(task)
        if task.result_is_error:
            shaped["error"] = outcome
        elif task.status == "completed":
            shaped["result"] = outcome
        else:  # a tool error result, failed (2025-11-25 rules): reported as the error it is
            shaped["error"] = {"code": -32603, "message": task.status_message or "the call failed"}
    return shaped


def created_2025(task: HeldTask, decision: Decision | None) -> dict[str, Any]:
    """The immediate answer to a task-augmented 2025-11-25 `tools/call`."""
    answer: dict[str, Any] = {"task": task_2025(task, decision)}
    message = status_message(task, decision)
    if message:
        answer["_meta"] = {"io.modelcontextprotocol/model-immediate-response": message}
    return answer


def created_2026(task: HeldTask, decision: Decision | None) -> dict[str, Any]:
    return {"resultType": "task", **task_2026(task, decision, with_outcome=False)}


def created(task: HeldTask, decision: Decision | None) -> dict[str, Any]:
    return created_2025(task, decision) if task.era == ERA_2025 else created_2026(task, decision)


def result_answer(ended: HeldTask) -> dict[str, Any]:
    """`tasks/result` of an ended task: what the call would have returned (its result, or its JSON-RPC error),
    with the related-task `_meta` the page requires."""
    outcome = task_result(ended) or {}
    related = {RELATED_TASK_META_KEY: {"taskId": ended.id}}
    if ended.status == "cancelled":
        raise MCPError(
            code=types.INTERNAL_ERROR,
            message=ended.status_message or "the task was cancelled",
            data={"_meta": related},
        )
    if ended.result_is_error:
        raise MCPError(
            code=int(outcome.get("code", types.INTERNAL_ERROR)),
            message=str(outcome.get("message", "the call failed")),
            data={"_meta": related},
        )
    outcome.pop("resultType", None)  # a 2026-era field of the shared upstream session's answer
    return {**outcome, "_meta": {**(outcome.get("_meta") or {}), **related}}


def watch_tasks(store: TaskStore) -> TaskWatchers:
    """`notifications/tasks/status` for the 2025-11-25 tasks made here, told of every change `store` makes."""
    watchers = TaskWatchers(lambda task: task_2025(task, None))
    store.on_moved = watchers.moved
    return watchers


# -- cursors ------------------------------------------------------------------------------------


def encode_cursor(task: HeldTask) -> str:
    raw = json.dumps([task.created_at, task.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, task_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(created, int | float) or not isinstance(task_id, str):
            raise ValueError
        return float(created), task_id
    except (ValueError, TypeError, UnicodeDecodeError, json.JSONDecodeError):
        raise MCPError(code=INVALID_PARAMS, message="tasks/list: the cursor is not one holdgate gave out") from None


# -- params -------------------------------------------------------------------------------------


class TaskIdParams(BaseModel):
    """`{taskId}` (and `_meta`), as every `tasks/*` method but `tasks/list` takes."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    task_id: str = Field(alias="taskId", min_length=1, max_length=200)
    meta: dict[str, Any] | None = Field(default=None, alias="_meta")


class ListParams(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    cursor: str | None = Field(default=None, max_length=1000)
    meta: dict[str, Any] | None = Field(default=None, alias="_meta")


class TaskAugmentation:
    """Server middleware: a 2025-11-25 `tools/call` with `task` is answered here with the task, past the SDK's
    check of a `CallToolResult` (the SDK has the task types but no task runtime). Everything else goes on."""

    def __init__(self, call_as_task: TaskCall) -> None:
        self.call_as_task = call_as_task

    async def __call__(self, ctx: ServerRequestContext, call_next: CallNext) -> HandlerResult:
        params = ctx.params
        if ctx.method != "tools/call" or is_modern(ctx) or not isinstance(params, Mapping) or "task" not in params:
            return await call_next(ctx)
        if not session_initialized(ctx.session):
            return await call_next(ctx)  # the SDK refuses it as it refuses any call before initialize
        try:
            typed = types.CallToolRequestParams.model_validate(params, by_name=False)
        except ValidationError:
            return await call_next(ctx)  # the SDK's own -32602 for malformed params
        ttl = typed.task.ttl if typed.task is not None else None
        if ttl is not None and (not isinstance(ttl, int) or ttl < 0):
            raise MCPError(code=INVALID_PARAMS, message="tools/call: task.ttl must be a number of milliseconds >= 0")
        return await self.call_as_task(ctx, typed, TaskRequest(era=ERA_2025, ttl_ms=ttl))


class TaskMethods:
    """The `tasks/*` handlers of one server (`register`), for both revisions."""

    def __init__(
        self,
        tasks: HeldTasks,
        grant_of: GrantOf,
        questions: TaskQuestions | None = None,
        *,
        server: str,
        upstream_tasks: UpstreamTasks | None = None,
    ) -> None:
        self.tasks = tasks
        self.grant_of = grant_of
        self.questions = questions
        """The client approval channel's question for a 2026-07-28 task (`client_approval.TaskQuestions`), or None."""
        self.server = server
        """The server these methods answer for: a task made through another server's endpoint is not one here."""
        self.upstream_tasks = upstream_tasks
        """The server's passed-through tasks (`service.gateway.task_passthrough`); None: it has none."""

    def register(self, server: Server[Any]) -> None:
        server.add_request_handler("tasks/get", TaskIdParams, self.get)
        server.add_request_handler("tasks/result", TaskIdParams, self.result)
        server.add_request_handler("tasks/list", ListParams, self.list)
        server.add_request_handler("tasks/cancel", TaskIdParams, self.cancel)
        server.add_request_handler("tasks/update", TaskIdParams, self.update)

    async def _task(self, ctx: ServerRequestContext, params: TaskIdParams) -> HeldTask:
        era = ERA_2026 if is_modern(ctx) else ERA_2025
        if era == ERA_2026:
            check_mcp_name(ctx, params.task_id)
        if era == ERA_2026 and not declares_tasks_extension(ctx):
            raise MCPError(
                code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                message=f"{ctx.method} needs the {TASKS_EXTENSION} extension in this request's client capabilities",
                data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
            )
        task = await self.tasks.store.get(params.task_id, grant=self.grant_of(ctx))
        if (
            task is None
            or task.era != era
            or task.server != self.server
            or (task.upstream_task_id is not None and self.upstream_tasks is None)
        ):
            raise MCPError(code=INVALID_PARAMS, message=f"{ctx.method}: no task {params.task_id!r} for this grant")
        return task

    def _passed(self) -> UpstreamTasks:
        assert self.upstream_tasks is not None  # `_task` lets no passed-through task by without it
        return self.upstream_tasks

    async def get(self, ctx: ServerRequestContext, params: TaskIdParams) -> dict[str, Any]:
        task = await self._task(ctx, params)
        if task.upstream_task_id is not None:
            return await self._get_passed(task)
        task, decision = await self.tasks.view(task)
        if task.era == ERA_2025:
            return task_2025(task, decision)
        shaped = {"resultType": "complete", **task_2026(task, decision, with_outcome=True)}
        if self.questions is not None and shaped["status"] == "working" and decision is not None:
            asking = await self.questions.asking(task.id, decision, ctx)
            if asking is not None:  # the person at the client is asked (the `client` channel): answered by tasks/update
                shaped |= {"status": "input_required", "inputRequests": asking}
        return shaped

    async def result(self, ctx: ServerRequestContext, params: TaskIdParams) -> dict[str, Any]:
        if is_modern(ctx):
            raise MCPError(
                code=METHOD_NOT_FOUND, message="tasks/result is not part of the tasks extension; use tasks/get"
            )
        task = await self._task(ctx, params)
        if task.upstream_task_id is not None:
            return result_answer(await self._passed().result(task))
        stream = stream_watch(ctx.request)
        ended = await self.tasks.until_ended(task, gone=lambda: stream is not None and stream.closed)
        if ended is None:
            raise MCPError(
                code=types.INTERNAL_ERROR,
                message=f"holdgate stopped waiting for task {task.id} (restarting, or the stream closed); it goes on: "
                "call tasks/result again",
            )
        return result_answer(ended)

    async def _get_passed(self, row: HeldTask) -> dict[str, Any]:
        row, live = await self._passed().current(row)
        if row.era == ERA_2025:
            return live_2025(row, live) if live is not None else task_2025(row, None)
        shaped = live_2026(row, live) if live is not None else task_2026(row, None, with_outcome=True)
        return {"resultType": "complete", **shaped}

    async def _listed_passed(self, row: HeldTask) -> dict[str, Any]:
        """A passed-through task in `tasks/list`: as the upstream says now, or as last seen when it cannot say."""
        try:
            return await self._get_passed(row)
        except MCPError:
            return task_2025(row, None)

    async def list(self, ctx: ServerRequestContext, params: ListParams) -> dict[str, Any]:
        if is_modern(ctx):
            raise MCPError(code=METHOD_NOT_FOUND, message="tasks/list is not part of the tasks extension")
        after = decode_cursor(params.cursor) if params.cursor is not None else None
        page = await self.tasks.store.page(grant=self.grant_of(ctx), era=ERA_2025, after=after)
        shown = page[:LIST_PAGE]
        answer: dict[str, Any] = {"tasks": []}
        for task in shown:
            if task.upstream_task_id is not None:
                answer["tasks"].append(await self._listed_passed(task))
                continue
            settled, decision = await self.tasks.view(task)
            answer["tasks"].append(task_2025(settled, decision))
        if len(page) > LIST_PAGE:
            answer["nextCursor"] = encode_cursor(shown[-1])
        return answer

    async def cancel(self, ctx: ServerRequestContext, params: TaskIdParams) -> dict[str, Any]:
        task = await self._task(ctx, params)
        if task.upstream_task_id is not None:
            cancelled, _task = await self._passed().cancel(task)
            return task_2025(cancelled, None) if cancelled.era == ERA_2025 else {"resultType": "complete"}
        try:
            cancelled = await self.tasks.cancel(task)
        except TaskEnded as exc:
            raise MCPError(
                code=INVALID_PARAMS, message=f"tasks/cancel: task {exc.task.id} has already ended ({exc.task.status})"
            ) from None
        if cancelled.era == ERA_2025:
            return task_2025(cancelled, None)
        return {"resultType": "complete"}

    async def update(self, ctx: ServerRequestContext, params: TaskIdParams) -> dict[str, Any]:
        if not is_modern(ctx):
            raise MCPError(code=METHOD_NOT_FOUND, message="tasks/update is part of the 2026-07-28 tasks extension")
        task = await self._task(ctx, params)
        if self.questions is not None:
            task, decision = await self.tasks.view(task)
            if task.status == "working" and decision is not None:
                responses = (params.model_extra or {}).get("inputResponses")
                await self.questions.answer(task.id, self.grant_of(ctx), decision, ctx, responses)
        return {"resultType": "complete"}  # other keys, and answers to nothing asked, are ignored


__all__ = [
    "TASKS_EXTENSION",
    "TaskAugmentation",
    "TaskMethods",
    "created",
    "server_capabilities",
    "task_request_2026",
]
