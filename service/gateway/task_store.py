"""The task rows: every read and write of `HeldTask`, so any replica answers for any task.

A task's status moves `working → running → completed | failed`, or to `cancelled` from `working` or `running`,
each step a compare-and-set (`UPDATE … WHERE id = ? AND status IN …`): a driver that starts the approved call,
a `tasks/cancel` and a driver on another replica can race, and exactly one of them wins each step. The task's
status is the task's own; the decision behind it changes only through the approvals domain.

What it refuses: knowing MCP shapes (`service.gateway.task_wire` does) or deciding anything about the call
(`service.gateway.tasks` does).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from service.db import RETURNING_ROWS, session_scope
from service.gateway.calls import ToolCall
from service.models import HeldTask

WORKING = "working"
RUNNING = "running"
"""The approved call was claimed by a driver and is being sent; the client is told `working`."""
TERMINAL = ("completed", "failed", "cancelled")
LIVE = (WORKING, RUNNING)

LIST_PAGE = 100
"""Tasks per `tasks/list` page."""


def new_task_id() -> str:
    """Unguessable (the specification asks for cryptographically random ids), and not the decision id: two
    tasks of the same call share a decision, and a task id alone must not reveal the decision to anyone."""
    return "t_" + secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a task is made of: the call it is for, the revision it was asked in, and what its client is told."""

    call: ToolCall
    era: str
    ttl_ms: int | None
    poll_interval_ms: int
    status_message: str


class TaskStore:
    """The `tasks` table: create, read, list by grant, the status compare-and-sets, and the purge."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], float]) -> None:
        self.sessions = sessions
        self.clock = clock
        self.on_moved: Callable[[HeldTask], None] | None = None
        """Told of each status change this store made, once committed (`service.gateway.task_notify`)."""

    async def create(self, task_in: NewTask, *, decision_id: str) -> HeldTask:
        """A held call's task, waiting on its decision, with the call's arguments kept to run it once approved."""
        arguments = json.dumps(task_in.call.forwarded_arguments, ensure_ascii=False)
        return await self._add(task_in, status=WORKING, decision_id=decision_id, arguments=arguments)

    async def create_finished(self, task_in: NewTask, *, status: str, result: dict[str, Any]) -> HeldTask:
        """A task that ended as it was made (a call the policy answered at once: allowed, denied, rate-limited)."""
        return await self._add(task_in, status=status, result=json.dumps(result, ensure_ascii=False))

    async def create_upstream(self, task_in: NewTask, *, upstream_task_id: str, origin: str) -> HeldTask:
        """A task the upstream made (passed through): holdgate's own id for it, bound to the grant and the server,
        naming the upstream's id and the upstream connection it lives on. It starts `working` whatever the upstream
        said; the first read brings it up to date (`service.gateway.task_passthrough`)."""
        return await self._add(task_in, status=WORKING, upstream_task_id=upstream_task_id, origin=origin)

    async def _add(
        self,
        task_in: NewTask,
        *,
        status: str,
        decision_id: str = "",
        arguments: str | None = None,
        result: str | None = None,
        upstream_task_id: str | None = None,
        origin: str | None = None,
    ) -> HeldTask:
        """The one way a task row is made (the `create…` above say which kind): a new id, made and updated now."""
        now = self.clock()
        task = HeldTask(
            id=new_task_id(),
            decision_id=decision_id,
            era=task_in.era,
            grant=task_in.call.grant,
            server=task_in.call.server,
            tool=task_in.call.tool,
            arguments=arguments,
            status=status,
            status_message=task_in.status_message,
            result=result,
            created_at=now,
            updated_at=now,
            ttl_ms=task_in.ttl_ms,
            poll_interval_ms=task_in.poll_interval_ms,
            upstream_task_id=upstream_task_id,
            origin=origin,
        )
        async with session_scope(self.sessions) as session:
            session.add(task)
        return task

    async def get(self, task_id: str, *, grant: str) -> HeldTask | None:
        """The task, if it exists, belongs to `grant` and has not outlived its ttl (else None: one answer for
        all three, so a grant cannot learn that another grant's task exists)."""
        async with self.sessions() as session:
            task = await session.get(HeldTask, task_id, populate_existing=True)
        if task is None or task.grant != grant or self.outlived(task):
            return None
        return task

    async def load(self, task_id: str) -> HeldTask | None:
        """The task whoever it belongs to (for its driver)."""
        async with self.sessions() as session:
            return await session.get(HeldTask, task_id, populate_existing=True)

    async def reload(self, task: HeldTask) -> HeldTask:
        """The task as its row stands now (`task` itself if the row is gone): what a caller whose `move` found the
        task moved first answers with."""
        return await self.load(task.id) or task

    def outlived(self, task: HeldTask) -> bool:
        return task.ttl_ms is not None and self.clock() > task.created_at + task.ttl_ms / 1000

    async def page(self, *, grant: str, era: str, after: tuple[float, str] | None) -> list[HeldTask]:
        """One page of `grant`'s tasks of this era, newest first, after the cursor's (created_at, id)."""
        query = select(HeldTask).where(col(HeldTask.grant) == grant, col(HeldTask.era) == era)
        if after is not None:
            created, task_id = after
            query = query.where(
                or_(
                    col(HeldTask.created_at) < created,
                    (col(HeldTask.created_at) == created) & (col(HeldTask.id) < task_id),
                )
            )
        query = query.order_by(col(HeldTask.created_at).desc(), col(HeldTask.id).desc()).limit(LIST_PAGE + 1)
        async with self.sessions() as session:
            rows = list(await session.scalars(query))
        return [task for task in rows if not self.outlived(task)] if rows else rows

    async def live(self) -> list[HeldTask]:
        """Held calls' tasks not ended yet (their drivers, at start-up)."""
        async with self.sessions() as session:
            query = select(HeldTask).where(col(HeldTask.status).in_(LIVE), col(HeldTask.upstream_task_id).is_(None))
            return list(await session.scalars(query))

    async def move(
        self,
        task_id: str,
        *,
        expected: Sequence[str],
        to: str,
        status_message: str | None = None,
        result: dict[str, Any] | None = None,
        result_is_error: bool = False,
    ) -> HeldTask | None:
        """The one status change of a task: from one of `expected` to `to`, once; None if it was not there.

        An ending also drops the call's arguments (nothing needs them any more) and keeps the result."""
        values: dict[str, Any] = {"status": to, "updated_at": self.clock()}
        if status_message is not None:
            values["status_message"] = status_message
        if to in TERMINAL:
            values["arguments"] = None
            if result is not None:
                values["result"] = json.dumps(result, ensure_ascii=False)
                values["result_is_error"] = result_is_error
        async with session_scope(self.sessions) as session:
            moved = (
                await session.scalars(
                    update(HeldTask)
                    .where(col(HeldTask.id) == task_id, col(HeldTask.status).in_(expected))
                    .values(**values)
                    .returning(HeldTask),
                    execution_options=RETURNING_ROWS,
                )
            ).one_or_none()
        if moved is not None and self.on_moved is not None:
            self.on_moved(moved)
        return moved

    async def purge(self) -> int:
        """Delete ended tasks, and passed-through ones, past their ttl (the specification lets the receiver delete
        them then)."""
        now = self.clock()
        async with session_scope(self.sessions) as session:
            deleted = await session.scalars(
                delete(HeldTask)
                .where(
                    # a passed-through task past its ttl goes whatever it last said: the upstream may delete it then
                    or_(col(HeldTask.status).in_(TERMINAL), col(HeldTask.upstream_task_id).is_not(None)),
                    col(HeldTask.ttl_ms).is_not(None),
                    col(HeldTask.created_at) + col(HeldTask.ttl_ms) / 1000.0 < now,
                )
                .returning(col(HeldTask.id)),
                execution_options={"synchronize_session": False},
            )
            return len(list(deleted))


def task_arguments(task: HeldTask) -> dict[str, Any] | None:
    """The call's own arguments (None: the call sent none)."""
    if task.arguments is None:
        return None
    loaded = json.loads(task.arguments)
    return loaded if isinstance(loaded, dict) else None


def task_result(task: HeldTask) -> dict[str, Any] | None:
    return json.loads(task.result) if task.result is not None else None
