"""GET /api/audit: list and export the audit history (JSON, JSON Lines, CSV)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from service.api.deps import SessionDep, get_state, require_person
from service.api.params import Offset, UtcDateTime, refuse_nul
from service.api.problems import responses
from service.audit import service as audit_service

router = APIRouter(prefix="/api", tags=["audit"], dependencies=[Depends(refuse_nul), Depends(require_person)])


@router.get("/audit", responses=responses(401, 422))
async def audit(
    request: Request,
    session: SessionDep,
    grant: str | None = None,
    server: str | None = None,
    tool: str | None = None,
    verdict: str | None = None,
    since: UtcDateTime | None = None,
    until: UtcDateTime | None = None,
    shadow_disagrees: bool = False,
    format: Literal["json", "jsonl", "csv"] = "json",
    limit: int = Query(100, ge=1, le=1000),
    offset: Offset = 0,
):
    """Newest first as JSON (paginated); `jsonl` and `csv` stream the whole filtered history, oldest first.
    `shadow_disagrees=true`: only calls where the shadow policy's action differed from the enforced one."""
    flt = audit_service.AuditFilter(grant, server, tool, verdict, since, until, shadow_disagrees=shadow_disagrees)
    if format == "json":
        events = await audit_service.list_events(session, flt=flt, limit=limit, offset=offset)
        return {"items": [audit_service.event_dict(e) for e in events], "limit": limit, "offset": offset}
    sessions = get_state(request).sessions

    async def body() -> AsyncIterator[str]:
        if format == "csv":
            yield audit_service.csv_header()
        async with sessions() as export_session:
            async for event in audit_service.iter_events(export_session, flt=flt):
                yield audit_service.to_csv(event) if format == "csv" else audit_service.to_jsonl(event)

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    filename = f"holdgate-audit.{format}"
    return StreamingResponse(
        body(), media_type=media, headers={"content-disposition": f'attachment; filename="{filename}"'}
    )
