"""An issuer's metadata and signing keys: discovery once, the JWKS cached and fetched again only when needed.

Discovery reads `<issuer>/.well-known/openid-configuration`, else the RFC 8414 document
(`/.well-known/oauth-authorization-server` inserted before the issuer's path), and refuses a document whose
`issuer` is not the configured one (the mix-up defence of RFC 8414 section 3.3). The key set is fetched on first use
and kept for `max_age_s`; a token signed by a key id the cached set lacks makes one fetch (the issuer rotated its
keys), at most once per `refetch_after_s`, so a flood of tokens with made-up key ids cannot make holdgate hammer the
issuer. Every fetch is bounded by `timeout_s`; an issuer that cannot be reached is `IssuerUnavailable`, which the
callers answer with 503 (never a 500, never "your token is bad"). After a failed fetch, requests are answered so at
once for `retry_after_s` instead of each waiting out its own timeout; a key set past `max_age_s` that cannot be
fetched again is kept (tokens signed by keys it knows still verify while the issuer is down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx2
import jwt

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


class IssuerUnavailable(Exception):
    """The issuer's metadata or keys could not be read now (network, status, not JSON): try again later."""


class IssuerKeys:
    """One issuer's metadata and signing keys, cached."""

    def __init__(
        self,
        issuer: str,
        *,
        jwks_url: str | None = None,
        timeout_s: float = 10.0,
        max_age_s: float = 3600.0,
        refetch_after_s: float = 30.0,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.issuer = issuer
        self._jwks_url = jwks_url
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._refetch_after_s = refetch_after_s
        self._retry_after_s = retry_after_s
        self._failed: tuple[float, IssuerUnavailable] | None = None
        """The last failed fetch: when, and why (repeated at once until `retry_after_s` has passed)."""
        self._clock = clock
        self._transport = transport
        self._metadata: dict[str, Any] | None = None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def metadata(self) -> dict[str, Any]:
        """The issuer's metadata document (read once)."""
        if self._metadata is None:
            async with self._lock:
                if self._metadata is None:
                    self._metadata = await self._discover()
        return self._metadata

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The signing key with id `kid` (a key set of one key answers for a token without `kid`); None when the
        issuer does not publish it, even after fetching its keys again."""
        now = self._clock()
        if self._fetched_at is None:
            await self._refresh(force=True)
        elif now - self._fetched_at > self._max_age_s:
            try:
                await self._refresh(force=True)
            except IssuerUnavailable as exc:
                if not self._keys:
                    raise
                logger.warning("keeping the cached keys of %s: %s", self.issuer, exc)
        found = self._find(kid)
        if found is None and self._fetched_at is not None and self._clock() - self._fetched_at >= self._refetch_after_s:
            await self._refresh(force=False)
            found = self._find(kid)
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self, *, force: bool) -> None:
        fetched_before = self._fetched_at
        async with self._lock:
            if self._fetched_at != fetched_before and not force:
                return  # another request fetched them while this one waited
            url = self._jwks_url or (await self._discover_locked()).get("jwks_uri")
            if not isinstance(url, str) or not url:
                raise IssuerUnavailable(f"the metadata of {self.issuer} has no jwks_uri")
            document = await self._remembering_failure(lambda: self._get_json(url))
            keys: dict[str | None, jwt.PyJWK] = {}
            for entry in document.get("keys", []) if isinstance(document.get("keys"), list) else []:
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK.from_dict(entry)
                except (jwt.PyJWTError, ValueError, TypeError):
                    continue  # a key of a type PyJWT cannot use (or malformed): not one we can verify with
                keys[entry.get("kid")] = key
            self._keys = keys
            self._fetched_at = self._clock()

    async def _discover_locked(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = await self._discover()
        return self._metadata

    async def _discover(self) -> dict[str, Any]:
        return await self._remembering_failure(self._discover_now)

    async def _remembering_failure(self, fetch: Callable[[], Awaitable[_T]]) -> _T:
        """`fetch()`, unless one failed less than `retry_after_s` ago: then that failure again, at once."""
        if self._failed is not None and self._clock() - self._failed[0] < self._retry_after_s:
            raise self._failed[1]
        try:
            result = await fetch()
        except IssuerUnavailable as exc:
            self._failed = (self._clock(), exc)
            raise
        self._failed = None
        return result

    async def _discover_now(self) -> dict[str, Any]:
        problems = []
        for url in discovery_urls(self.issuer):
            try:
                document = await self._get_json(url)
            except IssuerUnavailable as exc:
                problems.append(str(exc))
                continue
            if document.get("issuer") != self.issuer:
                raise IssuerUnavailable(
                    f"{url} names the issuer {document.get('issuer')!r}, not {self.issuer!r} (check the issuer URL, "
                    "with or without its trailing slash)"
                )
            return document
        raise IssuerUnavailable("; ".join(problems))

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx2.AsyncClient(timeout=self._timeout_s, transport=self._transport) as http:
                response = await http.get(url, headers={"accept": "application/json"})
        except httpx2.HTTPError as exc:
            raise IssuerUnavailable(f"cannot read {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise IssuerUnavailable(f"{url} answered HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise IssuerUnavailable(f"{url} did not answer JSON") from None
        if not isinstance(document, dict):
            raise IssuerUnavailable(f"{url} did not answer a JSON object")
        return document


def discovery_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be: OpenID Connect Discovery, then RFC 8414 (path inserted after the host)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return [
        issuer.rstrip("/") + "/.well-known/openid-configuration",
        urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")),
    ]
