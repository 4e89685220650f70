"""Dashboard sign-in through an OpenID Connect provider: authorization code with PKCE (S256), state and nonce.

`start` makes the provider's authorization URL with a fresh `state`, `nonce` and PKCE verifier, which the dashboard
keeps in a short-lived signed cookie; `finish` takes the callback's `code` back to the token endpoint (authlib's
client, with the verifier and the client's credentials) and checks the ID token itself: signed by a key the issuer
publishes, with an allowed algorithm, `iss` the issuer, `aud` holding the client id (and `azp` it, when several),
not expired by the injected clock, and carrying the `nonce` of this sign-in. Claims the ID token lacks (providers
often put `email` and `groups` only in the userinfo answer) are read from the userinfo endpoint, whose `sub` must be
the ID token's.

What comes out is who the provider says signed in (`SignedInIdentity`); which policy person that is, is the
dashboard's business (`Policy.person_for_identity`).
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx2
import jwt
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from service.identity.keys import IssuerKeys, IssuerUnavailable
from service.settings import OidcSettings

ID_TOKEN_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA", "RS384", "RS512", "PS384", "PS512", "ES384", "ES512")
"""Signatures accepted on ID tokens: the asymmetric ones (never `none`, never HS* keyed by the client secret)."""
LEEWAY_S = 60.0
"""Clock skew tolerated on the ID token's times."""


class OidcError(Exception):
    """The sign-in did not complete; the message says why, for the person signing in (never a token)."""


@dataclass(frozen=True, slots=True)
class SignInStart:
    """Where to send the browser, and what the callback must find again (kept in the sign-in cookie)."""

    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class SignedInIdentity:
    """Who the provider says signed in."""

    subject: str
    person_value: str | None
    """The value of HOLDGATE_OIDC_PERSON_CLAIM (None: the provider did not send it)."""
    groups: frozenset[str]
    """The values of HOLDGATE_OIDC_GROUPS_CLAIM (empty when unset or not sent)."""


class OidcClient:
    """One relying party (holdgate's dashboard) at one OpenID provider."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        keys: IssuerKeys | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        if not settings.issuer or not settings.client_id:
            raise ValueError("OIDC sign-in needs HOLDGATE_OIDC_ISSUER and HOLDGATE_OIDC_CLIENT_ID")
        self.settings = settings
        self.issuer = settings.issuer
        self.client_id = settings.client_id
        self.keys = keys or IssuerKeys(settings.issuer, transport=transport)
        self.clock = clock
        self.timeout_s = timeout_s
        self.transport = transport
        """How requests reach the provider (tests put a MockTransport here); None: the network."""

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        secret = self.settings.client_secret.get_secret_value() if self.settings.client_secret else None
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=secret,
            scope=self.settings.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            timeout=self.timeout_s,
            **({"transport": self.transport} if self.transport is not None else {}),
        )

    async def start(self, redirect_uri: str) -> SignInStart:
        """A new sign-in: the provider's authorization URL, with fresh state, nonce and PKCE verifier."""
        metadata = await self._metadata()
        endpoint = metadata.get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise OidcError(f"the provider's metadata ({self.issuer}) has no authorization_endpoint")
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(endpoint, state=state, code_verifier=verifier, nonce=nonce)
        return SignInStart(url=url, state=state, nonce=nonce, code_verifier=verifier)

    async def finish(
        self, *, redirect_uri: str, params: Mapping[str, str], state: str, nonce: str, code_verifier: str
    ) -> SignedInIdentity:
        """The identity the callback's `params` prove, for the sign-in that `state`, `nonce`, `code_verifier` began."""
        if params.get("error"):
            detail = params.get("error_description") or params["error"]
            raise OidcError(f"the identity provider refused the sign-in: {detail[:300]}")
        if not hmac.compare_digest(params.get("state", "").encode(), state.encode()):
            raise OidcError("the sign-in's state does not match this browser's: start the sign-in again")
        if "iss" in params and params["iss"] != self.issuer:  # RFC 9207: the answer names who sent it
            raise OidcError(f"the sign-in answer came from {params['iss'][:200]!r}, not from {self.issuer!r}")
        code = params.get("code")
        if not code:
            raise OidcError("the identity provider sent no authorization code")
        metadata = await self._metadata()
        async with self._client(redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
            except OAuthError as exc:
                raise OidcError(f"the identity provider refused the code: {exc.description or exc.error}") from None
            except Exception as exc:  # network and protocol failures of the token request
                raise OidcError(f"the token request failed: {type(exc).__name__}") from None
            id_token = token.get("id_token")
            if not isinstance(id_token, str):
                raise OidcError("the identity provider answered without an ID token (is `openid` in the scopes?)")
            claims = await self._verify_id_token(id_token, nonce)
            claims = await self._with_userinfo(client, metadata, token, claims)
        return self._identity(claims)

    async def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """Where to send the browser to end its session at the provider (OpenID Connect RP-Initiated Logout 1.0),
        coming back to `post_logout_redirect_uri`; None when the provider has no `end_session_endpoint` or cannot be
        reached (the sign-out here has happened either way).

        The client is named by `client_id`, not `id_token_hint`: the ID token is not kept after sign-in (it would
        double the session cookie, and the groups in it could take it past a browser's 4 KB limit). Providers
        that require the hint (Okta) refuse; `HOLDGATE_OIDC_PROVIDER_LOGOUT=false` turns this off for them.
        """
        try:
            metadata = await self._metadata()
        except OidcError:
            return None
        endpoint = metadata.get("end_session_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            return None
        query = urlencode({"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def _metadata(self) -> dict[str, Any]:
        try:
            return await self.keys.metadata()
        except IssuerUnavailable as exc:
            raise OidcError(f"the identity provider cannot be reached now: {exc}") from None

    async def _verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise OidcError("the ID token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ID_TOKEN_ALGORITHMS:
            raise OidcError(f"the ID token is signed with {alg!r}, which is not accepted")
        try:
            key = await self.keys.key(header.get("kid") if isinstance(header.get("kid"), str) else None)
        except IssuerUnavailable as exc:
            raise OidcError(f"the identity provider's keys cannot be read now: {exc}") from None
        if key is None:
            raise OidcError("the ID token is signed with a key the identity provider does not publish")
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=[alg],
                audience=self.client_id,
                issuer=self.issuer,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token does not verify: {exc}") from None
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or not math.isfinite(expires) or self.clock() > expires + LEEWAY_S:
            raise OidcError("the ID token has expired: sign in again")
        audiences = claims["aud"] if isinstance(claims.get("aud"), list) else [claims.get("aud")]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise OidcError("the ID token was issued to another client (azp)")
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(
            claims["nonce"].encode(), nonce.encode()
        ):
            raise OidcError("the ID token's nonce is not this sign-in's: start the sign-in again")
        return claims

    async def _with_userinfo(
        self, client: AsyncOAuth2Client, metadata: Mapping[str, Any], token: Mapping[str, Any], claims: dict[str, Any]
    ) -> dict[str, Any]:
        """The ID token's claims, completed from the userinfo endpoint when the ones holdgate needs are missing."""
        wanted = [self.settings.person_claim, *([self.settings.groups_claim] if self.settings.groups_claim else [])]
        endpoint = metadata.get("userinfo_endpoint")
        if all(name in claims for name in wanted) or not isinstance(endpoint, str) or "access_token" not in token:
            return claims
        try:
            response = await client.get(endpoint)
            info = response.json() if response.status_code == 200 else None
        except Exception:  # the ID token stands; the missing claims stay missing (sign-in then says so)
            return claims
        if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
            return claims  # OIDC Core 5.3.2: a userinfo answer for another subject must not be used
        return {**info, **claims}

    def _identity(self, claims: Mapping[str, Any]) -> SignedInIdentity:
        value = claims.get(self.settings.person_claim)
        if self.settings.person_claim == "email" and claims.get("email_verified") is False:
            raise OidcError(f"the identity provider has not verified the address {str(value)[:200]!r}")
        groups: frozenset[str] = frozenset()
        if self.settings.groups_claim:
            raw = claims.get(self.settings.groups_claim)
            if isinstance(raw, str):
                raw = [raw]
            if isinstance(raw, list):
                groups = frozenset(g for g in raw if isinstance(g, str) and g and len(g) <= 200)
        return SignedInIdentity(
            subject=str(claims["sub"]),
            person_value=value if isinstance(value, str) and value and len(value) <= 200 else None,
            groups=groups,
        )
