"""/api/tools: the upstream tools' pinned definitions; read them, see what changed, accept a new definition.

Every route needs a person's token (as `/api/decisions`). Accepting is any declared person's to do: the tool's
calls go back to what its rule says. Send the `sha256` you reviewed (`GET` gives it): a definition that changed
again since is refused (409) and nothing changes. Refusals: 401 no/unknown token, 404 a tool holdgate never saw
listed, 409 nothing to accept (already accepted) or a stale hash, 422 a malformed hash.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Body, Depends, HTTPException

from service.api.deps import PersonDep, SessionDep, StateDep, require_person
from service.api.params import refuse_nul
from service.api.problems import responses
from service.tooldefs import (
    AcceptedView,
    AcceptIn,
    ToolDefinitionError,
    ToolDefinitionView,
    accept,
    get,
    listing,
)

router = APIRouter(prefix="/api/tools", tags=["tools"], dependencies=[Depends(refuse_nul), Depends(require_person)])


@router.get("", response_model=list[ToolDefinitionView], responses=responses(401, 422))
async def list_tools(
    session: SessionDep,
    server: str | None = None,
    status: Literal["accepted", "changed", "new", "pending"] | None = None,
) -> list[ToolDefinitionView]:
    """Every recorded tool, by server and name; `status=pending`: the changed and new ones."""
    rows = await listing(session, server=server, pending=status == "pending")
    views = [ToolDefinitionView.of(row) for row in rows]
    if status in ("accepted", "changed", "new"):
        views = [view for view in views if view.status == status]
    return views


@router.get("/{server}/{tool:path}", response_model=ToolDefinitionView, responses=responses(401, 404, 422))
async def read_tool(server: str, tool: str, session: SessionDep) -> ToolDefinitionView:
    """One tool with both definitions and the whole diff (accepted to current)."""
    try:
        row = await get(session, server, tool)
    except ToolDefinitionError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    return ToolDefinitionView.of(row, details=True)


@router.post("/{server}/{tool:path}/accept", response_model=AcceptedView, responses=responses(401, 404, 409, 422))
async def accept_tool(
    server: str, tool: str, state: StateDep, person: PersonDep, body: AcceptIn | None = Body(None)
) -> AcceptedView:
    """Accept the definition the tool presents now (audited: who, when, the old and the new hash)."""
    definitions = state.tool_definitions
    try:
        row, before = await accept(
            state.sessions,
            server,
            tool,
            by=person,
            via="api",
            now=definitions.clock(),
            audit_key=await state.audit.args_digest.key(),
            expected_sha256=body.sha256 if body is not None else None,
        )
    except ToolDefinitionError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    definitions.accepted(row)
    return AcceptedView(
        message=f"accepted the definition of {server}/{tool} (sha256 {row.current_sha256[:12]}) as {person}",
        previous_sha256=before,
        definition=ToolDefinitionView.of(row),
    )
