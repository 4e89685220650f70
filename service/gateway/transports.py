"""The HTTP edge of the gateway: `/mcp/{server}`, authentication, and one session manager per server.

No policy here: this module only finds the server, authenticates the grant, and hands the
request to that server's Streamable HTTP session manager (which speaks both protocol eras).
The grant is put on the ASGI scope for the handlers, and as the scope's user so the SDK
refuses to let one grant use another grant's session.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import INVALID_REQUEST, METHOD_NOT_FOUND
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from service import metrics
from service.gateway.downstream_http import GatewaySessionManager
from service.gateway.proxy import ACTING_FOR_SCOPE_KEY, GRANT_SCOPE_KEY, ServerProxy
from service.gateway.sessions import SessionBudget
from service.grants.service import ANONYMOUS_DEV_GRANT, GrantResolver
from service.identity import AccessTokenVerifier, IssuerUnavailable, OAuthCaller, TokenRefused
from service.identity.access_tokens import www_authenticate
from service.settings import Settings, is_loopback_host

logger = logging.getLogger(__name__)

GRANT_LOOKUP_RETRY_AFTER_S = 5
"""Retry-After of a request refused because the grant lookup failed (the database was out of reach)."""
ISSUER_RETRY_AFTER_S = 10
"""Retry-After of a request whose OAuth token could not be checked (the issuer's keys were out of reach)."""


def security_settings(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback names always, plus configured and public hosts."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *settings.gateway.allowed_hosts]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if settings.public_url:
        from urllib.parse import urlsplit

        public = urlsplit(settings.public_url)
        hosts.append(public.netloc)
        origins.append(f"{public.scheme}://{public.netloc}")
    if not is_loopback_host(settings.host) and settings.host not in {"0.0.0.0", "::"}:
        hosts.append(f"{settings.host}:*")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def build_manager(proxy: ServerProxy, settings: Settings, budget: SessionBudget) -> GatewaySessionManager:
    return GatewaySessionManager(
        app=proxy.server,
        security_settings=security_settings(settings),
        max_request_body_size=settings.gateway.max_request_body_bytes,
        session_idle_timeout=settings.gateway.session_idle_s,
        defer_s=settings.gateway.stream_keepalive_s,
        budget=budget,
    )


class McpEndpoint:
    """ASGI app mounted at `/mcp`: `/mcp/{server}` -> that server's session manager."""

    def __init__(
        self, resolver: GrantResolver, settings: Settings, verifier: AccessTokenVerifier | None = None
    ) -> None:
        self.resolver = resolver
        self.settings = settings
        self.verifier = verifier
        """Checks OAuth access tokens (HOLDGATE_OAUTH_ISSUER); None: static grant tokens only."""
        self.managers: dict[str, GatewaySessionManager] = {}
        self.budget = SessionBudget(
            max_sessions=settings.gateway.max_sessions,
            max_per_grant=settings.gateway.max_sessions_per_grant,
            idle_s=settings.gateway.session_idle_s,
        )
        """The open sessions of every server's manager (`HOLDGATE_MAX_SESSIONS`, `..._PER_GRANT`)."""
        metrics.watch_open_sessions(lambda: self.budget.open)
        self.known: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        name = path.strip("/")
        if name not in self.known or "/" in name:
            await self._unknown_server(name, scope, send)
            return
        manager = self.managers.get(name)
        if manager is None:
            await _refuse(send, 503, "starting", "the gateway is still starting: try again in a moment")
            return
        try:
            caller = await self._authenticate(scope, name)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # Under load (the database's connections, or the process's file descriptors, all taken) the
            # grant lookup fails: say so, as a refusal the client can retry, never as a 500.
            logger.warning("grant lookup failed, refusing the request with 503: %s: %s", type(exc).__name__, exc)
            await _refuse(
                send,
                503,
                "database_unavailable",
                f"holdgate cannot check the token now ({type(exc).__name__} from its database); try again shortly",
                headers={"retry-after": str(GRANT_LOOKUP_RETRY_AFTER_S)},
            )
            return
        except IssuerUnavailable as exc:
            logger.warning("OAuth token not checked, refusing the request with 503: %s", exc)
            await _refuse(
                send,
                503,
                "issuer_unavailable",
                "holdgate cannot check the access token now (the authorization server's keys cannot be read); "
                "try again shortly",
                headers={"retry-after": str(ISSUER_RETRY_AFTER_S)},
            )
            return
        except TokenRefused as refusal:
            logger.warning("/mcp/%s: access token refused (%d): %s", name, refusal.status, refusal.description)
            await _refuse(
                send,
                refusal.status,
                "unauthorized" if refusal.status == 401 else "forbidden",
                f"holdgate refused the access token: {refusal.description}",
                headers={"www-authenticate": self._challenge(name, refusal)},
            )
            return
        if caller is None:
            await _refuse(
                send,
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' is required"
                + (" (a holdgate grant token, or an OAuth access token for this server)" if self.verifier else ""),
                headers={"www-authenticate": self._challenge(name, None)},
            )
            return
        scope[GRANT_SCOPE_KEY] = caller.grant
        if caller.acting_for is not None:
            scope[ACTING_FOR_SCOPE_KEY] = caller.acting_for
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=caller.grant, scopes=[]))
        await manager.handle_request(scope, receive, send)

    async def _unknown_server(self, name: str, scope: Scope, send: Send) -> None:
        """404 for a name servers.json does not have; the names it has, to a caller who may use them.

        The list goes only to an authenticated caller (a grant token, or the loopback dev grant), so that
        nobody without a token learns what sits behind the gateway.
        """
        shown = name if len(name) <= 100 else name[:100] + "…"  # the path is the caller's: bounded in the answer
        message = f"no MCP server named {shown!r} on this holdgate"
        data: dict[str, Any] = {}
        if await self._authenticate(scope, None) is not None:
            names = sorted(self.known)
            data["servers"] = names
            message += f"; its servers: {', '.join(names)}" if names else "; it has no servers configured"
        await _refuse(send, 404, "unknown_server", message, data=data)

    async def _authenticate(self, scope: Scope, server: str | None) -> OAuthCaller | None:
        """Who calls: a grant token's grant, an OAuth access token's caller (for `server`), or the loopback dev grant;
        None when the request proves nobody. TokenRefused for an access token refused with a reason."""
        headers = _headers(scope)
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            if self.verifier is not None and _looks_like_jwt(token):
                if server is None:
                    return None  # a token names its resource: none is for a server holdgate does not have
                return await self.verifier.verify(token, server)
            grant = await self.resolver.resolve(token)
            if grant is not None:
                return OAuthCaller(grant=grant, acting_for=None, subject=None)
            if self.verifier is not None and server is not None:
                raise TokenRefused(
                    401,
                    "invalid_token",
                    "the token is neither a grant token of this holdgate nor a JWT access token from "
                    f"{self.verifier.issuer}",
                )
            return None
        if auth:
            return None
        client = scope.get("client")
        if self.settings.gateway.anonymous_dev_grant and client and is_loopback_host(client[0]):
            return OAuthCaller(grant=ANONYMOUS_DEV_GRANT, acting_for=None, subject=None)
        return None

    def _challenge(self, server: str, refusal: TokenRefused | None) -> str:
        """The `WWW-Authenticate` of a refusal: with OAuth on, where the server's resource metadata is (MCP
        authorization); otherwise the plain bearer challenge."""
        if self.verifier is None:
            return 'Bearer realm="holdgate"'
        return www_authenticate(self.verifier.public_url, server, refusal)


def _looks_like_jwt(token: str) -> bool:
    """A JWS compact serialization (three dot-separated parts); grant tokens (`hg_…`) have no dots."""
    return token.count(".") == 2 and not token.startswith("hg_")


def _headers(scope: Scope) -> Mapping[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _refuse(
    send: Send,
    status: int,
    reason: str,
    message: str,
    *,
    data: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """An HTTP error whose body is a JSON-RPC error: MCP clients show its message (the SDKs read such a body
    at any status), where a body of another shape leaves them only a generic "Not Found" or "error"."""
    code = METHOD_NOT_FOUND if status == 404 else INVALID_REQUEST
    error = {"code": code, "message": message, "data": {"reason": reason, **(data or {})}}
    await _json(send, status, {"jsonrpc": "2.0", "id": None, "error": error}, headers)


async def _json(send: Send, status: int, body: dict, headers: Mapping[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
