"""/api/decisions: list and read decisions, approve or deny one — or many at once — as a declared person.

Every route needs a person's token (declared in the policy's `people` with `token_sha256`); a vote
is accepted only from an approver of that decision. Refusals are problem details (service.api.problems) with
the reason in `detail`:
401 no/unknown token, 403 not an approver (or the call's own grant), 404 unknown decision,
409 already decided or already voted, 422 a deny without a reason, a standing approval (`{"scope": "tool",
"for": "30m"}` on approve) that the decision's rule does not allow (or longer than it allows), or an approval with
`arguments` that cannot be given (the rule is not editable, not a JSON object, or the edited call would not land on
this rule or on allow): nothing changes.

`POST /api/decisions/approve` and `/deny` vote on many decisions (named by id, or pending ones matched
by a filter) under the same rules; they answer 200 with a result per decision, where a refusal
carries the status code the single-decision route would have answered.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from service.api.deps import PersonDep, get_approvals, get_state, require_person
from service.api.params import Offset, UtcDateTime, refuse_nul
from service.api.problems import responses
from service.approvals import (
    STATUSES,
    ApprovalError,
    ApprovalService,
    DecisionQuery,
    StandingTerms,
    Voter,
    VoteValue,
)
from service.approvals.schemas import (
    MAX_BULK,
    ApproveRequest,
    BulkVoteRequest,
    BulkVoteResponse,
    DecisionPage,
    DecisionView,
    VoteRequest,
    VoteResponse,
)

router = APIRouter(
    prefix="/api/decisions", tags=["decisions"], dependencies=[Depends(refuse_nul), Depends(require_person)]
)


ServiceDep = Depends(get_approvals)
VOTE_ERRORS = responses(401, 403, 404, 409, 422)


@router.get("", response_model=DecisionPage, responses=responses(401, 422))
async def list_decisions(
    service: ApprovalService = ServiceDep,
    status: Literal[STATUSES] | None = None,  # type: ignore[valid-type]
    server: str | None = None,
    tool: str | None = None,
    grant: str | None = None,
    since: UtcDateTime | None = Query(None, description="created at or after (ISO 8601)"),
    until: UtcDateTime | None = Query(None, description="created before (ISO 8601)"),
    limit: int = Query(50, ge=1, le=500),
    offset: Offset = 0,
) -> DecisionPage:
    """Newest first."""
    query = DecisionQuery(
        status=status,
        server=server,
        tool=tool,
        grant=grant,
        since=since.timestamp() if since else None,
        until=until.timestamp() if until else None,
        limit=limit,
        offset=offset,
    )
    rows, total = await service.list(query)
    return DecisionPage(items=[DecisionView.of(row) for row in rows], total=total, limit=limit, offset=offset)


# The bulk routes come before `/{decision_id}…`, so `approve` is never read as a decision id.
@router.post("/approve", response_model=BulkVoteResponse, responses=responses(401, 422))
async def approve_many(
    person: PersonDep, body: BulkVoteRequest, service: ApprovalService = ServiceDep
) -> BulkVoteResponse:
    """Approve many decisions at once: `{"ids": [...]}` or a filter on pending ones (`server`, `tool`, `grant`)."""
    return await _vote_many(service, person, "approve", body)


@router.post("/deny", response_model=BulkVoteResponse, responses=responses(401, 422))
async def deny_many(
    person: PersonDep, body: BulkVoteRequest, service: ApprovalService = ServiceDep
) -> BulkVoteResponse:
    """Deny many decisions at once (a `reason` is required; every agent is told it)."""
    return await _vote_many(service, person, "deny", body)


@router.get("/{decision_id}", response_model=DecisionView, responses=responses(401, 404, 422))
async def get_decision(decision_id: str, service: ApprovalService = ServiceDep) -> DecisionView:
    try:
        decision, votes = await service.get(decision_id)
    except ApprovalError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    return DecisionView.of(decision, votes)


@router.post("/{decision_id}/approve", response_model=VoteResponse, responses=VOTE_ERRORS)
async def approve(
    decision_id: str,
    person: PersonDep,
    request: Request,
    body: ApproveRequest | None = None,
    service: ApprovalService = ServiceDep,
) -> VoteResponse:
    """Approve; with `arguments` (an editable rule), the call runs with them instead (422 when it may not); with
    `scope` and `for`, a standing approval (422 when the rule does not allow it). An edit is one-off."""
    try:
        standing = body.standing() if body else None
    except ApprovalError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    if body is None or not body.edits:
        return await _vote(service, decision_id, person, "approve", body.reason if body else None, standing)
    if standing is not None:
        raise HTTPException(
            status_code=422,
            detail="an approval with edited arguments is one-off: give `arguments` or a standing `scope`, not both",
        )
    try:
        outcome = await service.approve_edited(
            decision_id,
            Voter("person", person),
            body.arguments,
            policy=get_state(request).policy.current,
            via="api",
            reason=body.reason,
        )
    except ApprovalError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    decision, votes = await service.get(decision_id)
    return VoteResponse(decided=outcome.decided, message=outcome.message, decision=DecisionView.of(decision, votes))


@router.post("/{decision_id}/deny", response_model=VoteResponse, responses=VOTE_ERRORS)
async def deny(
    decision_id: str, person: PersonDep, body: VoteRequest, service: ApprovalService = ServiceDep
) -> VoteResponse:
    if body.scope is not None or body.for_ is not None:
        raise HTTPException(status_code=422, detail="a deny cannot be standing: scope and for go with an approval")
    return await _vote(service, decision_id, person, "deny", body.reason)


async def _vote(
    service: ApprovalService,
    decision_id: str,
    person: str,
    value: VoteValue,
    reason: str | None,
    standing: StandingTerms | None = None,
) -> VoteResponse:
    try:
        outcome = await service.vote(
            decision_id, Voter("person", person), value, via="api", reason=reason, standing=standing
        )
    except ApprovalError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    decision, votes = await service.get(decision_id)
    return VoteResponse(decided=outcome.decided, message=outcome.message, decision=DecisionView.of(decision, votes))


async def _vote_many(
    service: ApprovalService, person: str, value: VoteValue, body: BulkVoteRequest
) -> BulkVoteResponse:
    more_pending = False
    ids = body.ids
    if ids is None:
        query = DecisionQuery(server=body.server, tool=body.tool, grant=body.grant, limit=MAX_BULK + 1)
        ids = await service.pending_ids(query)
        more_pending, ids = len(ids) > MAX_BULK, ids[:MAX_BULK]
    try:
        results = await service.vote_many(ids, Voter("person", person), value, via="api", reason=body.reason)
    except ApprovalError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    return BulkVoteResponse.of(results, more_pending=more_pending)
