"""/api/standing: list standing approvals and revoke one, as a declared person.

`GET /api/standing` lists the active ones (`?all=true`: revoked and expired too; `?grant=` narrows), newest
first. `POST /api/standing/{id}/revoke` (body optional: `{"reason": "..."}`) ends one at once: the next call it
would have covered is held again, on every replica. Any declared person may revoke (taking an approval back only
ever makes the gateway stricter); 404 unknown id, 409 already revoked or expired.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query

from service.api.deps import PersonDep, get_approvals, require_person
from service.api.params import refuse_nul
from service.api.problems import responses
from service.approvals import (
    ApprovalError,
    ApprovalService,
    RevokeRequest,
    StandingPage,
    StandingQuery,
    StandingView,
)

router = APIRouter(
    prefix="/api/standing", tags=["standing approvals"], dependencies=[Depends(refuse_nul), Depends(require_person)]
)

ServiceDep = Depends(get_approvals)


@router.get("", response_model=StandingPage, responses=responses(401, 422))
async def list_standing(
    service: ApprovalService = ServiceDep,
    all: bool = Query(False, description="revoked and expired ones too"),
    grant: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=1000),
) -> StandingPage:
    """Active standing approvals (or all), newest first."""
    rows = await service.standing_list(StandingQuery(active_only=not all, grant=grant, limit=limit))
    now = service.clock()
    return StandingPage(items=[StandingView.of(row, now) for row in rows])


@router.get("/{standing_id}", response_model=StandingView, responses=responses(401, 404, 422))
async def get_standing(standing_id: str, service: ApprovalService = ServiceDep) -> StandingView:
    try:
        standing = await service.get_standing(standing_id)
    except ApprovalError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    return StandingView.of(standing, service.clock())


@router.post("/{standing_id}/revoke", response_model=StandingView, responses=responses(401, 404, 409, 422))
async def revoke_standing(
    standing_id: str, person: PersonDep, body: RevokeRequest | None = None, service: ApprovalService = ServiceDep
) -> StandingView:
    """End a standing approval now; the next call it covered is held again."""
    try:
        standing = await service.revoke_standing(
            standing_id, by=person, via="api", reason=body.reason if body else None
        )
    except ApprovalError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    return StandingView.of(standing, service.clock())
