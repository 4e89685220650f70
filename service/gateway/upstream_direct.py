"""`tools/call` straight over an upstream's Streamable HTTP session: the gateway's hot path.

Every allowed or released call is one POST to its upstream. Through the SDK's client that POST
crosses the session (pydantic models out and in), the dispatcher (anyio memory streams, a task per
request) and the transport (another task, httpx2 building the request) before aiohttp sends it: in
profiles of a bulk release that was a third of holdgate's CPU per call. `DirectToolCalls` sends
the same bytes itself, on the session the SDK opened (its session id, the negotiated protocol
version, the same aiohttp connections), and reads the answer:

- `application/json`: the response;
- `text/event-stream`: events until the response. This call's progress goes to its callback;
  anything else the upstream says on the stream (a log message, an elicitation, sampling or
  roots request) is handed to the SDK session as its own transport would hand it, so callbacks
  and routing to the downstream work unchanged. A stream that ends before the response after an
  event id is resumed with `Last-Event-ID`, as the SDK does.

The result stays JSON: the downstream side validates it for the downstream's protocol version
when it writes it, so it is parsed once instead of three times.

Only 2025-era sessions go this way (`direct_calls_for`): a 2026-era upstream (per-request `_meta`
envelope, no session), a stdio upstream, and a request the upstream redirects use the SDK's client.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import httpx2
import mcp_types as types
from mcp import MCPError
from mcp.client.streamable_http import (
    DEFAULT_MAX_SSE_EVENT_SIZE,
    DEFAULT_RECONNECTION_DELAY_MS,
    MAX_RECONNECTION_ATTEMPTS,
    StreamableHTTPTransport,
    StreamWriter,
)
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.inbound import MCP_NAME_HEADER, MCP_PROTOCOL_VERSION_HEADER, encode_header_value
from mcp.shared.message import SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    jsonrpc_message_adapter,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from yarl import URL

from service import tracing
from service.gateway.mcp_compat import TransportStreams, create_context_streams, resync_tracer
from service.gateway.upstream_http import drain_and_release, proxy_for, tls_context

logger = logging.getLogger(__name__)

ProgressCallback = ProgressFnT
"""The SDK's progress callback (named parameters: progress, total, message), so one callback serves both clients."""

TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=300.0)
"""The SDK client's own: 30 s to connect, 300 s between bytes of an answer."""


class NotDirect(Exception):
    """The upstream redirected this request: send it again through the SDK's client (nothing was run)."""


class SessionLost(Exception):
    """The upstream no longer answers on this session (transport failure, or it forgot the session)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass
class HttpSession:
    """The SDK's Streamable HTTP client transport, with the parts `DirectToolCalls` needs kept in reach."""

    transport: StreamableHTTPTransport
    inbox: StreamWriter
    """Where the SDK's transport puts what the upstream sends; the SDK session reads it."""


@contextlib.asynccontextmanager
async def streamable_http_session(
    url: str, http_client: httpx2.AsyncClient
) -> AsyncGenerator[tuple[TransportStreams, HttpSession], None]:
    """`mcp.client.streamable_http.streamable_http_client` (mcp==2.3.0), also yielding its transport and inbox.

    The SDK's function keeps both to itself; this is its body with the client always given by the caller.
    """
    transport = StreamableHTTPTransport(url, max_sse_event_size=DEFAULT_MAX_SSE_EVENT_SIZE)
    read_stream_writer, read_stream = create_context_streams[SessionMessage | Exception](0)
    write_stream, write_stream_reader = create_context_streams[SessionMessage](0)
    async with read_stream_writer, read_stream, write_stream, write_stream_reader, anyio.create_task_group() as tg:

        def start_get_stream() -> None:
            tg.start_soon(transport.handle_get_stream, http_client, read_stream_writer)

        streams = (write_stream_reader, read_stream_writer, write_stream)
        tg.start_soon(transport.post_writer, http_client, *streams, start_get_stream, tg)
        try:
            yield (read_stream, write_stream), HttpSession(transport, read_stream_writer)
        finally:
            if transport.session_id:
                await transport.terminate_session(http_client)
            tg.cancel_scope.cancel()
    await resync_tracer()


def direct_calls_for(
    session: HttpSession, headers: dict[str, str], protocol_version: str, *, connections: int
) -> DirectToolCalls | None:
    """The direct path for a freshly initialized session, or None where the SDK's client must keep the calls."""
    if protocol_version in MODERN_PROTOCOL_VERSIONS:
        return None
    return DirectToolCalls(session, headers, protocol_version, connections=connections)


class DirectToolCalls:
    """`tools/call` requests on one upstream session, written and read without the SDK's client.

    Its connections are its own pool of at most `connections`: a burst (thousands of held calls released
    at once) queues for them instead of opening a connection per call, which cost more CPU than the call.
    """

    def __init__(self, session: HttpSession, headers: dict[str, str], protocol_version: str, *, connections: int):
        self.session = session
        self.url = URL(session.transport.url)
        self.headers = {
            **headers,  # the server's configured headers (e.g. its credentials), as the SDK's client sends them
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            MCP_PROTOCOL_VERSION_HEADER: protocol_version,
        }
        """What every request on this session carries (its id is known: the session is initialized)."""
        if (session_id := session.transport.session_id) is not None:
            self.headers["mcp-session-id"] = session_id
        self.proxy = proxy_for(self.url.scheme, self.url.host or "")
        self._connections = connections
        self._http: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._cancels: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def call_tool(self, name: str, arguments: dict[str, Any] | None, progress: ProgressCallback | None) -> dict:
        """The upstream's `CallToolResult` as JSON.

        Raises MCPError for a JSON-RPC error (the upstream's own, or one standing in for an answer that
        never came, as the SDK's client does), SessionLost when the session is gone, NotDirect on a redirect.
        """
        request_id = f"holdgate-{next(self._ids)}"  # a string: never one of the SDK session's integer ids
        params: dict[str, Any] = {"name": name}
        if arguments is not None:  # `{}` too: exactly what the client sent
            params["arguments"] = arguments
        if progress is not None:
            params["_meta"] = {"progressToken": request_id}
        headers = {**self.headers, MCP_NAME_HEADER: encode_header_value(name)}
        if tracing.enabled():  # the trace goes on upstream: a `traceparent` header, and in `_meta` as the SDK's does
            tracing.inject(headers)
            tracing.inject(params.setdefault("_meta", {}))
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})
        try:
            with _transport_failures():
                async with self._client().post(
                    self.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    proxy=self.proxy,
                    timeout=TIMEOUT,
                ) as response:
                    return await self._answer(response, request_id, progress)
        except asyncio.CancelledError:
            self._tell_cancelled(request_id)
            raise

    # -- reading the answer -----------------------------------------------------------------------

    async def _answer(self, response: aiohttp.ClientResponse, request_id: str, progress: ProgressCallback | None):
        status = response.status
        if 300 <= status < 400:
            raise NotDirect(f"HTTP {status} to {response.headers.get('location')}")
        if status == 202:
            raise MCPError(code=INVALID_REQUEST, message="server answered a request with 202 Accepted")
        if status >= 400:
            raise await self._refusal(response)
        kind = response.content_type
        if kind == "application/json":
            message = _parse(await response.read())
            answer = _response_to(message, request_id)
            if answer is None:
                raise MCPError(code=PARSE_ERROR, message="Failed to parse JSON response: not the request's response")
            return answer
        if kind == "text/event-stream":
            return await self._read_events(response, request_id, progress)
        raise MCPError(code=INVALID_REQUEST, message=f"Unexpected content type: {kind}")

    async def _refusal(self, response: aiohttp.ClientResponse) -> MCPError:
        """The error for an HTTP error status: the JSON-RPC error in its body, if there is one."""
        if response.content_type == "application/json":
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                error = _parse(await response.read()).get("error")
                if isinstance(error, dict):
                    return _mcp_error(error)
        if response.status == 404 and self.session.transport.session_id is not None:
            raise SessionLost("the upstream ended the session (HTTP 404)")
        if response.status == 404:
            return MCPError(code=METHOD_NOT_FOUND, message="Not Found")
        return MCPError(code=INTERNAL_ERROR, message="Server returned an error response")

    async def _read_events(
        self, response: aiohttp.ClientResponse, request_id: str, progress: ProgressCallback | None
    ) -> dict:
        """Events until this request's response; a stream cut short after an event id is resumed, as the SDK does."""
        stream = _StreamPosition()
        answer = await self._answer_from_events(response, request_id, progress, stream)
        failed_resumes = 0
        while answer is None and stream.last_id is not None and failed_resumes < MAX_RECONNECTION_ATTEMPTS:
            delay_ms = stream.retry_ms if stream.retry_ms is not None else DEFAULT_RECONNECTION_DELAY_MS
            await asyncio.sleep(delay_ms / 1000)
            headers = {**self.headers, "last-event-id": stream.last_id}
            async with self._client().get(self.url, headers=headers, proxy=self.proxy, timeout=TIMEOUT) as resumed:
                if resumed.status >= 400 or resumed.content_type != "text/event-stream":
                    failed_resumes += 1
                    continue
                failed_resumes = 0
                answer = await self._answer_from_events(resumed, request_id, progress, stream)
        if answer is None:
            why = "SSE stream ended and reconnection attempts were exhausted" if stream.last_id else "SSE stream ended"
            raise MCPError(code=CONNECTION_CLOSED, message=f"{why} without a response")
        return answer

    async def _answer_from_events(
        self,
        response: aiohttp.ClientResponse,
        request_id: str,
        progress: ProgressCallback | None,
        stream: _StreamPosition,
    ) -> dict | None:
        async for event in sse_events(response.content):
            stream.last_id = event.id or stream.last_id
            stream.retry_ms = event.retry if event.retry is not None else stream.retry_ms
            if event.event != "message" or not event.data:
                continue  # a priming event (an id only), or an event type MCP does not use
            answer = await self._take(_parse(event.data), request_id, progress)
            if answer is not None:
                await drain_and_release(response)  # the stream's end is on its way: keep the connection
                return answer
        return None

    async def _take(self, message: dict[str, Any], request_id: str, progress: ProgressCallback | None) -> dict | None:
        """This request's result, if `message` is its response; else pass the message on and return None."""
        answer = _response_to(message, request_id)
        if answer is not None:
            return answer
        params = message.get("params")
        if (
            message.get("method") == "notifications/progress"
            and isinstance(params, dict)
            and params.get("progressToken") == request_id
        ):
            if progress is not None:
                await progress(params.get("progress", 0), params.get("total"), params.get("message"))
            return None
        try:
            parsed = jsonrpc_message_adapter.validate_python(message, by_name=False)
        except ValueError:
            logger.warning("upstream sent an unreadable message on a tools/call stream; ignored")
            return None
        await self.session.inbox.send(SessionMessage(parsed))
        return None

    # -- plumbing ---------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:  # created on first use: aiohttp binds it to the running loop
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=self._connections, ssl=tls_context()),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # proxies come from `proxy_for`, read once
            )
        return self._http

    def _tell_cancelled(self, request_id: str) -> None:
        """The caller gave up: tell the upstream, as the SDK's client does (in the background: we are cancelled)."""
        notice = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "the downstream client cancelled"},
        }

        async def send() -> None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with self._client().post(
                    self.url,
                    data=json.dumps(notice),
                    headers=self.headers,
                    proxy=self.proxy,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response:
                    await response.read()

        task = asyncio.get_running_loop().create_task(send(), name=f"cancel:{request_id}")
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)


# -- JSON-RPC and SSE -------------------------------------------------------------------------------


def _parse(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise MCPError(code=PARSE_ERROR, message=f"Failed to parse the upstream's answer: {exc}") from None
    if not isinstance(message, dict):
        raise MCPError(code=PARSE_ERROR, message="Failed to parse the upstream's answer: not a JSON-RPC message")
    return message


def _response_to(message: dict[str, Any], request_id: str) -> dict | None:
    """The result if `message` answers `request_id` (raises MCPError for an error answer); else None."""
    if message.get("id") != request_id:
        return None
    if "error" in message:
        raise _mcp_error(message["error"])
    result = message.get("result")
    if not isinstance(result, dict):
        raise MCPError(code=PARSE_ERROR, message="Failed to parse the upstream's answer: no result object")
    return result


def _mcp_error(error: Any) -> MCPError:
    try:
        return MCPError.from_error_data(types.ErrorData.model_validate(error))
    except ValueError:
        return MCPError(code=INTERNAL_ERROR, message=f"malformed error from the upstream: {str(error)[:200]}")


@contextlib.contextmanager
def _transport_failures() -> Iterator[None]:
    try:
        yield
    except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
        raise SessionLost("the SDK session closed") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise SessionLost(f"{type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise SessionLost("TimeoutError: no answer within the read timeout") from exc


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


async def sse_events(content: aiohttp.StreamReader, max_size: int = DEFAULT_MAX_SSE_EVENT_SIZE):
    """The events of a `text/event-stream` body (WHATWG rules: CR, LF or CRLF line ends, `:` comments).

    An event larger than `max_size` bytes fails the stream with an MCPError, as the SDK's limit does; an
    event the stream ends in the middle of is dropped.
    """
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    pending, fields = "", _EventFields(max_size)
    async for chunk in content.iter_any():
        text, held = pending + decode(chunk), ""
        if text.endswith("\r"):  # maybe the first half of a CRLF: decide with the next chunk
            text, held = text[:-1], "\r"
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        pending = lines.pop() + held
        for line in lines:
            if (event := fields.feed(line)) is not None:
                yield event
        fields.check(len(pending))


@dataclass
class _StreamPosition:
    """Where a request's event stream got to, for resuming it."""

    last_id: str | None = None
    retry_ms: int | None = None


class _EventFields:
    """The fields of the event being read, line by line."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.event = ""
        self.data: list[str] = []
        self.id: str | None = None
        self.retry: int | None = None
        self.size = 0

    def check(self, pending: int = 0) -> None:
        """Refuse an event (with the line still being read) over the size limit."""
        if self.size + pending > self.max_size:
            raise MCPError(code=INTERNAL_ERROR, message=f"SSE stream failed: an event exceeded {self.max_size} bytes")

    def feed(self, line: str) -> SseEvent | None:
        if not line:
            if not self.data and not self.event and self.id is None and self.retry is None:
                return None
            done = SseEvent(self.event or "message", "\n".join(self.data), self.id, self.retry)
            self.event, self.data, self.id, self.retry, self.size = "", [], None, None, 0
            return done
        if line.startswith(":"):
            return None
        self.size += len(line)
        self.check()
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\0" not in value:
            self.id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None
