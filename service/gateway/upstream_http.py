"""The HTTP client the gateway uses for Streamable HTTP upstreams: one that keeps its connections.

The SDK's client closes a POST's SSE response as soon as the JSON-RPC response arrives, before the
server has sent the stream's last (empty) chunk. httpcore2 cannot put a connection whose response
was not read to the end back in its pool, so it closes it, and every upstream call then pays a new
TCP connection (measured: 23 connects for 20 calls against server-everything). A server ends a
request's SSE stream right after the response, so the rest of the body is already on its way:
reading it before closing, for a short bounded time, keeps the connection alive for the next call.
The read happens in the SDK's per-request task after the response was delivered, so the call does
not wait for it. A stream that is still open after the bound (a long-lived GET stream, a server
that keeps the stream open) is closed as before.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncGenerator, AsyncIterator

import anyio
import httpx2

DRAIN_SECONDS = 0.25
"""How long closing a response may spend reading what is left of its body."""
DRAIN_BYTES = 64 * 1024
"""How much of a body closing may read before giving up on the connection."""


class _DrainingStream(httpx2.AsyncByteStream):
    """A response body that reads its own tail when closed early, so its connection can be reused."""

    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner
        self._parts: AsyncIterator[bytes] | None = None
        self._finished = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._parts = aiter(self._inner)
        return self

    async def __anext__(self) -> bytes:
        assert self._parts is not None
        try:
            return await anext(self._parts)
        except StopAsyncIteration:
            self._finished = True
            raise

    async def aclose(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            if not self._finished:
                await self._drain(parts)
            if isinstance(parts, AsyncGenerator):
                await parts.aclose()
        await self._inner.aclose()

    async def _drain(self, parts: AsyncIterator[bytes]) -> None:
        read = 0
        with anyio.move_on_after(DRAIN_SECONDS):
            try:
                async for part in parts:
                    read += len(part)
                    if read > DRAIN_BYTES:
                        return
            except (httpx2.HTTPError, OSError):
                return


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for the process: building one loads the CA bundle, ~30 ms of CPU per session."""
    return httpx2.create_ssl_context()


class KeepAliveTransport(httpx2.AsyncBaseTransport):
    """`httpx2.AsyncHTTPTransport` whose responses finish reading their body before they close."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport(verify=_tls_context())

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _DrainingStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def upstream_http_client(headers: dict[str, str]) -> httpx2.AsyncClient:
    """The client for one Streamable HTTP upstream session (its connections are reused across calls).

    The caller closes it with the session: the SDK leaves a client it was given open.
    """
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0), transport=KeepAliveTransport())
