"""Downstream Streamable HTTP sessions (2025-11-25 era): a plain JSON answer unless the call has more to say.

The SDK's session transport answers every request POST with an SSE stream: sse-starlette with a task
group of its own, two memory streams and a writer task per request. Most tool calls send nothing but
their result, and for them that machinery was about a third of holdgate's CPU per proxied call. The
spec lets a server pick the content type of each POST's response, and the SDK's own 2026-era entry
already defers the choice (`mcp.server._streamable_http_modern`); this does the same for sessions.

A request's first outgoing message decides. Its response: one `application/json` body. Anything else
(progress, a log line, an elicitation or sampling request relayed from the upstream): a
`text/event-stream` that carries it and everything after it, ending with the response. Nothing within
`defer_s` (`HOLDGATE_STREAM_KEEPALIVE_S`; a held call without a progress token): the stream starts,
with comment pings, so that proxies with an idle-read timeout keep the connection open.

Everything this fast path does not cover (initialize, notifications and responses from the client,
malformed or refused requests, resumable sessions with an event store) goes to the SDK's own handling.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from uuid import uuid4

import anyio
import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, AuthorizationContext, authorization_context
from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    REQUEST_CANCELLED,
    REQUEST_STREAM_BUFFER_SIZE,
    EventMessage,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import (
    DEFAULT_NEGOTIATED_VERSION,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    ErrorData,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from sse_starlette.event import ServerSentEvent
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from service.gateway.mcp_compat import SessionManager, SessionTransport
from service.gateway.sessions import Refusal, SessionBudget

logger = logging.getLogger(__name__)

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
_PING = b": ping\r\n\r\n"


class DeferredChoiceTransport(SessionTransport):
    """A session transport that answers in JSON when a request's response is all there is to send."""

    def __init__(self, *args: Any, defer_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.defer_s = defer_s

    async def handle_post(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        message = await self._plain_request(request)
        if message is None:
            if (duplicate := await self._in_flight_already(request)) is not None:
                await self._refuse_duplicate(duplicate, scope, receive, send)
                return
            # Starlette keeps the body it read, so the SDK parses the same bytes and answers as it always does.
            await self.sdk_handle_post(scope, request, receive, send)
            return
        try:
            if await self.validate_request_headers(request, send):
                await self._answer(message, scope, request, receive, send)
        except Exception as err:  # the SDK's own last resort, kept for the requests taken from it
            logger.exception("Error handling POST request")
            response = self.error_response(
                "Error handling POST request", HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR
            )
            await response(scope, receive, send)
            if self.session_writer is not None:
                await self.session_writer.send(Exception(err))

    async def _plain_request(self, request: Request) -> JSONRPCRequest | None:
        """The POST's JSON-RPC request when this fast path may answer it, else None."""
        if self.is_json_response_enabled or self.resumable or self.session_writer is None:
            return None
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse) or not self.has_json_content_type(request):
            return None
        try:
            message = jsonrpc_message_adapter.validate_python(pydantic_core.from_json(await request.body()))
        except (ValueError, ValidationError):
            return None
        if not isinstance(message, JSONRPCRequest) or message.method == "initialize":
            return None
        return message

    async def _in_flight_already(self, request: Request) -> JSONRPCRequest | None:
        """The POST's request if its id is one this session is still answering (for the SDK's own path)."""
        if not self.request_streams:
            return None  # nothing in flight: no need to parse the body a second time
        try:
            message = jsonrpc_message_adapter.validate_python(pydantic_core.from_json(await request.body()))
        except (ValueError, ValidationError):
            return None  # the SDK answers a malformed body itself
        if isinstance(message, JSONRPCRequest) and str(message.id) in self.request_streams:
            return message
        return None

    async def _refuse_duplicate(self, message: JSONRPCRequest, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request that reuses the id of one still in flight, leaving that one alone.

        Responses find their request by id (the SDK keys each request's stream by `str(id)`), so taking the
        second would leave the first without an answer for ever. The error carries the duplicate's id and goes
        on the duplicate's own POST, so a client that reads each POST's answer sees it on the right request.
        """
        logger.warning("session %s: refused a request reusing in-flight id %.80r", self.mcp_session_id, message.id)
        error = JSONRPCError(
            jsonrpc="2.0",
            id=message.id,
            error=ErrorData(
                code=INVALID_REQUEST,
                message=f"request id {message.id!r} is already in flight in this session: "
                "each request needs an id of its own until it is answered",
            ),
        )
        await self.json_response(error, HTTPStatus.BAD_REQUEST)(scope, receive, send)

    async def _answer(
        self, message: JSONRPCRequest, scope: Scope, request: Request, receive: Receive, send: Send
    ) -> None:
        watch = StreamWatch()
        request.scope[STREAM_WATCH_KEY] = watch  # the handler's ctx.request is this request
        # A plain asyncio task, not an anyio task group: cancelling a group's scope formats the current task's
        # repr for its message, and with the group's bookkeeping that was ~0.1 ms of CPU per call. The watcher
        # only ever waits in `receive()`, so cancelling it is all the ending it needs.
        watcher = asyncio.create_task(_watch_disconnect(receive, watch))
        watcher.add_done_callback(_log_watch_failure)
        try:
            await self._answer_watched(message, scope, request, receive, send, watch)
        finally:
            watcher.cancel()

    async def _answer_watched(
        self, message: JSONRPCRequest, scope: Scope, request: Request, receive: Receive, send: Send, watch: StreamWatch
    ) -> None:
        request_id = str(message.id)
        if request_id in self.request_streams:  # checked and taken with no await between: one of two racing wins
            await self._refuse_duplicate(message, scope, receive, send)
            return
        protocol_version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER, DEFAULT_NEGOTIATED_VERSION)
        streams = anyio.create_memory_object_stream[EventMessage](REQUEST_STREAM_BUFFER_SIZE)
        self.request_streams[request_id] = streams
        reader = streams[1]
        try:
            writer = self.session_writer
            assert writer is not None  # checked by _plain_request
            await writer.send(self.session_message(message, request, request_id, protocol_version))
            try:
                first = await self._next_message(reader)
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                # The session was terminated (DELETE, idle close, shutdown) with this request in flight: there
                # is no answer to wait for. The session is gone, which the spec says with a 404 (the client
                # starts a new session and calls again); it is not a fault of the server's.
                response = self.error_response(
                    "the session was closed before this request completed: start a new session and call again",
                    HTTPStatus.NOT_FOUND,
                    INVALID_REQUEST,
                )
                await response(scope, receive, send)
                return
            if first is not None and _is_answer(first) and not _is_cancellation(first):
                await self.json_response(first.message)(scope, receive, send)
            else:
                await self._stream(first, reader, watch, send)
        finally:
            await self.close_request_streams(request_id)

    async def _next_message(self, reader: MemoryObjectReceiveStream[EventMessage]) -> EventMessage | None:
        """The request's next outgoing message, or None when `defer_s` passed without one."""
        with anyio.move_on_after(self.defer_s):
            return await reader.receive()
        return None

    async def _stream(
        self,
        first: EventMessage | None,
        reader: MemoryObjectReceiveStream[EventMessage],
        watch: StreamWatch,
        send: Send,
    ) -> None:
        """Answer as SSE: `first` (or a ping), then every message until the response or the session's end."""
        headers = list(_SSE_HEADERS)
        if self.mcp_session_id:
            headers.append((MCP_SESSION_ID_HEADER.encode(), self.mcp_session_id.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_cancel_on_close, watch, tasks.cancel_scope)
            event = first
            try:
                while event is None or not _is_answer(event):
                    await send({"type": "http.response.body", "body": self._frame(event), "more_body": True})
                    event = await self._next_message(reader)
                await send({"type": "http.response.body", "body": self._frame(event), "more_body": False})
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            tasks.cancel_scope.cancel()

    def _frame(self, event: EventMessage | None) -> bytes:
        return _PING if event is None else ServerSentEvent(**self.event_data(event)).encode()


def _is_answer(event: EventMessage) -> bool:
    return isinstance(event.message, JSONRPCResponse | JSONRPCError)


def _is_cancellation(event: EventMessage) -> bool:
    """The error that closes a request its client cancelled.

    It still goes as a stream: a client usually cancels on its way out, and the SDK client (2.3.0)
    drops a stream answer that arrives after its session closed, while a JSON one raises out of its
    task group.
    """
    return isinstance(event.message, JSONRPCError) and event.message.error.code == REQUEST_CANCELLED


STREAM_WATCH_KEY = "holdgate.stream_watch"
"""Where a request answered by `DeferredChoiceTransport` keeps its `StreamWatch` (the ASGI scope)."""


class StreamWatch:
    """Whether the client closed a request's HTTP exchange before its answer was sent.

    On 2025-11-25 a closed stream is not a cancellation (the request goes on in the session), but a
    stream of this transport cannot be resumed (no event store), so nobody can ever read the answer:
    a held call learns it here and is not run for nobody (`service.gateway.hold`).
    """

    def __init__(self) -> None:
        self.closed = False
        self._callbacks: list[Callable[[], object]] = []

    def on_close(self, callback: Callable[[], object]) -> None:
        """Call `callback` when the client goes away (at once if it has already gone)."""
        if self.closed:
            callback()
        else:
            self._callbacks.append(callback)

    def close(self) -> None:
        self.closed = True
        for callback in self._callbacks:
            callback()
        self._callbacks.clear()


def stream_watch(request: Request | None) -> StreamWatch | None:
    """The request's `StreamWatch`, or None when the request is not watched (no way to know; resumable)."""
    return request.scope.get(STREAM_WATCH_KEY) if request is not None else None


async def _watch_disconnect(receive: Receive, watch: StreamWatch) -> None:
    """Tell the watch when the client goes away (the request body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    watch.close()


def _log_watch_failure(watcher: asyncio.Task[None]) -> None:
    """A watcher that failed (the ASGI server's `receive` raised) leaves its request unwatched: said, not raised."""
    if not watcher.cancelled() and (error := watcher.exception()) is not None:
        logger.warning("could not watch a request's connection for its client going away: %r", error)


async def _cancel_on_close(watch: StreamWatch, scope: anyio.CancelScope) -> None:
    """Stop streaming when the client goes away."""
    closed = anyio.Event()
    watch.on_close(closed.set)
    await closed.wait()
    scope.cancel()


class GatewaySessionManager(SessionManager):
    """The SDK's session manager, with `DeferredChoiceTransport` for every new session and a shared budget.

    Every server's manager admits new sessions through one `SessionBudget` (`HOLDGATE_MAX_SESSIONS`,
    `HOLDGATE_MAX_SESSIONS_PER_GRANT`) instead of the SDK's per-manager count, and answers a refusal
    with the limit's name; a session's slot is given back when the SDK discards it, however it ended.
    Idle sessions are closed by the SDK (`session_idle_timeout`, `HOLDGATE_SESSION_IDLE_S`), which
    unwinds the session's connection and with it its upstream session and stdio child.
    """

    def __init__(self, *args: Any, defer_s: float, budget: SessionBudget, **kwargs: Any) -> None:
        kwargs["max_sessions"] = None  # the budget counts, across every server's manager
        super().__init__(*args, **kwargs)
        self.defer_s = defer_s
        self.budget = budget

    async def open_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A request that opens a session: the SDK's new-session branch (mcp 2.3.0), with the budget's answer.
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        async with self.creation_lock:
            admitted = self._admit_grant_session(requestor)
        if isinstance(admitted, Refusal):
            logger.warning("Refusing a new session: %s", admitted.message)
            await admitted.response()(scope, receive, send)
            return
        await self.serve_opening_request(admitted, scope, receive, send)

    def admit(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        admitted = self._admit_grant_session(requestor)
        return None if isinstance(admitted, Refusal) else admitted

    def _admit_grant_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | Refusal:
        """The SDK's own `_admit_session` (mcp 2.3.0), with this module's transport class and the shared budget.

        The requestor's client id is the grant (`transports.McpEndpoint` makes it so).
        """
        transport = DeferredChoiceTransport(
            mcp_session_id=uuid4().hex,
            is_json_response_enabled=self.json_response,
            event_store=self.event_store,
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout,
            defer_s=self.defer_s,
        )
        session_id = transport.mcp_session_id
        assert session_id is not None
        grant = requestor["client_id"] if requestor is not None else ""
        refusal = self.budget.admit(session_id, grant, lambda: _idle_deadline(transport))
        if refusal is not None:
            return refusal
        self.register(transport, requestor)
        return transport

    def session_discarded(self, session_id: str) -> None:
        self.budget.release(session_id)


def _idle_deadline(transport: StreamableHTTPServerTransport) -> float:
    scope = transport.idle_scope
    return scope.deadline if scope is not None else math.inf
