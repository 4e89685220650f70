"""What `service.gateway.mcp_compat` relies on in the pinned `mcp` SDK: run this first after an SDK upgrade.

Each test pins one thing the compatibility module takes from the SDK's private parts: the private
methods and attributes exist with the signatures it calls them with, none of its own names shadows
one of the SDK's, the SDK still calls its hooks (a real session manager over HTTP, a real client),
and the private stream factory and tracer shim still work as the gateway uses them.
"""

from __future__ import annotations

import inspect
import socket
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server, ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.message import SessionMessage
from opentelemetry import trace
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from service.gateway import mcp_compat
from service.gateway.mcp_compat import (
    ReadStream,
    SdkSpansWhenSeen,
    SessionManager,
    SessionTransport,
    TransportStreams,
    WriteStream,
    create_context_streams,
    dispatcher_closed,
    only_seen_sdk_spans,
    resync_tracer,
    session_connection,
    session_initialized,
)

TRANSPORT_PRIVATES = {
    "_handle_post_request": ["scope", "request", "receive", "send"],
    "_validate_request_headers": ["request", "send"],
    "_check_content_type": ["request"],
    "_create_error_response": ["error_message", "status_code", "error_code", "headers"],
    "_create_json_response": ["response_message", "status_code", "headers"],
    "_create_session_message": ["message", "request", "request_id", "protocol_version"],
    "_create_event_data": ["event_message"],
    "_clean_up_memory_streams": ["request_id"],
}
MANAGER_PRIVATES = {
    "_handle_stateful_request": ["scope", "receive", "send"],
    "_admit_session": ["requestor"],
    "_serve_opening_request": ["http_transport", "scope", "receive", "send"],
    "_discard_session": ["session_id", "transport"],
}


@pytest.mark.parametrize(
    ("cls", "name", "parameters"),
    [(StreamableHTTPServerTransport, name, params) for name, params in TRANSPORT_PRIVATES.items()]
    + [(StreamableHTTPSessionManager, name, params) for name, params in MANAGER_PRIVATES.items()],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_the_private_methods_relied_on_exist_with_their_signatures(cls: type, name: str, parameters: list[str]) -> None:
    method = getattr(cls, name)
    assert list(inspect.signature(method).parameters)[1:] == parameters
    # The SDK calls the ones the compat classes override as hooks: same kind (coroutine or not) as ours.
    for compat in (SessionTransport, SessionManager):
        if name in vars(compat):
            assert inspect.iscoroutinefunction(vars(compat)[name]) == inspect.iscoroutinefunction(method)


def test_the_private_attributes_relied_on_exist() -> None:
    transport = SessionTransport(mcp_session_id="s1")
    assert transport.request_streams == {} and transport.request_streams is transport._request_streams
    assert transport.session_writer is None  # set by connect()
    assert transport.resumable is False
    manager = SessionManager(app=Server("compat"))
    assert manager.sessions == {} and manager.sessions is manager._server_instances
    assert manager._session_owners == {}
    assert isinstance(manager.creation_lock, anyio.Lock)


async def test_the_client_session_privates_send_unchecked_uses_exist() -> None:
    """`send_unchecked` stamps as the session does (`_stamp(data, opts)`) and sends through its dispatcher's
    `send_raw_request(method, params, opts)` (the passed-through tasks; end to end in tests/tasks/test_passthrough)."""
    to_server, from_client = anyio.create_memory_object_stream[Any](1)
    to_client, from_server = anyio.create_memory_object_stream[Any](1)
    async with to_server, from_client, to_client, from_server:
        session = ClientSession(from_server, to_server)
        assert list(inspect.signature(session._stamp).parameters) == ["data", "opts"]
        send = session._dispatcher.send_raw_request
        assert list(inspect.signature(send).parameters)[:3] == ["method", "params", "opts"]
        assert inspect.iscoroutinefunction(send)


def test_the_compat_names_shadow_nothing_of_the_sdk() -> None:
    transport = StreamableHTTPServerTransport(mcp_session_id="s1")
    manager = StreamableHTTPSessionManager(app=Server("compat"))
    for compat, sdk in ((SessionTransport, transport), (SessionManager, manager)):
        ours = {name for name in vars(compat) if not name.startswith("_")}
        assert ours and not {name for name in ours if hasattr(sdk, name)}


async def test_the_sdks_span_middleware_is_wrapped_and_still_runs_for_a_request_with_meta() -> None:
    """Every SDK `Server` carries `OpenTelemetryMiddleware` (mcp 2.3.0); the gateway wraps it, and a request whose
    `_meta` carries anything (a client's `traceparent`) still goes through it."""
    from mcp.server._otel import OpenTelemetryMiddleware

    server = Server("compat")
    assert any(isinstance(item, OpenTelemetryMiddleware) for item in server.middleware)
    only_seen_sdk_spans(server)
    assert len([item for item in server.middleware if isinstance(item, SdkSpansWhenSeen)]) == 1
    assert not any(isinstance(item, OpenTelemetryMiddleware) for item in server.middleware)

    seen: list[str] = []

    class Spans(OpenTelemetryMiddleware):
        async def __call__(self, ctx: Any, call_next: Any) -> Any:
            seen.append(ctx.method)
            return await call_next(ctx)

    class Ctx:
        method = "tools/call"
        meta: dict[str, Any] | None = None

    async def answer(ctx: Any) -> str:
        return "answer"

    spans = SdkSpansWhenSeen(Spans())
    bare, carrying = Ctx(), Ctx()
    carrying.meta = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "no global provider in this process"
    assert await spans(bare, answer) == "answer" and seen == [], "no global provider, no _meta: skipped"
    assert await spans(carrying, answer) == "answer" and seen == ["tools/call"], "_meta present: the SDK's span runs"


def test_the_private_stream_types_are_what_transports_yield() -> None:
    read, write = typing.get_args(TransportStreams)
    assert typing.get_origin(read) is ReadStream and typing.get_origin(write) is WriteStream
    assert set(mcp_compat.__all__) <= set(vars(mcp_compat))


async def test_the_stream_factory_carries_a_client_session_and_its_end_closes_the_dispatcher() -> None:
    to_client, client_reads = create_context_streams[SessionMessage | Exception](0)
    client_writes, from_client = create_context_streams[SessionMessage](0)
    async with from_client, to_client, ClientSession(client_reads, client_writes) as session:
        assert dispatcher_closed(session) is False
        await to_client.aclose()  # the transport ends (a child exited, an HTTP session went away)
        with anyio.fail_after(5):
            while not dispatcher_closed(session):
                await anyio.sleep(0.01)
    await resync_tracer()  # a shielded checkpoint: returns, changes nothing


class RecordingTransport(SessionTransport):
    def __init__(self, *args: Any, seen: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen

    async def handle_post(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        self.seen.append("handle_post")
        await super().handle_post(scope, request, receive, send)


class RecordingManager(SessionManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []
        self.discarded: list[str] = []

    async def open_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append("open_session")
        await super().open_session(scope, receive, send)

    def admit(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        self.seen.append("admit")
        transport = RecordingTransport(mcp_session_id="compat-session", seen=self.seen)
        self.register(transport, requestor)
        return transport

    def session_discarded(self, session_id: str) -> None:
        self.discarded.append(session_id)


@asynccontextmanager
async def serving(manager: SessionManager) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(manager.handle_request, log_level="warning", lifespan="off", interface="asgi3")
    )
    async with manager.run(), anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        finally:
            server.should_exit = True
    sock.close()


async def test_the_sdk_calls_the_hooks_and_a_request_sees_its_sessions_connection() -> None:
    connections: list[Any] = []

    async def list_tools(ctx: ServerRequestContext, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="where", input_schema={"type": "object"})])

    async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
        connections.append(session_connection(ctx.session))
        assert session_initialized(ctx.session)  # the connection's `initialize_accepted`, read by TaskAugmentation
        return types.CallToolResult(content=[types.TextContent(type="text", text="here")])

    manager = RecordingManager(app=Server("compat", on_list_tools=list_tools, on_call_tool=call_tool))
    async with serving(manager) as url:
        with anyio.fail_after(30):
            async with streamable_http_client(url) as (read, write), ClientSession(read, write) as client:
                await client.initialize()
                result = await client.call_tool("where", {})
                assert result.content[0].text == "here"  # type: ignore[union-attr]
                assert list(manager.sessions) == ["compat-session"]
            while not manager.discarded:  # the client's DELETE ends the session
                await anyio.sleep(0.01)
    assert manager.seen[:3] == ["open_session", "admit", "handle_post"]
    assert manager.seen.count("open_session") == 1 and manager.seen.count("handle_post") >= 3
    (connection,) = connections
    assert connection is not None and connection.session_id == "compat-session"
    assert isinstance(connection.state, dict) and connection.exit_stack is not None
    assert isinstance(type(connection).initialize_accepted, property)  # what `session_initialized` reads
    # Called each time the SDK lets go of it (the DELETE, then its server task's end): `SessionBudget.release`
    # gives a slot back once.
    assert set(manager.discarded) == {"compat-session"} and manager.sessions == {}
