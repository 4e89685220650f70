"""Agents' OAuth access tokens: holdgate as an OAuth 2.1 resource server, as the MCP authorization spec describes.

Each `/mcp/<server>` is a protected resource named by its URL (`<HOLDGATE_PUBLIC_URL>/mcp/<server>`), described by
its protected resource metadata (RFC 9728, `resource_metadata`), which tells a client which authorization server to
ask. A client sends `Authorization: Bearer <JWT>`; the token is accepted when

- its header's `alg` is on the allow-list (never `none`, never a shared secret: `HOLDGATE_OAUTH_ALGORITHMS`),
- its `iss` is the configured issuer and a key the issuer publishes (its JWKS, `IssuerKeys`) signed it,
- its `aud` names this server's URL (RFC 8707 resource indicator; a token for another server is refused, so a
  token cannot be replayed across servers), and
- it has not expired (`exp`, required), is already valid (`nbf`) and was not issued in the future (`iat`), by the
  injected clock, with `HOLDGATE_OAUTH_LEEWAY_S` of skew;

and it becomes a grant through the configured map from a claim (`client_id` by default) to a grant name. A valid
token whose claim maps to no grant is a 403, naming the claim and its value; every other refusal is a 401 whose
`WWW-Authenticate` says why (RFC 6750 `error="invalid_token"`, `error_description`) and where the metadata is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from service.identity.keys import IssuerKeys
from service.settings import OAuthSettings

METADATA_PREFIX = "/.well-known/oauth-protected-resource"
MAX_VERIFIED = 10_000
"""Verified tokens remembered (per server); past it the memory starts again."""
"""RFC 9728: a resource's metadata is at this path with the resource's own path appended."""


@dataclass(frozen=True, slots=True)
class OAuthCaller:
    """Who a verified access token says is calling: the grant, and the person the agent acts for (if the token
    says, by `HOLDGATE_OAUTH_ACTING_FOR_CLAIM`)."""

    grant: str
    acting_for: str | None
    subject: str | None


@dataclass(frozen=True, slots=True)
class TokenRefused(Exception):
    """A token holdgate will not take: 401 (`invalid_token`: bad, expired, not for this server) or 403 (valid, but
    no grant); `description` says why, for the client and the log (it never holds the token)."""

    status: int
    error: str
    description: str

    def __str__(self) -> str:
        return self.description


def resource_url(public_url: str, server: str) -> str:
    """The resource a server is: the URL clients reach it at, which its tokens must name as audience."""
    return f"{public_url.rstrip('/')}/mcp/{server}"


def resource_metadata_url(public_url: str, server: str) -> str:
    """Where the server's protected resource metadata is (RFC 9728 section 3.1: path inserted after the host)."""
    return f"{public_url.rstrip('/')}{METADATA_PREFIX}/mcp/{server}"


def resource_metadata(settings: OAuthSettings, public_url: str, server: str) -> dict[str, Any]:
    """The protected resource metadata document of `/mcp/<server>` (RFC 9728 section 2)."""
    document: dict[str, Any] = {
        "resource": resource_url(public_url, server),
        "authorization_servers": [settings.issuer],
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": list(settings.algorithms),
        "resource_name": f"holdgate: {server}",
    }
    if settings.scopes:
        document["scopes_supported"] = list(settings.scopes)
    return document


def www_authenticate(public_url: str, server: str, refusal: TokenRefused | None = None) -> str:
    """The `WWW-Authenticate` of a 401 or 403 on `/mcp/<server>`: where the metadata is, and why (RFC 6750 3)."""
    value = f'Bearer resource_metadata="{resource_metadata_url(public_url, server)}"'
    if refusal is not None:
        # A quoted-string may not hold '"' or '\'; error_description is limited to printable ASCII (RFC 6750 3).
        text = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "?" for c in refusal.description)
        value += f', error="{refusal.error}", error_description="{text}"'
    return value


class AccessTokenVerifier:
    """Checks agents' JWT access tokens against one issuer and maps them to grants."""

    def __init__(
        self,
        settings: OAuthSettings,
        public_url: str,
        *,
        keys: IssuerKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.issuer:
            raise ValueError("OAuth for agents needs HOLDGATE_OAUTH_ISSUER")
        self.settings = settings
        self.issuer = settings.issuer
        self.public_url = public_url
        self.keys = keys or IssuerKeys(settings.issuer, jwks_url=settings.jwks_url)
        self.clock = clock
        self.algorithms: Sequence[str] = tuple(settings.algorithms)
        self._verified: dict[tuple[str, str], Mapping[str, Any]] = {}
        """(token, server) -> the claims of a token whose signature, issuer and audience were checked. An agent sends
        one token with every request until it expires; parsing and verifying it costs ~1-2 ms (PyJWT checks the
        base64 byte by byte), a lookup here microseconds. Its times are checked on every use."""

    async def verify(self, token: str, server: str) -> OAuthCaller:
        """The caller `token` is for `/mcp/<server>`, or TokenRefused. IssuerUnavailable when the issuer's keys
        cannot be read now (the token may be fine: the caller answers 503)."""
        known = self._verified.get((token, server))
        if known is not None:
            try:
                self._check_times(known)
            except TokenRefused:
                self._verified.pop((token, server), None)
                raise
            return self._caller(known)
        claims = await self._verified_claims(token, server)
        self._check_times(claims)
        caller = self._caller(claims)  # an unmapped grant is refused here, and not remembered
        if len(self._verified) >= MAX_VERIFIED:
            self._verified.clear()  # cheaper than LRU bookkeeping; refills with the tokens in use
        self._verified[(token, server)] = claims
        return caller

    def _caller(self, claims: Mapping[str, Any]) -> OAuthCaller:
        return OAuthCaller(grant=self._grant(claims), acting_for=self._acting_for(claims), subject=_text(claims, "sub"))

    async def _verified_claims(self, token: str, server: str) -> dict[str, Any]:
        """The claims of `token`, once its algorithm, issuer, signature and audience (`server`'s URL) check out."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid("the bearer token is not a well-formed JWT access token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise _invalid(
                f"tokens signed with {_shown(alg)} are not accepted (accepted: {', '.join(self.algorithms)})"
            )
        issuer = unverified.get("iss")
        if issuer != self.issuer:
            raise _invalid(f"the token was issued by {_shown(issuer)}; this server accepts tokens from {self.issuer!r}")
        kid = header.get("kid")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise _invalid(f"the token is signed with a key {self.issuer} does not publish (kid {_shown(kid)})")
        audience = resource_url(self.public_url, server)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(alg)],
                audience=audience,
                issuer=self.issuer,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp"]},
            )
        except jwt.InvalidAudienceError:
            raise _invalid(
                f"the token is for {_shown(unverified.get('aud'))}, not for this server ({audience}): ask for a token "
                f"with resource={audience}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"the token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise _invalid(f"the token does not verify: {exc}") from None
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now, leeway = self.clock(), self.settings.leeway_s
        expires, not_before, issued = (_number(claims, name) for name in ("exp", "nbf", "iat"))
        if expires is None:
            raise _invalid("the token's exp is not a finite number")
        if now > expires + leeway:
            raise _invalid(f"the token expired at {_iso(expires)}")
        if not_before is not None and now + leeway < not_before:
            raise _invalid(f"the token is not valid before {_iso(not_before)}")
        if issued is not None and now + leeway < issued:
            raise _invalid(f"the token was issued in the future ({_iso(issued)}): check the clocks")

    def _grant(self, claims: Mapping[str, Any]) -> str:
        name = self.settings.grant_claim
        value = _text(claims, name)
        if value is None:
            raise TokenRefused(403, "insufficient_scope", f"the token has no {name!r} claim to name its grant by")
        grant = self.settings.grants.get(value)
        if grant is None:
            raise TokenRefused(
                403,
                "insufficient_scope",
                f"the token's {name} {_shown(value)} is not mapped to a grant on this holdgate (HOLDGATE_OAUTH_GRANTS)",
            )
        return grant

    def _acting_for(self, claims: Mapping[str, Any]) -> str | None:
        name = self.settings.acting_for_claim
        return _text(claims, name) if name else None


def _shown(value: Any) -> str:
    """A value from an unverified token, as a refusal quotes it: repr, cut to 100 characters."""
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + "…"


def _invalid(description: str) -> TokenRefused:
    return TokenRefused(401, "invalid_token", description)


def _text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value and len(value) <= 200 else None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None  # json reads NaN and 1e400 (inf): never "valid forever"


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g} (unix seconds)"
