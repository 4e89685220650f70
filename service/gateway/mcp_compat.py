"""Everything holdgate takes from private parts of the pinned `mcp` SDK (2.3.0), in one place.

The gateway relies on SDK internals where the public API has no door: a session transport that picks
each POST's content type, a session manager that admits sessions through holdgate's budget, the
connection behind a server request's session, the client dispatcher's end-of-stream flag, and the
stream types and factory the SDK's own HTTP client is built from. Every such use goes through this
module, under names of ours; the rest of `service/` sees only those names and the public SDK.

`tests/gateway/test_mcp_compat.py` pins each behaviour relied on here (the private names and
signatures exist, the SDK still calls the hooks, the stream factory works). An SDK upgrade: run that
test, mend this module, done. What each hook reproduces of the SDK is said where it does so
("the SDK's own ... (mcp 2.3.0)").
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client._transport import TransportStreams
from mcp.server import Server
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, EventMessage, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared._compat import resync_tracer
from mcp.shared._context_streams import ContextSendStream, create_context_streams
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, JSONRPCMessage, JSONRPCRequest
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = [
    "ReadStream",
    "SessionManager",
    "SessionTransport",
    "TransportStreams",
    "WriteStream",
    "create_context_streams",
    "dispatcher_closed",
    "only_seen_sdk_spans",
    "resync_tracer",
    "send_unchecked",
    "session_connection",
    "session_initialized",
]

RequestStreams = tuple[MemoryObjectSendStream[EventMessage], MemoryObjectReceiveStream[EventMessage]]
"""A request's outgoing messages inside the session transport: the SDK's writer end and the reader."""


# -- private attributes ---------------------------------------------------------------------------


def session_connection(session: object) -> Any | None:
    """The `Connection` behind a server request's session (`ctx.session`), or None (a stateless request).

    The SDK keeps it private (`ServerSession._connection`); its `session_id`, `state`, `exit_stack`,
    `send_raw_request` and `notify` are what ties a downstream session to its upstream session.
    """
    return getattr(session, "_connection", None)


def session_initialized(session: object) -> bool:
    """Whether the connection behind a server request's session finished `initialize` (the SDK's own gate, which a
    server middleware answering a request itself runs ahead of); a stateless request has no handshake: True."""
    connection = session_connection(session)
    return connection is None or bool(getattr(connection, "initialize_accepted", True))


def dispatcher_closed(session: object) -> bool:
    """Whether a client session's dispatcher saw its transport end (the SDK has no public "closed" flag)."""
    dispatcher = getattr(session, "_dispatcher", None)
    return bool(getattr(dispatcher, "_closed", False))


async def send_unchecked(
    session: object, method: str, params: dict[str, Any] | None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """One request on a client session (`ClientSession`), its result as the peer sent it: not checked against the
    SDK's result type for `method`, which for a 2025-11-25 task-augmented `tools/call` (`{"task": …}`) or the
    `tasks/*` methods the SDK has no runtime for would refuse or mangle the answer. Stamped as the session stamps
    its own requests (the protocol-version header; on a 2026-era connection the `_meta` envelope and routing
    headers), plus `headers`. A JSON-RPC error raises `MCPError`, as `send_request` does.

    The SDK keeps both parts private (`ClientSession._stamp`, `ClientSession._dispatcher.send_raw_request`)."""
    data: dict[str, Any] = {"method": method, "params": dict(params or {})}
    opts: dict[str, Any] = {}
    session._stamp(data, opts)  # type: ignore[attr-defined]
    if headers:
        opts.setdefault("headers", {}).update(headers)
    raw = await session._dispatcher.send_raw_request(method, data.get("params"), opts)  # type: ignore[attr-defined]
    return dict(raw or {})


# -- the session transport ------------------------------------------------------------------------


class SessionTransport(StreamableHTTPServerTransport):
    """The SDK's session transport with one hook, `handle_post`, and its private parts under names of ours.

    The SDK routes every POST of the session to `_handle_post_request`; here that is `handle_post`, whose
    default is the SDK's own handling (`sdk_handle_post`).
    """

    async def handle_post(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        """A POST to this session (override); by default the SDK answers it."""
        await self.sdk_handle_post(scope, request, receive, send)

    async def _handle_post_request(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        await self.handle_post(scope, request, receive, send)

    async def sdk_handle_post(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        """The SDK's own answer to a POST: an SSE stream per request (or JSON, when the session is so set)."""
        await super()._handle_post_request(scope, request, receive, send)

    @property
    def request_streams(self) -> dict[Any, RequestStreams]:
        """The requests this session is answering, by `str(id)`: where the session writes each one's messages."""
        return self._request_streams

    @property
    def session_writer(self) -> ContextSendStream[SessionMessage | Exception] | None:
        """Where incoming messages go to the session (None before `connect()`)."""
        return self._read_stream_writer

    @property
    def resumable(self) -> bool:
        """Whether the session keeps an event store (its streams can be resumed)."""
        return self._event_store is not None

    def has_json_content_type(self, request: Request) -> bool:
        return self._check_content_type(request)

    async def validate_request_headers(self, request: Request, send: Send) -> bool:
        """The SDK's checks of a session request's headers (the session id); False: it has answered already."""
        return await self._validate_request_headers(request, send)

    def error_response(self, message: str, status: HTTPStatus, code: int = INVALID_REQUEST) -> Response:
        """A JSON-RPC error with no id, as the SDK answers (with this session's id header)."""
        return self._create_error_response(message, status, code)

    def json_response(self, message: JSONRPCMessage | None, status: HTTPStatus = HTTPStatus.OK) -> Response:
        """One JSON-RPC message as a JSON body, as the SDK answers (with this session's id header)."""
        return self._create_json_response(message, status)

    def session_message(
        self, message: JSONRPCRequest, request: Request, request_id: str, protocol_version: str
    ) -> SessionMessage:
        """The request as the session reads it, with the metadata the SDK gives it (its HTTP request, and how
        to terminate it unanswered)."""
        return self._create_session_message(message, request, request_id, protocol_version)

    def event_data(self, event: EventMessage) -> dict[str, Any]:
        """An outgoing message as the fields of a server-sent event, as the SDK writes them."""
        return dict(self._create_event_data(event))

    async def close_request_streams(self, request_id: str) -> None:
        """Close and forget a request's streams (`request_streams`)."""
        await self._clean_up_memory_streams(request_id)


# -- the session manager --------------------------------------------------------------------------


class SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager with hooks for opening a session and discarding one.

    `open_session` decides a request that opens a session (no session id): it admits it and serves it
    with `serve_opening_request`, or answers it itself. `admit` registers a new session's transport
    (`register`). `session_discarded` runs whenever the SDK forgets a session, however it ended.
    """

    async def open_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request with no session id (override); by default the SDK's own admission."""
        await super()._handle_stateful_request(scope, receive, send)

    def admit(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        """A new session's transport, registered, or None at the limit (override; the SDK's own by default)."""
        return super()._admit_session(requestor)

    def session_discarded(self, session_id: str) -> None:
        """The SDK forgets a session (its client ended it, it idled out, or it crashed); override.

        Called before any await, as the SDK forgets it: from then on its id answers 404."""

    @property
    def creation_lock(self) -> Any:
        """The lock the SDK admits new sessions under."""
        return self._session_creation_lock

    @property
    def sessions(self) -> dict[str, StreamableHTTPServerTransport]:
        """The live sessions by id."""
        return self._server_instances

    def register(self, transport: StreamableHTTPServerTransport, requestor: AuthorizationContext | None) -> None:
        """Track a new session (and the credential that opened it, which every later request must present)."""
        session_id = transport.mcp_session_id
        assert session_id is not None
        if requestor is not None:
            self._session_owners[session_id] = requestor
        self._server_instances[session_id] = transport

    async def serve_opening_request(
        self, transport: StreamableHTTPServerTransport, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Start an admitted session and let it answer the request that opens it (the SDK's own)."""
        await self._serve_opening_request(transport, scope, receive, send)

    async def _handle_stateful_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _has_session_id(scope):
            await super()._handle_stateful_request(scope, receive, send)
            return
        await self.open_session(scope, receive, send)

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        return self.admit(requestor)

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        self.session_discarded(session_id)
        await super()._discard_session(session_id, transport)


def _has_session_id(scope: Scope) -> bool:
    return MCP_SESSION_ID_HEADER.lower().encode() in (key for key, _ in scope["headers"])


# -- the SDK's server spans -----------------------------------------------------------------------


def only_seen_sdk_spans(server: Server[Any]) -> None:
    """Swap the SDK's `OpenTelemetryMiddleware` (on in every `Server` by default, mcp 2.3.0) in `server` for
    `SdkSpansWhenSeen`, which runs it only when its span can be seen."""
    server.middleware = [
        SdkSpansWhenSeen(item) if isinstance(item, OpenTelemetryMiddleware) else item for item in server.middleware
    ]


class SdkSpansWhenSeen:
    """The SDK's server span for a request, skipped where it is the invalid span and so changes nothing.

    With no OpenTelemetry SDK set as the global tracer provider (holdgate sets one only when OTEL_* variables
    turn tracing on; an embedding may set its own), the SDK's tracer is the API's no-op one. For a request whose
    `_meta` is empty that span is the invalid span, which is what the current span already is: the middleware
    changes nothing, and it cost ~10 us of CPU per request (four nested context managers, a context attach and
    detach). It still runs whenever a global provider is set, and whenever `_meta` has anything in it: a
    client's `traceparent` there makes the client's trace the current one, which holdgate's own spans join
    (`service.tracing`), with or without a global provider.
    """

    def __init__(self, spans: OpenTelemetryMiddleware) -> None:
        self.spans = spans

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.meta or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return await self.spans(ctx, call_next)
        return await call_next(ctx)
