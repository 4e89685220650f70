"""Dashboard sign-in through the team's OpenID Connect provider: `/login/oidc` and its callback.

`/login/oidc?next=/decisions/d_…` starts a sign-in: a fresh state, nonce and PKCE verifier (`OidcClient.start`) go
into a short-lived signed cookie (`holdgate_oidc`, HttpOnly, SameSite=Lax so the provider's redirect back carries it,
Secure over https), together with where to go afterwards, and the browser is sent to the provider. The callback
takes that cookie (and clears it: one use), checks the answer (`OidcClient.finish`: state, code exchange with the
verifier, ID token with the nonce), and maps the identity to a policy person: the person whose `sso` (or, for an
address, `email`) is the configured claim's value. With HOLDGATE_OIDC_GROUPS_CLAIM, someone the policy does not
declare may still sign in when they are in a group the policy declares (`"ops": []` for a group that lives only at
the provider): they are then known by the claim's value, and vote on decisions whose rule names their group. Anyone
else is refused, saying which value the policy lacks. Then the dashboard session (`auth.py`) is made and the browser
goes back where it was going (a local path only).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from itsdangerous import BadSignature, URLSafeTimedSerializer

from service.api.deps import get_state
from service.dashboard.auth import is_https, new_session, oidc_person_known, read_session, safe_next, write_session
from service.dashboard.routes import render_login
from service.identity import OidcError

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
COOKIE = "holdgate_oidc"
CALLBACK = "/login/oidc/callback"
SIGN_IN_WINDOW_S = 600
"""How long a started sign-in may take at the provider before its cookie is refused."""
SALT = "holdgate-oidc-sign-in"


def _serializer(request: Request) -> URLSafeTimedSerializer:
    """The dashboard's signing key under a salt of its own: a sign-in cookie is never a session, nor the reverse."""
    dashboard = get_state(request).dashboard.serializer
    return URLSafeTimedSerializer(dashboard.secret_key, salt=SALT)


def redirect_uri(request: Request) -> str:
    """The callback URL registered at the provider: under HOLDGATE_PUBLIC_URL, else where this request came."""
    base = get_state(request).settings.public_url or str(request.base_url)
    return base.rstrip("/") + CALLBACK


@router.get("/login/oidc")
async def start(request: Request, next: str = "/") -> Response:
    state = get_state(request)
    client = state.dashboard.oidc
    if client is None:
        return RedirectResponse("/login", status_code=303)
    target = safe_next(next)
    try:
        begun = await client.start(redirect_uri(request))
    except OidcError as exc:
        logger.warning("dashboard OIDC sign-in could not start: %s", exc)
        return await _refused(request, target, str(exc), 503)
    response = RedirectResponse(begun.url, status_code=303)
    cookie = _serializer(request).dumps({"s": begun.state, "n": begun.nonce, "v": begun.code_verifier, "next": target})
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SIGN_IN_WINDOW_S,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        path=CALLBACK,
    )
    response.headers["cache-control"] = "no-store"
    return response


@router.get(CALLBACK)
async def callback(request: Request) -> Response:
    state = get_state(request)
    client = state.dashboard.oidc
    if client is None:
        return RedirectResponse("/login", status_code=303)
    begun = _begun(request)
    if begun is None:
        return await _refused(request, "/", "This sign-in was not started here, or took too long: sign in again.", 400)
    target = safe_next(begun.get("next"))
    params = {key: value for key, value in request.query_params.items() if isinstance(value, str)}
    try:
        identity = await client.finish(
            redirect_uri=redirect_uri(request),
            params=params,
            state=str(begun.get("s", "")),
            nonce=str(begun.get("n", "")),
            code_verifier=str(begun.get("v", "")),
        )
    except OidcError as exc:
        logger.warning("dashboard OIDC sign-in refused: %s", exc)
        return await _refused(request, target, str(exc), 401)
    settings = state.settings.oidc
    value = identity.person_value
    if value is None:
        return await _refused(
            request, target, f"The identity provider did not say your {settings.person_claim}: ask an operator.", 403
        )
    person = state.policy.current.person_for_identity(value)
    if person is None and oidc_person_known(state, value, identity.groups):
        person = value  # in a group the policy declares: known by the provider's name for them
    if person is None:
        logger.warning("dashboard OIDC sign-in refused: %s %r is no person of the policy", settings.person_claim, value)
        return await _refused(
            request,
            target,
            f"You signed in as {value}, but no person in the policy has that {settings.person_claim} "
            "(give a person `sso` or `email` with it, or, with groups from the provider, put them in a policy group).",
            403,
        )
    signed_in = new_session(person, None, via="oidc", groups=identity.groups)
    response = RedirectResponse(target, status_code=303)
    write_session(request, response, signed_in)
    response.delete_cookie(COOKIE, path=CALLBACK)
    logger.info("dashboard: %s signed in through the identity provider", person)
    return response


async def provider_sign_out_url(request: Request) -> str | None:
    """After a dashboard sign-out of an OIDC session: the provider's end-session URL, which ends the person's
    session there too and comes back to the login page (`<public URL>/login`, registered at the provider as a
    post-logout redirect URI); None to stay here (no OIDC, turned off, or the provider has no such endpoint).

    Without it, "Sign out" then "Sign in with …" signs the same person straight back in from the provider's
    session, which is not what someone at a shared machine expects."""
    state = get_state(request)
    client = state.dashboard.oidc
    if client is None or not state.settings.oidc.provider_logout:
        return None
    base = state.settings.public_url or str(request.base_url)
    return await client.end_session_url(base.rstrip("/") + "/login")


def _begun(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(request).loads(raw, max_age=SIGN_IN_WINDOW_S)
    except BadSignature:
        return None
    return data if isinstance(data, dict) else None


async def _refused(request: Request, target: str, error: str, status: int) -> Response:
    viewer = await read_session(request)
    response = render_login(request, viewer, target, error, status)
    response.delete_cookie(COOKIE, path=CALLBACK)
    return response
