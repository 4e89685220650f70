"""Dashboard sign-in: a signed session cookie for a person of the policy, and CSRF tokens for forms.

A person signs in with the same token the REST API takes (declared in the policy's `people` with
`token_sha256`). The cookie is signed with itsdangerous under `HOLDGATE_SECRET_KEY` (or a key made
per process when unset: sessions then end on restart and are not shared between replicas), and it
holds the person, the sha256 of their token and a CSRF token. Every request checks that the policy
still declares that person with that token, so removing a token from the policy signs them out.
Every form and every fetch POST carries the CSRF token; it is compared in constant time.

Sign-out revokes: the cookie also holds a random session id, and signing out records it in
`dashboard_signouts` until the cookie would have expired, so a copy of the cookie stops working on
every replica (cookies from before session ids existed are treated as signed out).

With OIDC on (HOLDGATE_OIDC_ISSUER), a person may sign in through the team's identity provider instead
(`oidc_sign_in.py` runs the exchange): the session then holds the person's name and how they signed in, and, with
HOLDGATE_OIDC_GROUPS_CLAIM, their groups at the provider. Every request checks that the policy still knows them: a
declared person, or (groups on) a member of a group the policy declares. Such a session ends when OIDC is turned off.

Sign-in is throttled: 5 refused attempts within 5 minutes from one client address, or with tokens
that begin with the same 8 characters, make further attempts answer 429 with `Retry-After` until the
oldest of them is 5 minutes old. Failures are counted in the database (`dashboard_signin_failures`),
so the limit holds across replicas; attempts refused by the throttle are not counted.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response
from itsdangerous import BadSignature
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from service.api.deps import get_state
from service.db import session_scope
from service.models import DashboardSignInFailure, DashboardSignOut

if TYPE_CHECKING:
    from service.app import AppState

COOKIE = "holdgate_session"
MAX_AGE_S = 12 * 3600
CSRF_HEADER = "x-csrf-token"
SIGN_IN_FAILURES = 5
SIGN_IN_WINDOW_S = 300
TOKEN_PREFIX_CHARS = 8


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whoever is looking at the dashboard: a signed-in person (or nobody) and the session's CSRF token."""

    person: str | None
    csrf: str
    token_sha256: str | None = None
    session_id: str | None = None
    """Random per sign-in; what sign-out revokes."""
    via: str = "token"
    """How they signed in: `token` (a person's API token) or `oidc` (the identity provider)."""
    groups: frozenset[str] = frozenset()
    """Their groups at the identity provider (HOLDGATE_OIDC_GROUPS_CLAIM), as it said at sign-in."""


async def read_session(request: Request) -> Viewer:
    """The session in the request's cookie; an anonymous one (fresh CSRF token) when missing, invalid or signed out."""
    state = get_state(request)
    raw = request.cookies.get(COOKIE)
    data: dict[str, Any] = {}
    if raw:
        try:
            data = state.dashboard.serializer.loads(raw, max_age=MAX_AGE_S)
        except BadSignature:
            data = {}
    csrf = data.get("c") or secrets.token_urlsafe(24)
    person, digest, session_id = data.get("p"), data.get("t"), data.get("s")
    if not (isinstance(person, str) and person and isinstance(session_id, str) and session_id):
        return Viewer(None, csrf)
    if data.get("m") == "oidc":
        groups = frozenset(g for g in data.get("g") or () if isinstance(g, str))
        if oidc_person_known(state, person, groups) and not await _signed_out(state, session_id):
            return Viewer(person, csrf, None, session_id, via="oidc", groups=groups)
        return Viewer(None, csrf)
    if (
        digest
        and state.policy.current.person_for_token_sha256(digest) == person
        and not await _signed_out(state, session_id)
    ):
        return Viewer(person, csrf, digest, session_id)
    return Viewer(None, csrf)


def oidc_person_known(state: AppState, person: str, groups: frozenset[str]) -> bool:
    """Whether someone signed in through the identity provider may use the dashboard under the current policy and
    settings: OIDC still on, and a declared person, or (groups taken from the provider) in a group the policy names."""
    if not state.settings.oidc.enabled:
        return False
    policy = state.policy.current
    if person in policy.people:
        return True
    return bool(state.settings.oidc.groups_claim) and not groups.isdisjoint(policy.group_names)


def new_session(
    person: str, token_sha256: str | None, *, via: str = "token", groups: frozenset[str] = frozenset()
) -> Viewer:
    """A signed-in session: a new session id and a new CSRF token."""
    return Viewer(person, secrets.token_urlsafe(24), token_sha256, secrets.token_urlsafe(18), via=via, groups=groups)


async def _signed_out(state: AppState, session_id: str) -> bool:
    async with state.sessions() as session:
        return await session.get(DashboardSignOut, session_id) is not None


async def sign_out(state: AppState, viewer: Viewer) -> None:
    """Revoke `viewer`'s session on every replica until its cookie would have expired (and forget expired ones)."""
    if viewer.session_id is None:
        return
    now = state.core.clock()
    async with session_scope(state.sessions) as session:
        await session.execute(delete(DashboardSignOut).where(col(DashboardSignOut.expires_at) < now))
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        await session.execute(
            insert(DashboardSignOut)
            .values(session_id=viewer.session_id, expires_at=now + MAX_AGE_S)
            .on_conflict_do_nothing()  # signed out twice at once (two tabs)
        )


def sign_in_keys(request: Request, token: str) -> list[str]:
    """What a sign-in attempt counts against: the client's address, and the token's first characters.

    The prefix is kept as a hash (a mistyped real token is not stored, even in part). A load balancer
    in front must pass the client's address (uvicorn reads X-Forwarded-For from trusted proxies,
    FORWARDED_ALLOW_IPS), or every client counts as one.
    """
    keys = [f"address:{request.client.host if request.client else 'unknown'}"[:100]]
    if token:
        keys.append("token:" + hashlib.sha256(token[:TOKEN_PREFIX_CHARS].encode()).hexdigest()[:32])
    return keys


async def sign_in_wait(state: AppState, keys: list[str]) -> int | None:
    """Whole seconds until a sign-in under `keys` may be tried again, or None when it may be tried now."""
    now = state.core.clock()
    async with state.sessions() as session:
        rows = await session.execute(
            select(col(DashboardSignInFailure.key), col(DashboardSignInFailure.at)).where(
                col(DashboardSignInFailure.key).in_(keys), col(DashboardSignInFailure.at) > now - SIGN_IN_WINDOW_S
            )
        )
    times: dict[str, list[float]] = {}
    for key, at in rows:
        times.setdefault(key, []).append(at)
    waits = [
        # allowed again once all but SIGN_IN_FAILURES - 1 of the failures in the window have left it
        sorted(ats)[len(ats) - SIGN_IN_FAILURES] + SIGN_IN_WINDOW_S - now
        for ats in times.values()
        if len(ats) >= SIGN_IN_FAILURES
    ]
    return max(1, math.ceil(max(waits))) if waits else None


async def record_sign_in_failure(state: AppState, keys: list[str]) -> None:
    """Count a refused sign-in against each of `keys` (and drop failures that have left every window)."""
    now = state.core.clock()
    async with session_scope(state.sessions) as session:
        await session.execute(
            delete(DashboardSignInFailure).where(col(DashboardSignInFailure.at) <= now - SIGN_IN_WINDOW_S)
        )
        session.add_all(DashboardSignInFailure(key=key, at=now) for key in keys)


def write_session(request: Request, response: Response, viewer: Viewer) -> None:
    """Store `viewer` in the response's cookie (HttpOnly, SameSite=Lax, Secure behind https)."""
    state = get_state(request)
    data: dict[str, Any] = {"p": viewer.person, "t": viewer.token_sha256, "c": viewer.csrf, "s": viewer.session_id}
    if viewer.via == "oidc":
        data |= {"m": "oidc", "g": sorted(viewer.groups)}
    value = state.dashboard.serializer.dumps(data)
    response.set_cookie(
        COOKIE,
        value,
        max_age=MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        path="/",
    )


def is_https(request: Request) -> bool:
    """Whether the browser reaches the dashboard over https (the public URL says so, or the request came so): then
    cookies are `Secure`."""
    public = get_state(request).settings.public_url or ""
    return public.startswith("https://") or request.url.scheme == "https"


def csrf_ok(viewer: Viewer, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(viewer.csrf.encode(), (token or "").encode())


def safe_next(target: str | None) -> str:
    """A local path to go back to after sign-in (never another site)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


async def require_viewer(request: Request) -> Viewer:
    """A signed-in person, or a redirect to /login that comes back here afterwards (with OIDC on, a link from Slack
    or email to a decision page asks for sign-in first, then shows the decision)."""
    viewer = await read_session(request)
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
