"""A 2025-11-25 MCP server that does tasks itself, on the wire, for what server-everything's one task tool does
not cover (an `optional` tool, a task that fails with a JSON-RPC error, one that ends with a tool error, one a
test ends when it likes). Nothing here is holdgate's: it stands for an upstream with its own task runtime.

The `mcp` SDK has task types but no task runtime, so this is the low-level `Server` with a middleware that answers
a task-augmented `tools/call` (past the SDK's check of a `CallToolResult`) and handlers for `tasks/get`,
`tasks/result`, `tasks/list` and `tasks/cancel` (`add_request_handler`). It declares
`tasks: {list, cancel, requests: {tools: {call}}}`.

Run: `python task_server.py stdio`. Tools:
- `gate(name)`, `taskSupport: "optional"`: its task ends `completed` ("opened NAME") once the file
  `$TASK_GATE_DIR/NAME` exists; called without a task it answers at once.
- `crash()`, `required`: its task ends `failed` with the JSON-RPC error 4200 "the peer crashed".
- `refuse()`, `optional`: its task ends `failed` with a tool error result (`isError: true`).
- `plain(text)`: no task support (`forbidden` by default).
Every run of a tool appends `{"tool": …, "task": bool}` to `$TASK_CALL_LOG`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from pydantic import BaseModel, ConfigDict, Field

TOOLS = [
    types.Tool(
        name="gate",
        input_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        execution=types.ToolExecution(task_support="optional"),
    ),
    types.Tool(name="crash", input_schema={"type": "object"}, execution=types.ToolExecution(task_support="required")),
    types.Tool(name="refuse", input_schema={"type": "object"}, execution=types.ToolExecution(task_support="optional")),
    types.Tool(name="plain", input_schema={"type": "object", "properties": {"text": {"type": "string"}}}),
]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_run(tool: str, task: bool) -> None:
    log = os.environ.get("TASK_CALL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"tool": tool, "task": task}) + "\n")


class PeerTask:
    def __init__(self, ttl: int | None) -> None:
        self.id = str(uuid.uuid4())
        self.status = "working"
        self.message: str | None = "started"
        self.created = self.updated = now()
        self.ttl = ttl
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.done = asyncio.Event()

    def shape(self) -> dict[str, Any]:
        task = {
            "taskId": self.id,
            "status": self.status,
            "createdAt": self.created,
            "lastUpdatedAt": self.updated,
            "ttl": self.ttl,
            "pollInterval": 100,
        }
        if self.message:
            task["statusMessage"] = self.message
        return task

    def end(self, status: str, message: str, *, result: dict | None = None, error: dict | None = None) -> None:
        if self.status in ("completed", "failed", "cancelled"):
            return  # terminal states never change
        self.status, self.message, self.updated = status, message, now()
        self.result, self.error = result, error
        self.done.set()


TASKS: dict[str, PeerTask] = {}


def text(value: str, *, error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": error}


async def run(task: PeerTask, tool: str, arguments: dict[str, Any]) -> None:
    log_run(tool, True)
    if tool == "gate":
        gate = Path(os.environ.get("TASK_GATE_DIR", ".")) / str(arguments.get("name"))
        while not gate.exists() and task.status == "working":
            await asyncio.sleep(0.02)
        task.end("completed", "opened", result=text(f"opened {arguments.get('name')}"))
    elif tool == "crash":
        task.end("failed", "the peer crashed", error={"code": 4200, "message": "the peer crashed"})
    elif tool == "refuse":
        task.end("failed", "refused", result=text("refused: not today", error=True))


async def tasked_call(ctx: ServerRequestContext, call_next: Any) -> Any:
    params = dict(ctx.params) if isinstance(ctx.params, Mapping) else {}
    if ctx.method != "tools/call" or "task" not in params:
        return await call_next(ctx)
    tool = params.get("name")
    if tool == "plain":
        raise MCPError(code=types.METHOD_NOT_FOUND, message="plain does not support tasks")
    ttl = (params.get("task") or {}).get("ttl")
    task = PeerTask(ttl if isinstance(ttl, int) else 60_000)
    TASKS[task.id] = task
    asyncio.get_running_loop().create_task(run(task, str(tool), params.get("arguments") or {}))
    return {"task": task.shape()}


async def list_tools(ctx: ServerRequestContext, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
    if params.name == "crash":
        raise MCPError(code=types.METHOD_NOT_FOUND, message="crash must be called as a task")
    log_run(params.name, False)
    name = (params.arguments or {}).get("name") or (params.arguments or {}).get("text")
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"{params.name} at once: {name}")])


class TaskId(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    task_id: str = Field(alias="taskId")


class Cursor(BaseModel):
    model_config = ConfigDict(extra="allow")
    cursor: str | None = None


def find(task_id: str) -> PeerTask:
    task = TASKS.get(task_id)
    if task is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"no task {task_id}")
    return task


async def tasks_get(ctx: ServerRequestContext, params: TaskId) -> dict[str, Any]:
    return find(params.task_id).shape()


async def tasks_result(ctx: ServerRequestContext, params: TaskId) -> dict[str, Any]:
    task = find(params.task_id)
    await task.done.wait()
    related = {"io.modelcontextprotocol/related-task": {"taskId": task.id}}
    if task.error is not None:
        raise MCPError(code=task.error["code"], message=task.error["message"], data={"_meta": related})
    if task.result is None:
        raise MCPError(code=types.INTERNAL_ERROR, message=f"task {task.id} was {task.status}")
    return {**task.result, "_meta": related}


async def tasks_list(ctx: ServerRequestContext, params: Cursor) -> dict[str, Any]:
    return {"tasks": [task.shape() for task in TASKS.values()]}


async def tasks_cancel(ctx: ServerRequestContext, params: TaskId) -> dict[str, Any]:
    task = find(params.task_id)
    if task.status in ("completed", "failed", "cancelled"):
        raise MCPError(code=types.INVALID_PARAMS, message=f"task {task.id} already ended ({task.status})")
    task.end("cancelled", "cancelled by the client")
    return task.shape()


class TaskPeer(Server[Any]):
    def get_capabilities(self, *args: Any, **kwargs: Any) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(*args, **kwargs)
        tasks = types.ServerTasksCapability(
            list=types.TasksListCapability(),
            cancel=types.TasksCancelCapability(),
            requests=types.ServerTasksRequestsCapability(
                tools=types.TasksToolsCapability(call=types.TasksCallCapability())
            ),
        )
        return capabilities.model_copy(update={"tasks": tasks})


server = TaskPeer("task-peer", on_list_tools=list_tools, on_call_tool=call_tool)
server.middleware.append(tasked_call)
server.add_request_handler("tasks/get", TaskId, tasks_get)
server.add_request_handler("tasks/result", TaskId, tasks_result)
server.add_request_handler("tasks/list", Cursor, tasks_list)
server.add_request_handler("tasks/cancel", TaskId, tasks_cancel)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    assert sys.argv[1:] == ["stdio"], "usage: task_server.py stdio"
    anyio.run(main)
