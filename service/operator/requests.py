"""What the local operator's commands ask, and how each is carried out on the approvals service.

One implementation for both ways a command is carried out (service/operator/__init__.py): the CLI on the
database it opens, or the running service for the CLI on its operator socket. A request and its answer are
JSON, so they cross the socket unchanged; the answers have the REST API's shapes (`DecisionView`,
`BulkVoteResponse`), so the CLI prints them with the code that prints the `--url` answers.

Answers: `{"items", "total"}` for a list; `{"message"}` for one vote; a `BulkVoteResponse` for several;
`{"refusal": why}` when holdgate refused the vote (nothing changed; the command exits 1), `{"usage": why}` when
the request itself is malformed (a bad standing duration; exit 2).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from service.approvals import (
    LOCAL_OPERATOR,
    ApprovalError,
    ApprovalService,
    DecisionQuery,
    DecisionView,
    StandingTerms,
    Voter,
)
from service.approvals.schemas import BulkVoteResponse

OPERATOR = Voter("operator", LOCAL_OPERATOR)
"""Who votes: whoever can reach the database (or the service's socket, as the service's own user) operates it."""


class ListDecisions(BaseModel):
    """`holdgate decisions list`: newest first."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["list"]
    status: str | None = None
    server: str | None = None
    tool: str | None = None
    grant: str | None = None
    limit: int = Field(default=50, ge=1, le=sys.maxsize)


class CastVotes(BaseModel):
    """`holdgate approve|deny`: the named decisions, or (no ids) every pending one matching the filters.

    One id keeps the single-decision answer (its message, or the refusal); several, or a filter, the bulk one.
    `scope` and `for_` ask for a standing approval (`--scope`, `--for`), parsed here so both ways refuse alike.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    op: Literal["vote"]
    value: Literal["approve", "deny"]
    ids: list[str] = Field(default_factory=list)
    server: str | None = None
    tool: str | None = None
    grant: str | None = None
    reason: str | None = None
    scope: str | None = None
    for_: str | None = Field(default=None, alias="for")


OperatorRequest = Annotated[ListDecisions | CastVotes, Field(discriminator="op")]
REQUEST: TypeAdapter[ListDecisions | CastVotes] = TypeAdapter(OperatorRequest)
"""Validates a request that crossed the socket (`REQUEST.validate_python(obj)`)."""


async def perform(service: ApprovalService, request: ListDecisions | CastVotes) -> dict[str, Any]:
    """Carry out `request` as the local operator; its JSON answer (the module's docstring lists them)."""
    if isinstance(request, ListDecisions):
        query = DecisionQuery(
            status=request.status, server=request.server, tool=request.tool, grant=request.grant, limit=request.limit
        )
        rows, total = await service.list(query)
        return {"items": [DecisionView.of(row).model_dump(mode="json") for row in rows], "total": total}
    try:
        standing = StandingTerms.parse(request.scope, request.for_) if request.scope is not None else None
    except ApprovalError as exc:
        return {"usage": exc.message}
    try:
        if len(request.ids) == 1:
            outcome = await service.vote(
                request.ids[0], OPERATOR, request.value, via="cli", reason=request.reason, standing=standing
            )
            return {"message": outcome.message}
        targets = request.ids or await service.pending_ids(
            DecisionQuery(server=request.server, tool=request.tool, grant=request.grant, limit=sys.maxsize)
        )
        results = await service.vote_many(
            targets, OPERATOR, request.value, via="cli", reason=request.reason, standing=standing
        )
    except ApprovalError as exc:
        return {"refusal": exc.message}
    return BulkVoteResponse.of(results).model_dump(mode="json")
