"""What this process knows of every tool's definition, in memory, so a call's check costs a dict lookup.

`ToolDefinitions` is the one place the gateway asks "is this tool as a person accepted it?" (`change_of`, on
every `tools/call`, no I/O) and tells what an upstream presented (`observe`, on every `tools/list` holdgate sees:
the start-up probe's, each client's, the dashboard's). Only a listing that differs from what memory holds touches
the database; then the rows written are what memory holds next.

Across replicas (and the CLI, which writes the database directly) memory is re-read every `refresh_s` seconds:
one SELECT of the hashes, and the definitions of the tools that are not as accepted (for their diffs). An accept
made through this process's API updates memory at once; one made elsewhere is seen here within `refresh_s`. A
tool is held meanwhile, never let through early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.audit.service import AuditWriter
from service.background import cancel_and_wait
from service.models import ToolDefinition
from service.policy import ToolChangeNote
from service.tooldefs import store
from service.tooldefs.definitions import DIFF_LIMIT_CHARS, definition_of, definition_sha256, unified_diff

logger = logging.getLogger(__name__)

Key = tuple[str, str]


def note_of(row: ToolDefinition, *, limit: int = DIFF_LIMIT_CHARS) -> ToolChangeNote | None:
    """What a call to this tool's approvers are told (None: as accepted); the diff bounded to `limit`."""
    status = store.status_of(row)
    if status == "accepted":
        return None
    diff = unified_diff(
        store.definition_json(row.accepted_definition),
        store.definition_json(row.current_definition) or {},
        label=f"{row.server}/{row.tool}",
        accepted_sha256=row.accepted_sha256,
        current_sha256=row.current_sha256,
        limit=limit,
    )
    return ToolChangeNote(
        kind="new" if status == "new" else "changed",
        accepted_sha256=row.accepted_sha256,
        current_sha256=row.current_sha256,
        diff=diff,
    )


class ToolDefinitions:
    """The known definitions' hashes and the notes of the tools not as accepted; see the module docstring."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        audit: AuditWriter | None = None,
        clock: Callable[[], float] = time.time,
        refresh_s: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self.clock = clock
        self.refresh_s = refresh_s
        self.known_servers: set[str] = set()
        self._current: dict[Key, str] = {}
        """The hash each tool presents now, as last recorded."""
        self._pending: dict[Key, ToolChangeNote] = {}
        """The tools not as accepted (changed or new): what `change_of` answers."""
        self._unrecorded: dict[Key, ToolChangeNote] = {}
        """Tools whose changed listing the database did not take: held until a listing of their server is recorded."""
        self._lock = asyncio.Lock()
        """Serialises recording and re-reading, so a re-read never puts back what a recording just replaced."""

    # -- the call path ---------------------------------------------------------------------------

    def change_of(self, server: str, tool: str) -> ToolChangeNote | None:
        """How `tool` differs from its accepted definition, or None (as accepted, or never listed). No I/O."""
        key = (server, tool)
        return self._pending.get(key) or (self._unrecorded.get(key) if self._unrecorded else None)

    # -- what upstreams present ------------------------------------------------------------------

    async def observe(self, server: str, tools: Sequence[Mapping[str, Any]], *, complete: bool) -> None:
        """An upstream's `tools/list` result (each tool as JSON, wire names). `complete`: every page of it, so it may
        be the server's first sight. Writes only what differs from memory; never raises (a database that fails
        leaves changed tools held, and the next listing tries again)."""
        presented: dict[str, store.Presented] = {}
        for tool in tools:
            name = str(tool["name"])
            try:
                definition = definition_of(tool)
                presented[name] = store.Presented(definition, definition_sha256(definition))
            except (ValueError, RecursionError) as exc:  # nested past what JSON can spell: never as accepted
                logger.warning("tool definitions: %s/%s cannot be read (%s); its calls stay held", server, name, exc)
                self._unrecorded[(server, name)] = ToolChangeNote(
                    kind="changed", accepted_sha256=None, current_sha256="-", diff=f"(cannot be read: {exc})"
                )
        if server in self.known_servers and all(
            self._current.get((server, name)) == tool.sha256 for name, tool in presented.items()
        ):
            return
        async with self._lock:
            try:
                recorded = await self._record(server, presented, complete=complete)
            except Exception:
                logger.exception(
                    "tool definitions of %s could not be recorded; calls to changed tools stay held", server
                )
                self._hold_unrecorded(server, presented)
                return
        if recorded.first_sight:
            logger.info(
                "tool definitions: first sight of server %s, %d tool(s) recorded as accepted (trust on first use)",
                server,
                len(recorded.rows),
            )
        for row in recorded.changed:
            note = self._pending.get((row.server, row.tool))
            if note is None:
                continue
            logger.warning(
                "tool definitions: %s; calls follow on_tool_change until a person accepts it "
                "(holdgate tools diff %s %s)",
                note.describe(row.server, row.tool),
                row.server,
                row.tool,
            )

    async def _record(self, server: str, presented: dict[str, store.Presented], *, complete: bool) -> store.Recorded:
        for attempt in range(2):
            try:
                recorded = await store.record_listing(
                    self._sessions,
                    server,
                    presented,
                    now=self.clock(),
                    may_be_first=complete,
                    audit_key=await self._audit.args_digest.key() if self._audit is not None else None,
                )
            except IntegrityError:  # another replica inserted the same new tool first: read it and compare again
                if attempt:
                    raise
                continue
            if recorded.rows or recorded.first_sight:
                self.known_servers.add(server)
            for key in [key for key in self._unrecorded if key[0] == server and key[1] in presented]:
                del self._unrecorded[key]
            for row in recorded.rows:
                self._remember(row)
            return recorded
        raise AssertionError("unreachable")

    def _hold_unrecorded(self, server: str, presented: dict[str, store.Presented]) -> None:
        """The database did not take a listing: tools whose hash differs from the known one are held."""
        if server not in self.known_servers:
            return
        for name, tool in presented.items():
            known = self._current.get((server, name))
            if known == tool.sha256:
                continue
            self._unrecorded[(server, name)] = ToolChangeNote(
                kind="new" if known is None else "changed",
                accepted_sha256=None,
                current_sha256=tool.sha256,
                diff="(not recorded: the database did not answer; the definition is held until it is recorded)",
            )

    def _remember(self, row: ToolDefinition) -> None:
        key = (row.server, row.tool)
        self._current[key] = row.current_sha256
        note = note_of(row)
        if note is None:
            self._pending.pop(key, None)
        else:
            self._pending[key] = note

    def accepted(self, row: ToolDefinition) -> None:
        """A person accepted `row`'s definition through this process: calls go through from now on."""
        self._remember(row)

    # -- other replicas and the CLI --------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read the hashes (and the definitions of tools not as accepted) from the database."""
        async with self._lock, self._sessions() as session:
            servers, rows = await store.hashes(session)
            unsettled = [
                (server, tool)
                for server, tool, accepted, current in rows
                if accepted != current
                and not (
                    (note := self._pending.get((server, tool))) is not None
                    and note.current_sha256 == current
                    and note.accepted_sha256 == accepted
                )
            ]
            fetched: list[ToolDefinition] = []
            for start in range(0, len(unsettled), 500):
                chunk = unsettled[start : start + 500]
                fetched += await session.scalars(
                    select(ToolDefinition).where(tuple_(ToolDefinition.server, ToolDefinition.tool).in_(chunk))
                )
            current = {(server, tool): hash_ for server, tool, _, hash_ in rows}
            pending = {
                (server, tool): self._pending[(server, tool)]
                for server, tool, accepted, hash_ in rows
                if accepted != hash_ and (server, tool) in self._pending
            }
            for row in fetched:
                note = note_of(row)
                if note is None:
                    pending.pop((row.server, row.tool), None)
                else:
                    pending[(row.server, row.tool)] = note
            self.known_servers, self._current, self._pending = servers, current, pending

    @property
    def not_accepted(self) -> int:
        """How many tools this process holds calls to (changed, new, or not recorded): `/metrics`."""
        return len(self._pending.keys() | self._unrecorded.keys())

    async def start(self, stack: AsyncExitStack) -> None:
        """Load memory from the database, then keep re-reading it every `refresh_s` until `stack` closes."""
        await self.refresh()
        metrics.watch_tools_not_accepted(lambda: self.not_accepted)
        task = asyncio.create_task(self._refresh_loop(), name="tool-definitions-refresh")
        stack.push_async_callback(cancel_and_wait, task)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:
                logger.exception("tool definitions: re-reading the database failed; will retry")
