"""The `tool_definitions` and `tool_servers` tables: recording what upstreams present, and accepting it.

Every write is one transaction. Recording a listing inserts the server's first-sight row (`tool_servers`) with
`ON CONFLICT DO NOTHING` before anything else: the replica whose insert took the row records the listing as
accepted (trust on first use); a replica that arrives at the same time waits on that row's lock (PostgreSQL) or
the database lock (SQLite), finds the server known, and records only what differs. Accepting is a
compare-and-set on the definition's current hash (a definition that changed while a person reviewed it is
refused, nothing changes) and writes its audit record in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from service.audit import chain
from service.audit.service import AuditRecord
from service.db import session_scope
from service.models import ToolDefinition, ToolServer
from service.tooldefs.definitions import definition_text
from service.tooldefs.errors import NothingToAccept, StaleDefinition, UnknownTool

Status = Literal["accepted", "changed", "new"]

ACCEPTED_VERDICT = "definition_accepted"
"""The audit's verdict for a person accepting a tool's definition (`grant` is the person)."""
CHANGED_VERDICT = "definition_changed"
"""The audit's verdict for an upstream presenting a definition that differs from the accepted one (or a new tool)."""


def status_of(row: ToolDefinition) -> Status:
    if row.accepted_sha256 is None:
        return "new"
    return "accepted" if row.accepted_sha256 == row.current_sha256 else "changed"


@dataclass(frozen=True, slots=True)
class Presented:
    """One tool as an upstream presents it now: its pinned definition and that definition's hash."""

    definition: Mapping[str, Any]
    sha256: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a listing did: whether it was the server's first sight, and the rows that changed."""

    first_sight: bool
    changed: list[ToolDefinition]
    rows: list[ToolDefinition]
    """Every row of the server after the write."""


async def record_listing(
    sessions: async_sessionmaker[AsyncSession],
    server: str,
    presented: Mapping[str, Presented],
    *,
    now: float,
    may_be_first: bool,
    audit_key: bytes | None = None,
) -> Recorded:
    """Record the tools of `server` as listed; the first complete listing of a server is accepted as it is.

    `may_be_first`: the listing is complete (every page), so it may be taken as the server's first sight; a
    partial listing of a server never seen records nothing (`Recorded.first_sight` False, no rows). Each tool that
    now differs from its accepted definition gets an audit record (`definition_changed`) in the same transaction
    (with `audit_key`, the audit's arguments-digest key).
    """
    async with session_scope(sessions) as session:
        first = False
        if may_be_first:
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            taken = await session.execute(
                insert(ToolServer).values(server=server, first_seen_at=now).on_conflict_do_nothing()
            )
            first = taken.rowcount == 1  # type: ignore[attr-defined]
            known = True
        else:
            known = await session.get(ToolServer, server) is not None
        if not known:
            return Recorded(first_sight=False, changed=[], rows=[])
        existing = {
            row.tool: row
            for row in await session.scalars(select(ToolDefinition).where(col(ToolDefinition.server) == server))
        }
        changed: list[ToolDefinition] = []
        for name, tool in presented.items():
            row = existing.get(name)
            text = definition_text(tool.definition)
            if row is None:
                row = ToolDefinition(
                    server=server,
                    tool=name,
                    current_sha256=tool.sha256,
                    current_definition=text,
                    first_seen_at=now,
                    changed_at=now,
                )
                if first:
                    row.accepted_sha256, row.accepted_definition = tool.sha256, text
                    row.accepted_at, row.accepted_by, row.accepted_via = now, "first sight", "first_sight"
                session.add(row)
                existing[name] = row
                if not first:
                    changed.append(row)
            elif row.current_sha256 != tool.sha256:
                row.current_sha256, row.current_definition, row.changed_at = tool.sha256, text, now
                if row.accepted_sha256 != tool.sha256:
                    changed.append(row)
        await session.flush()
        if audit_key is not None and changed:
            records = [
                definition_audit_record(
                    server,
                    row.tool,
                    verdict=CHANGED_VERDICT,
                    who="upstream",
                    ts=now,
                    before=row.accepted_sha256,
                    after=row.current_sha256,
                    reason=(
                        f"tool '{row.tool}' is new on server '{server}'"
                        if row.accepted_sha256 is None
                        else f"the definition of tool '{row.tool}' on server '{server}' changed since it was accepted"
                    ),
                )
                for row in changed
            ]
            await chain.append(session, [record.to_row(audit_key) for record in records])
        rows = list(existing.values())
    return Recorded(first_sight=first, changed=changed, rows=rows)


async def hashes(session: AsyncSession) -> tuple[set[str], list[tuple[str, str, str | None, str]]]:
    """The known servers, and (server, tool, accepted_sha256, current_sha256) of every tool: what a replica keeps
    in memory (small: no definitions)."""
    servers = await known_servers(session)
    rows = await session.execute(
        select(
            col(ToolDefinition.server),
            col(ToolDefinition.tool),
            col(ToolDefinition.accepted_sha256),
            col(ToolDefinition.current_sha256),
        )
    )
    return servers, [(str(s), str(t), a, str(c)) for s, t, a, c in rows.all()]


async def get(session: AsyncSession, server: str, tool: str) -> ToolDefinition:
    row = await session.get(ToolDefinition, (server, tool))
    if row is None:
        raise UnknownTool(f"holdgate has no definition of tool '{tool}' on server '{server}' (never listed)")
    return row


async def listing(
    session: AsyncSession, *, server: str | None = None, tool: str | None = None, pending: bool = False
) -> list[ToolDefinition]:
    """Definitions by server and tool name; `pending`: only the changed and new ones."""
    query = select(ToolDefinition).order_by(col(ToolDefinition.server), col(ToolDefinition.tool))
    if server is not None:
        query = query.where(col(ToolDefinition.server) == server)
    if tool is not None:
        query = query.where(col(ToolDefinition.tool) == tool)
    if pending:
        query = query.where(
            (col(ToolDefinition.accepted_sha256).is_(None))
            | (col(ToolDefinition.accepted_sha256) != col(ToolDefinition.current_sha256))
        )
    return list(await session.scalars(query))


async def known_servers(session: AsyncSession) -> set[str]:
    return set(await session.scalars(select(col(ToolServer.server))))


async def accept(
    sessions: async_sessionmaker[AsyncSession],
    server: str,
    tool: str,
    *,
    by: str,
    via: str,
    now: float,
    audit_key: bytes,
    expected_sha256: str | None = None,
) -> tuple[ToolDefinition, str | None]:
    """Accept the definition `server`/`tool` presents now; returns the row and the hash accepted before (None: new).

    `expected_sha256`: the hash the person reviewed; refused (`StaleDefinition`, nothing changes) when the
    upstream presents another one now. A definition already accepted is `NothingToAccept`. The audit record (who,
    when, old and new hash) is written in the same transaction.
    """
    async with session_scope(sessions) as session:
        row = await get(session, server, tool)
        if expected_sha256 is not None and expected_sha256 != row.current_sha256:
            raise StaleDefinition(
                f"tool '{tool}' on server '{server}' now presents definition sha256 {row.current_sha256[:12]}, not "
                f"the {expected_sha256[:12]} reviewed; review the current diff and accept again"
            )
        if row.accepted_sha256 == row.current_sha256:
            raise NothingToAccept(
                f"the current definition of tool '{tool}' on server '{server}' (sha256 {row.current_sha256[:12]}) "
                f"is already accepted (by {row.accepted_by}); nothing to accept"
            )
        before = row.accepted_sha256
        accepted = await session.execute(
            update(ToolDefinition)
            .where(
                col(ToolDefinition.server) == server,
                col(ToolDefinition.tool) == tool,
                col(ToolDefinition.current_sha256) == row.current_sha256,
            )
            .values(
                accepted_sha256=row.current_sha256,
                accepted_definition=row.current_definition,
                accepted_at=now,
                accepted_by=by,
                accepted_via=via,
            )
        )
        if accepted.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleDefinition(f"the definition of tool '{tool}' on server '{server}' changed meanwhile; try again")
        record = definition_audit_record(
            server,
            tool,
            verdict=ACCEPTED_VERDICT,
            who=by,
            ts=now,
            before=before,
            after=row.current_sha256,
            reason=f"definition accepted by {by} via {via}",
        )
        await chain.append(session, [record.to_row(audit_key)])
        await session.refresh(row)
    return row, before


def definition_audit_record(
    server: str, tool: str, *, verdict: str, who: str, ts: float, before: str | None, after: str, reason: str
) -> AuditRecord:
    """An audit record about a tool's definition (not a call): `grant` is who acted (a person, or `upstream`)."""
    return AuditRecord(
        ts=ts,
        grant=who,
        server=server,
        tool=tool,
        arguments={"accepted_sha256_before": before, "sha256": after},
        redact=(),
        rule="tool definitions",
        verdict=verdict,
        reason=reason,
    )


def definition_json(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


def as_presented(definitions: Sequence[tuple[str, Mapping[str, Any], str]]) -> dict[str, Presented]:
    return {name: Presented(definition, sha256) for name, definition, sha256 in definitions}
