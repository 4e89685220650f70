"""The dashboard's standing approvals: the page that lists them with a Revoke button (`/standing`), and how the
decision page's "Approve for …" choice reads (`standing_choice`).

The same service calls as the REST API (`ApprovalService.standing_list`, `revoke_standing`); any signed-in
person may revoke (taking an approval back only makes the gateway stricter), with the form's CSRF token.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from service.api.deps import ApprovalsDep
from service.approvals import SCOPE_WORDS, ApprovalError, StandingQuery, StandingTerms, StandingView
from service.dashboard.auth import CsrfViewerDep, ViewerDep

router = APIRouter(include_in_schema=False)


def standing_choice(value: str) -> StandingTerms | None:
    """The decision page's choice: empty (approve once) or `<scope>|<seconds>`; StandingNotAllowed if malformed."""
    if not value:
        return None
    scope, _, seconds = value.partition("|")
    return StandingTerms.parse(scope, seconds or None)


@router.get("/standing")
async def standing_page(
    request: Request, viewer: ViewerDep, approvals: ApprovalsDep, msg: str | None = None, all: bool = False
) -> HTMLResponse:
    from service.dashboard.routes import _render

    rows = await approvals.standing_list(StandingQuery(active_only=not all, limit=500))
    now = approvals.clock()
    items = [StandingView.of(row, now) for row in rows]
    return _render(request, viewer, "standing.html", items=items, message=msg, show_all=all, words=SCOPE_WORDS)


@router.post("/standing/{standing_id}/revoke")
async def revoke(request: Request, standing_id: str, viewer: CsrfViewerDep, approvals: ApprovalsDep):
    form = await request.form()
    reason = str(form.get("reason") or "") or None
    try:
        revoked = await approvals.revoke_standing(standing_id, by=viewer.person or "", via="dashboard", reason=reason)
        message = f"standing approval {revoked.id} revoked: the next {revoked.tool} call of {revoked.grant} is held"
    except ApprovalError as exc:
        message = exc.message
    return RedirectResponse("/standing?" + urlencode({"msg": message}), status_code=303)
