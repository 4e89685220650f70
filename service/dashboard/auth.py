"""Dashboard sign-in: a signed session cookie for a person of the policy, and CSRF tokens for forms.

A person signs in with the same token the REST API takes (declared in the policy's `people` with
`token_sha256`). The cookie is signed with itsdangerous under `HOLDGATE_SECRET_KEY` (or a key made
per process when unset: sessions then end on restart and are not shared between replicas), and it
holds the person, the sha256 of their token and a CSRF token. Every request checks that the policy
still declares that person with that token, so removing a token from the policy signs them out.
Every form and every fetch POST carries the CSRF token; it is compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from service.api.deps import get_state

if TYPE_CHECKING:
    from service.app import AppState

COOKIE = "holdgate_session"
MAX_AGE_S = 12 * 3600
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whoever is looking at the dashboard: a signed-in person (or nobody) and the session's CSRF token."""

    person: str | None
    csrf: str
    token_sha256: str | None = None


def _serializer(state: AppState) -> URLSafeTimedSerializer:
    serializer = state.extras.get("dashboard.serializer")
    if serializer is None:
        key = state.settings.secret_key.get_secret_value() if state.settings.secret_key else secrets.token_hex(32)
        serializer = URLSafeTimedSerializer(key, salt="holdgate-dashboard-session")
        state.extras["dashboard.serializer"] = serializer
    return serializer


def read_session(request: Request) -> Viewer:
    """The session in the request's cookie; an anonymous one (fresh CSRF token) when missing or invalid."""
    state = get_state(request)
    raw = request.cookies.get(COOKIE)
    data: dict[str, Any] = {}
    if raw:
        try:
            data = _serializer(state).loads(raw, max_age=MAX_AGE_S)
        except BadSignature:
            data = {}
    csrf = data.get("c") or secrets.token_urlsafe(24)
    person, digest = data.get("p"), data.get("t")
    if person and digest and state.policy.current.person_for_token_sha256(digest) == person:
        return Viewer(person, csrf, digest)
    return Viewer(None, csrf)


def write_session(request: Request, response: Response, viewer: Viewer) -> None:
    """Store `viewer` in the response's cookie (HttpOnly, SameSite=Lax, Secure behind https)."""
    state = get_state(request)
    value = _serializer(state).dumps({"p": viewer.person, "t": viewer.token_sha256, "c": viewer.csrf})
    public = state.settings.public_url or ""
    response.set_cookie(
        COOKIE,
        value,
        max_age=MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=public.startswith("https://") or request.url.scheme == "https",
        path="/",
    )


def csrf_ok(viewer: Viewer, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(viewer.csrf.encode(), (token or "").encode())


def safe_next(target: str | None) -> str:
    """A local path to go back to after sign-in (never another site)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def require_viewer(request: Request) -> Viewer:
    """A signed-in person, or a redirect to /login that comes back here afterwards."""
    viewer = read_session(request)
    if viewer.person is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(status_code=303, headers={"Location": f"/login?next={quote(target, safe='')}"})
    return viewer


async def require_csrf(request: Request, viewer: Annotated[Viewer, Depends(require_viewer)]) -> Viewer:
    """For POSTs: the signed-in person, after checking the form's (or the header's) CSRF token."""
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        form = await request.form()
        value = form.get("csrf")
        token = value if isinstance(value, str) else None
    if not csrf_ok(viewer, token):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token: reload the page and try again")
    return viewer


ViewerDep = Annotated[Viewer, Depends(require_viewer)]
CsrfViewerDep = Annotated[Viewer, Depends(require_csrf)]
