"""Shared FastAPI dependencies: typed access to the parts `service.app.build_state` built.

Every part exists before the server serves (the lifespan only starts them), so none of these can find
a part missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service.approvals import ApprovalService

if TYPE_CHECKING:
    from service.app import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.holdgate


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with get_state(request).sessions() as session:
        yield session


def get_approvals(request: Request) -> ApprovalService:
    return get_state(request).approvals.service


StateDep = Annotated["AppState", Depends(get_state)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
ApprovalsDep = Annotated[ApprovalService, Depends(get_approvals)]


PERSON_TOKEN = HTTPBearer(
    scheme_name="personToken",
    description="A person's API token: `Authorization: Bearer <token>`, declared in the policy's `people` by its "
    "sha256 (`token_sha256`). Agents' grant tokens are for /mcp and are refused here.",
    auto_error=False,
)
"""The REST API's security scheme, declared in the OpenAPI document for every route that needs a person."""


async def require_person(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(PERSON_TOKEN)] = None
) -> str:
    """The person (declared in the policy with a token) making this API request; 401 otherwise."""
    from fastapi import HTTPException

    from service.grants.service import token_sha256

    token = credentials.credentials if credentials is not None else ""
    if token.strip():
        person = get_state(request).policy.current.person_for_token_sha256(token_sha256(token.strip()))
        if person is not None:
            return person
    raise HTTPException(
        status_code=401,
        detail="a person's token is required (declare it in the policy's people with token_sha256)",
        headers={"WWW-Authenticate": 'Bearer realm="holdgate"'},
    )


PersonDep = Annotated[str, Depends(require_person)]
