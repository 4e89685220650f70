"""`/email/decide/{token}`: the confirmation page (GET) and the decision (POST) behind email links.

GET never changes anything — mail security scanners and link previews fetch every link in a
message before the person does — it shows what is asked, by whom, until when, and a form. Only
that form's POST votes, and only when:

- the link token verifies (signed by this gateway, not expired: see `bots.email.links`);
- the request is not cross-site: an `Origin` header, when sent, must be `HOLDGATE_PUBLIC_URL`'s
  origin, and `Sec-Fetch-Site`, when sent, must be `same-origin` (or `none`);
- the form's anti-forgery field was made for this very link token.

The vote itself goes through `ApprovalService.vote` as `Voter("email", address)`, which refuses
non-approvers, second votes and decisions that already ended — so a replayed POST shows the outcome
and changes nothing. Every page is `Cache-Control: no-store`, `Referrer-Policy: no-referrer`, and
may not be framed.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from bots.email.links import BadLink, ExpiredLink, LinkClaim, LinkSigner
from bots.email.messages import TEMPLATES, arguments_text, ending
from service.approvals import (
    AlreadyDecided,
    AlreadyVoted,
    ApprovalError,
    ApprovalService,
    DecisionView,
    NotAllowed,
    ReasonRequired,
    StandingTerms,
    UnknownDecision,
    Voter,
)
from service.models import Vote
from service.policy.verdict import format_seconds

logger = logging.getLogger(__name__)

router = APIRouter(tags=["email"])

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
SAFE_FETCH_SITES = {"same-origin", "none"}


@router.get("/email/decide/{token}", response_class=HTMLResponse, include_in_schema=False)
async def confirm(token: str, request: Request) -> HTMLResponse:
    """The confirmation page: what the link would do, and the form that does it. Changes nothing."""
    email = _Email.of(request)
    if email is None:
        return _disabled()
    try:
        claim = email.signer.verify(token)
    except BadLink as exc:
        return _page(400, "Invalid link", exc.message, tone="error")
    except ExpiredLink as exc:
        return await _expired(email, exc)
    ballot = await _ballot(email, claim, decided_status=200)
    if isinstance(ballot, HTMLResponse):
        return ballot
    view, _votes, approver = ballot
    return _confirmation(200, email, token, claim, view, approver)


@router.post("/email/decide/{token}", response_class=HTMLResponse, include_in_schema=False)
async def decide(token: str, request: Request) -> HTMLResponse:
    """The vote, from the confirmation page's form."""
    email = _Email.of(request)
    if email is None:
        return _disabled()
    problem = _cross_site(request, email.origin)
    if problem is not None:
        logger.warning("email decision refused: %s", problem)
        return _page(
            403,
            "Request refused",
            "This request did not come from the confirmation page. Open the link from your email and confirm there.",
            tone="error",
        )
    try:
        claim = email.signer.verify(token)
    except BadLink as exc:
        return _page(400, "Invalid link", exc.message, tone="error")
    except ExpiredLink as exc:
        return await _expired(email, exc)
    form = await request.form()
    csrf = form.get("csrf")
    if not isinstance(csrf, str) or not email.signer.check_form_token(token, csrf):
        logger.warning("email decision refused for %s: the form was not made for this link", claim.decision_id)
        return _page(
            403,
            "Request refused",
            "This form was not made for this link. Open the link from your email and confirm there.",
            tone="error",
        )
    reason = form.get("reason")
    reason = reason.strip()[:2000] if isinstance(reason, str) else ""
    choice = form.get("standing")
    try:
        standing = (
            StandingTerms.parse(*_scope_and_seconds(choice))
            if claim.action == "approve" and isinstance(choice, str) and choice
            else None
        )
        outcome = await email.approvals.vote(
            claim.decision_id,
            Voter("email", claim.address),
            claim.action,
            via="email",
            reason=reason or None,
            standing=standing,
        )
    except AlreadyDecided:
        view = DecisionView.of(*await email.approvals.get(claim.decision_id))
        return _page(409, "Already decided", ending(view), decision=view)
    except UnknownDecision:
        return _unknown()
    except ReasonRequired as exc:
        return await _reason_required(email, token, claim, _sentence(exc.message))
    except ApprovalError as exc:  # AlreadyVoted, NotAllowed, a standing approval the rule does not allow
        return _page(exc.status_code, "Not counted", _sentence(exc.message), tone="error")
    decision, votes = await email.approvals.get(claim.decision_id)
    view = DecisionView.of(decision, votes)
    if outcome.decided:
        title = "Approved" if view.status == "approved" else "Denied"
        return _page(200, title, ending(view), tone="ok", decision=view)
    return _page(200, "Approval recorded", _sentence(outcome.message), tone="ok", decision=view)


class _Email:
    """What the pages need from the running service; None when email approvals are off."""

    def __init__(self, approvals: ApprovalService, signer: LinkSigner, origin: str) -> None:
        self.approvals = approvals
        self.signer = signer
        self.origin = origin

    @classmethod
    def of(cls, request: Request) -> _Email | None:
        state = request.app.state.holdgate
        settings = state.settings
        if state.approvals is None or "email" not in state.approvals.outbox.channels:
            return None  # starting, or email approvals are off (no HOLDGATE_SMTP_URL)
        if settings.secret_key is None or not settings.public_url:
            return None
        signer = LinkSigner(settings.secret_key.get_secret_value(), clock=state.core.clock)
        return cls(state.approvals.service, signer, _origin(settings.public_url))


def _confirmation(
    status: int,
    email: _Email,
    token: str,
    claim: LinkClaim,
    view: DecisionView,
    approver: str,
    *,
    error: str | None = None,
) -> HTMLResponse:
    if claim.action == "approve":
        title = f"Approve {view.server}/{view.tool}?"
        message = f"The agent {view.grant} asks to call {view.tool} on {view.server}. Confirm below to approve it."
    else:
        title = f"Deny {view.server}/{view.tool}?"
        message = f"The agent {view.grant} asks to call {view.tool} on {view.server}. Give a reason below to deny it."
    form = {
        "action": claim.action,
        "csrf": email.signer.form_token(token),
        "approver": approver,
        "error": error,
        "reason": "",
        "durations": {scope: format_seconds(seconds) for scope, seconds in view.scopes.items()},
    }
    return _page(status, title, message, tone="info", decision=view, form=form)


async def _expired(email: _Email, exc: ExpiredLink) -> HTMLResponse:
    message = _sentence(exc.message)
    try:
        decision, votes = await email.approvals.get(exc.claim.decision_id)
    except UnknownDecision:
        return _page(410, "Link expired", message, tone="error")
    view = DecisionView.of(decision, votes)
    if view.status != "pending":
        message += " " + ending(view)
    return _page(410, "Link expired", message, tone="error", decision=view)


async def _reason_required(email: _Email, token: str, claim: LinkClaim, error: str) -> HTMLResponse:
    """A deny without a reason: the form again, unless the decision or the voter rules it out anyway."""
    ballot = await _ballot(email, claim, decided_status=409)
    if isinstance(ballot, HTMLResponse):
        return ballot
    view, _votes, approver = ballot
    return _confirmation(422, email, token, claim, view, approver, error=error)


async def _ballot(
    email: _Email, claim: LinkClaim, *, decided_status: int
) -> tuple[DecisionView, list[Vote], str] | HTMLResponse:
    """The decision a link is for, its votes and the approver the link's address stands for; or the page
    that says why no vote can be cast (unknown decision, already decided, not an approver, already voted),
    as the approvals service's one pre-vote check (`check_vote`) rules."""
    voter = Voter("email", claim.address)
    try:
        await email.approvals.check_vote(claim.decision_id, voter)
    except UnknownDecision:
        return _unknown()
    except AlreadyDecided:
        view = DecisionView.of(*await email.approvals.get(claim.decision_id))
        return _page(decided_status, "Already decided", ending(view), decision=view)
    except AlreadyVoted:
        decision, votes = await email.approvals.get(claim.decision_id)
        approver = email.approvals.approver_name(decision, voter)
        earlier = next(vote for vote in votes if vote.approver == approver)
        return _page(
            200,
            "Already voted",
            f"You ({approver}) already voted {earlier.value} on this call; it is still waiting for other approvers.",
            decision=DecisionView.of(decision, votes),
        )
    except NotAllowed as exc:
        view = DecisionView.of(*await email.approvals.get(claim.decision_id))
        return _page(403, "Not allowed", _sentence(exc.message), tone="error", decision=view)
    decision, votes = await email.approvals.get(claim.decision_id)
    return DecisionView.of(decision, votes), votes, email.approvals.approver_name(decision, voter)


def _unknown() -> HTMLResponse:
    return _page(404, "Unknown decision", "This gateway has no such decision.", tone="error")


def _disabled() -> HTMLResponse:
    return _page(404, "Email approvals are off", "Email approvals are not enabled on this gateway.", tone="error")


def _page(
    status: int,
    title: str,
    message: str,
    *,
    tone: str = "info",
    decision: DecisionView | None = None,
    form: dict[str, Any] | None = None,
) -> HTMLResponse:
    html = TEMPLATES.get_template("page.html").render(
        title=title,
        message=message,
        tone=tone,
        d=decision,
        arguments=arguments_text(decision) if decision is not None else "",
        form=form,
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _scope_and_seconds(choice: str) -> tuple[str, str | None]:
    """The confirmation page's "Approve for" choice, `<scope>|<seconds>`."""
    scope, _, seconds = choice.partition("|")
    return scope, seconds or None


def _cross_site(request: Request, origin: str) -> str | None:
    """Why this POST looks cross-site, or None. Browsers send these headers; other clients may not."""
    sent_origin = request.headers.get("origin")
    if sent_origin is not None and sent_origin.rstrip("/").lower() != origin:
        return f"Origin {sent_origin!r} is not {origin!r}"
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in SAFE_FETCH_SITES:
        return f"Sec-Fetch-Site is {fetch_site!r}"
    return None


class _HideLinkTokens(logging.Filter):
    """Keeps link tokens (bearer capabilities) out of uvicorn's access log: `/email/decide/…`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and DECIDE_PREFIX in a for a in record.args):
            record.args = tuple(_hide_token(a) if isinstance(a, str) and DECIDE_PREFIX in a else a for a in record.args)
        return True


DECIDE_PREFIX = "/email/decide/"
_ACCESS_FILTER = _HideLinkTokens()


def hide_link_tokens_in_access_log() -> None:
    """Install the filter once (the email channel does it at start-up)."""
    access = logging.getLogger("uvicorn.access")
    if _ACCESS_FILTER not in access.filters:
        access.addFilter(_ACCESS_FILTER)


def _hide_token(text: str) -> str:
    head, _, _ = text.partition(DECIDE_PREFIX)
    return head + DECIDE_PREFIX + "…"


def _origin(url: str) -> str:
    """`scheme://host[:port]` as browsers send it in `Origin` (no default port, lower case)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == {"http": 80, "https": 443}.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."
