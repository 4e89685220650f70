"""The HTTP client for Streamable HTTP MCP sessions: cheap per request, and it keeps its connections.

Every proxied call to an HTTP upstream is one POST through this client, so its cost is on every
call. Two things make it cheaper than the SDK's default client:

- The transport under the `httpx2.AsyncClient` the SDK needs is aiohttp's (C parser) rather than
  httpcore2/h11 (Python): about 0.2 ms instead of 0.7 ms of CPU per request (`KeepAliveTransport`).
- The SDK closes a POST's SSE response as soon as the JSON-RPC response arrives, before the server
  has sent the stream's last (empty) chunk; a connection whose response was not read to the end
  cannot go back to the pool, so every call used to pay a new TCP connection (23 connects for 20
  calls against server-everything). A server ends a request's SSE stream right after the
  response, so the rest is already on its way: reading it before closing, for a short bounded
  time, keeps the connection for the next call (`_AiohttpBody.aclose`). That read happens in the SDK's
  per-request task after the response was delivered, so the call does not wait for it; a stream
  still open after the bound (a long-lived GET stream) is closed as before.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import anyio
import httpx2

DRAIN_SECONDS = 0.25
"""How long closing a response may spend reading what is left of its body."""
DRAIN_BYTES = 64 * 1024
"""How much of a body closing may read before giving up on the connection."""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for the process: building one loads the CA bundle, ~30 ms of CPU per session."""
    return httpx2.create_ssl_context()


class _AiohttpBody(httpx2.AsyncByteStream):
    """An aiohttp response body as the byte stream an `httpx2.Response` reads.

    Closed before its end, it first reads its own tail (bounded), so the connection goes back to the pool.
    """

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._request, read=True):
            async for part in self._response.content.iter_any():
                yield part

    async def aclose(self) -> None:
        await drain_and_release(self._response)


async def drain_and_release(response: aiohttp.ClientResponse) -> None:
    """Read what is left of `response` (bounded), so its connection goes back to the pool, then release it.

    A body that did not end within `DRAIN_SECONDS` and `DRAIN_BYTES` closes its connection instead.
    """
    content, read = response.content, 0
    with anyio.move_on_after(DRAIN_SECONDS):
        try:
            while read <= DRAIN_BYTES and (part := await content.readany()):
                read += len(part)
        except (aiohttp.ClientError, OSError):
            pass
    response.release()  # back to the pool when the body was read to the end, else closed


class KeepAliveTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport on aiohttp whose responses read their tail before they close.

    The SDK's client needs an `httpx2.AsyncClient`, but it only sends, streams and closes: the
    transport underneath is ours to choose. aiohttp (already here for slack-sdk) parses HTTP in C;
    httpcore2 and h11 parse it in Python. Measured against server-everything: 0.21 ms of CPU per
    request instead of 0.71 ms, on every upstream call.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on first use: aiohttp binds it to the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=tls_context()),
                auto_decompress=False,  # httpx2 decodes by Content-Encoding itself
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx2 keeps the cookies
                trust_env=False,  # it would read ~/.netrc and the proxy variables in a thread per request
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeout = request.extensions.get("timeout", {})
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _HOP_HEADERS]
        with _mapped_errors(request, read=False):
            response = await self._client().request(
                request.method,
                str(request.url),
                headers=headers,
                data=await request.aread(),
                allow_redirects=False,
                proxy=proxy_for(request.url.scheme, request.url.host),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
                ),
            )
        return httpx2.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_AiohttpBody(response, request),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


@functools.cache
def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for this origin, read once (httpx2 honours them too)."""
    # proxy_bypass_environment is public but missing from typeshed; it reads NO_PROXY only, unlike proxy_bypass,
    # which on macOS and Windows also consults the system settings the rest of the gateway (httpx2) ignores.
    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    return urllib.request.getproxies_environment().get(scheme)


_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
"""Headers aiohttp writes itself from the URL and the body."""


@contextlib.contextmanager
def _mapped_errors(request: httpx2.Request, *, read: bool) -> Iterator[None]:
    """aiohttp's failures as the httpx2 exceptions the SDK and `call_upstream` handle."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        timeout = httpx2.ReadTimeout if read else httpx2.ConnectTimeout
        raise timeout(str(exc) or "timed out", request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        failure = httpx2.ReadError if read else httpx2.ConnectError
        raise failure(str(exc), request=request) from exc


def mcp_http_client(
    headers: dict[str, str],
    *,
    event_hooks: dict[str, list] | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> httpx2.AsyncClient:
    """The client for one Streamable HTTP MCP session (its connections are reused across calls).

    The gateway uses it for its upstreams, the stdio bridge for its hop to the gateway. The caller
    closes it with the session: the SDK leaves a client it was given open. Timeouts are the SDK's own
    defaults: 30 s to connect or write, 300 s between bytes of a response stream. `transport` (the bridge's)
    wraps a `KeepAliveTransport`.
    """
    return httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(30.0, read=300.0),
        transport=transport or KeepAliveTransport(),
        event_hooks=event_hooks,
    )
