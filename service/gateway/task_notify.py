"""`notifications/tasks/status` (2025-11-25): a task's new status, told to the session that made it, while it is
connected, best-effort.

The page makes the notification optional and tells requestors not to rely on it (they poll `tasks/get`), so this
is kept cheap and forgetful: a task made by a 2025-11-25 session is watched by that session's connection (a weak
reference: a closed session is not kept alive for it) in this process only; each status change the task store
makes here (`TaskStore.on_moved`) sends the full `Task` on the session's standalone stream, fire-and-forget; an
ending forgets the watch. A change made by another replica, a session that went away, or a send that fails: no
notification, nothing else. `running` is not a change the client sees (it is still `working`).

2026-07-28 `notifications/tasks` is not sent: it travels only on a `subscriptions/listen` stream asked for with
`taskIds`, and the SDK's listen handler (which holdgate does not serve) has no task events.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from service.gateway.task_store import RUNNING, TERMINAL, WORKING
from service.models import HeldTask

logger = logging.getLogger(__name__)

STATUS_METHOD = "notifications/tasks/status"
MAX_WATCHED = 10_000
"""Watches kept at most (a task past it is simply not notified)."""

TaskShape = Any  # Callable[[HeldTask], dict[str, Any]]: the 2025 Task of a row (task_wire's), given by the wiring


class TaskWatchers:
    """Which connection made which live 2025-11-25 task, and the sending of its status changes."""

    def __init__(self, shape: TaskShape) -> None:
        self.shape = shape
        self._watching: dict[str, weakref.ReferenceType[Any] | Any] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def watch(self, task_id: str, connection: Any) -> None:
        """The connection (`service.gateway.mcp_compat.session_connection`) that made `task_id` hears of it."""
        if connection is None or len(self._watching) >= MAX_WATCHED:
            return
        try:
            self._watching[task_id] = weakref.ref(connection)
        except TypeError:
            self._watching[task_id] = connection

    def moved(self, task: HeldTask) -> None:
        """A task's status changed here (called by the task store after the change is committed)."""
        if task.status == RUNNING or (task.status == WORKING and task.upstream_task_id is None):
            return  # a held call's task goes working → running → working only as its driver claims and gives back
        held = self._watching.get(task.id)
        if held is None:
            return
        if task.status in TERMINAL:
            del self._watching[task.id]
        connection = held() if isinstance(held, weakref.ReferenceType) else held
        if connection is None:
            self._watching.pop(task.id, None)
            return
        sending = asyncio.get_running_loop().create_task(self._send(connection, self.shape(task)))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _send(self, connection: Any, params: dict[str, Any]) -> None:
        try:
            await connection.notify(STATUS_METHOD, params)
        except Exception as exc:  # the session went away, its stream is closed: the client polls anyway
            logger.debug("task %s: status notification not sent: %s", params.get("taskId"), exc)

    @property
    def watched(self) -> int:
        return len(self._watching)
