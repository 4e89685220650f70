"""MCP client sessions to upstream servers: connect, stay alive, report death, close.

One `UpstreamClient` is one MCP session with one upstream (a stdio child process or a
Streamable HTTP endpoint). It owns nothing about policy and nothing about the downstream
side: whatever the upstream asks of its client (elicitation, sampling, roots) or tells it
(logging, list_changed, resource updates) goes to an `UpstreamListener` that the gateway
plugs in, so routing to the right downstream session lives in one place (`proxy.py`).

The SDK's transports and `ClientSession` are async context managers that must be entered
and left in the same task, so each client runs them in a task of its own and hands the
ready session out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload

import httpx2
import mcp_types as types
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.session import ClientRequestContext
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    LOG_LEVEL_META_KEY,
    METHOD_NOT_FOUND,
    PROTOCOL_VERSION_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from service import __version__, logcontext
from service.background import cancel_and_wait
from service.gateway.mcp_compat import TransportStreams, dispatcher_closed, send_unchecked
from service.gateway.servers import HttpServerSpec, ServerSpec, StdioServerSpec
from service.gateway.upstream_direct import (
    DirectToolCalls,
    HttpSession,
    NotDirect,
    ProgressCallback,
    SessionLost,
    direct_calls_for,
    streamable_http_session,
)
from service.gateway.upstream_http import mcp_http_client

logger = logging.getLogger(__name__)

CLIENT_INFO = types.Implementation(name="holdgate", version=__version__)

ENVELOPE_META_KEYS = frozenset(
    {PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY, LOG_LEVEL_META_KEY}
)
"""The 2026-07-28 per-request envelope in `_meta`: it describes the downstream client's request to holdgate,
and a handshake-era (2025) upstream session refuses any request that carries it."""

P = TypeVar("P", bound=types.RequestParams)

RELATED_TASK_META_KEY = "io.modelcontextprotocol/related-task"

CLOSE_GRACE_S = 5.0
"""How long `UpstreamClient.aclose` lets the session close on its own (the stdio child told to end) before it
cancels it."""


class UpstreamUnavailable(MCPError):
    """The upstream could not be reached or died; the message names the server."""

    def __init__(self, server: str, why: str) -> None:
        super().__init__(code=INTERNAL_ERROR, message=f"upstream server '{server}' is unavailable: {why}")
        self.server = server


class UpstreamListener(Protocol):
    """What the gateway does with requests and notifications an upstream sends its client."""

    async def on_elicit(self, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData: ...

    async def on_sampling(
        self, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData: ...

    async def on_list_roots(self) -> types.ListRootsResult | types.ErrorData: ...

    async def on_notification(self, notification: types.ServerNotification) -> None: ...


@dataclass(frozen=True, slots=True)
class UpstreamInfo:
    """What the upstream said about itself at initialize."""

    server_info: types.Implementation
    capabilities: types.ServerCapabilities
    instructions: str | None
    protocol_version: str


def resolve_command(command: str, cwd: str | None, config_dir: Path) -> str:
    """`python` means this interpreter; a relative path is relative to the config's project root."""
    if command in {"python", "python3"}:
        return sys.executable
    if os.sep in command and not os.path.isabs(command):
        base = Path(cwd) if cwd else config_dir.parent
        return str((base / command).resolve())
    return shutil.which(command) or command


class UpstreamClient:
    """One live MCP client session to one upstream server."""

    def __init__(
        self,
        spec: ServerSpec,
        *,
        listener: UpstreamListener | None,
        config_dir: Path,
        connect_timeout: float = 30.0,
        connections: int | None = None,
        modern_only: bool = False,
    ) -> None:
        """`connections`: the pool of the direct `tools/call` path on an HTTP session; None keeps calls on
        the SDK's client (one-off sessions that only list tools). `modern_only`: the upstream is known to refuse
        `initialize` (an earlier connection learned it): discover at once."""
        self.spec = spec
        self._connections = connections
        self.listener = listener
        self._config_dir = config_dir
        self._connect_timeout = connect_timeout
        self._session: ClientSession | None = None
        self.info: UpstreamInfo | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._http: HttpSession | None = None
        self._direct: DirectToolCalls | None = None
        self.modern_only = modern_only
        """The upstream refused `initialize` (it speaks 2026-07-28 only): connect with `server/discover` and
        send stateless requests. Learned on the first connection; a refused handshake locks that connection
        into the handshake era, so the second connection is a new one."""
        self._handshake_refused = False
        self.connection_id = secrets.token_urlsafe(12)
        """Names this connection among all of holdgate's (the tasks the upstream makes live on it)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        """False once the transport closed (child exited, HTTP session gone) or we closed it."""
        if self._session is None or self._closing.is_set() or self._error is not None:
            return False
        return not dispatcher_closed(self._session)

    @property
    def session(self) -> ClientSession:
        if self._session is None or not self.alive:
            raise UpstreamUnavailable(self.name, "not connected")
        return self._session

    async def start(self) -> UpstreamInfo:
        """Connect and initialize (or, with an upstream that refuses the handshake, discover); raises
        `UpstreamUnavailable` with the reason on failure."""
        try:
            return await self._start()
        except UpstreamUnavailable:
            if not self._handshake_refused or self.modern_only:
                raise
        logger.info("upstream %s refused initialize; connecting in the stateless 2026-07-28 form", self.name)
        self.modern_only = True
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._error = None
        self._session = None
        self.info = None
        return await self._start()

    async def _start(self) -> UpstreamInfo:
        if (missing := self._missing_command()) is not None:
            raise UpstreamUnavailable(self.name, missing)
        # The session outlives the call that opened it: its lines are not that call's.
        self._task = asyncio.create_task(self._run(), name=f"upstream:{self.name}", context=logcontext.detached())
        try:
            await asyncio.wait_for(self._ready.wait(), self._connect_timeout)
        except TimeoutError:
            await self.aclose()
            why = f"no answer to initialize within {self._connect_timeout:g}s"
            raise UpstreamUnavailable(self.name, why) from None
        if self._error is not None or self.info is None:
            await self.aclose()
            raise UpstreamUnavailable(self.name, _describe(self._error))
        return self.info

    def _missing_command(self) -> str | None:
        """Why a stdio server's command cannot be started, in words that name it and where it is configured.

        Without this the reason is the OS's "[Errno 2] No such file or directory" from deep in the SDK.
        """
        spec = self.spec
        if not isinstance(spec, StdioServerSpec):
            return None
        command = resolve_command(spec.command, spec.cwd, self._config_dir)
        if shutil.which(command, path=spec.env.get("PATH")) is not None:
            return None
        where = f" (resolved to {command})" if command != spec.command else " (searched PATH)"
        problem = "is not executable" if os.path.exists(command) else "was not found"
        return f"its command {spec.command!r}{where} {problem}: check servers.json, mcpServers.{self.name}.command"

    async def aclose(self) -> None:
        """Close the session and, for stdio, end the child process: it has `CLOSE_GRACE_S` to close, then it is
        cancelled; either way it has ended when this returns, also when the caller is cancelled meanwhile (whose
        cancel is raised then, not swallowed)."""
        self._closing.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait({task}, timeout=CLOSE_GRACE_S)
        finally:
            with suppress(Exception):  # the run task logs its own failure
                await cancel_and_wait(task)

    async def _run(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                read, write = await self._open_transport(stack)
                session = await stack.enter_async_context(
                    ClientSession(
                        read,
                        write,
                        elicitation_callback=self._on_elicit,
                        sampling_callback=self._on_sampling,
                        list_roots_callback=self._on_list_roots,
                        message_handler=self._on_message,
                        client_info=CLIENT_INFO,
                    )
                )
                self.info = await self._handshake(session)
                if isinstance(self.spec, HttpServerSpec) and self._http and self._connections is not None:
                    self._direct = direct_calls_for(
                        self._http, dict(self.spec.headers), self.info.protocol_version, connections=self._connections
                    )
                    if self._direct is not None:
                        stack.push_async_callback(self._direct.aclose)
                self._session = session
                self._ready.set()
                await self._closing.wait()
        except BaseException as exc:
            self._error = exc
            if not isinstance(exc, asyncio.CancelledError):
                logger.warning("upstream %s: session ended: %s", self.name, _describe(exc))
        finally:
            self._ready.set()

    async def _handshake(self, session: ClientSession) -> UpstreamInfo:
        """`initialize`, or `server/discover` with an upstream known to refuse the handshake."""
        if self.modern_only:
            discovered = await session.discover()
            return UpstreamInfo(
                server_info=session.server_info or types.Implementation(name=self.name, version=""),
                capabilities=discovered.capabilities,
                instructions=discovered.instructions,
                protocol_version=str(session.protocol_version),
            )
        try:
            result = await session.initialize()
        except MCPError as exc:
            self._handshake_refused = refuses_handshake(exc)
            raise
        return UpstreamInfo(
            server_info=result.server_info,
            capabilities=result.capabilities,
            instructions=result.instructions,
            protocol_version=str(result.protocol_version),
        )

    async def _open_transport(self, stack: AsyncExitStack) -> TransportStreams:
        """The SDK transport for this spec, entered on `stack`; an HTTP client it needs is closed after it."""
        spec = self.spec
        if isinstance(spec, StdioServerSpec):
            params = StdioServerParameters(
                command=resolve_command(spec.command, spec.cwd, self._config_dir),
                args=list(spec.args),
                env=dict(spec.env) or None,
                cwd=spec.cwd or str(self._config_dir.parent.resolve()),
            )
            return await stack.enter_async_context(stdio_client(params))
        if isinstance(spec, HttpServerSpec):
            http_client = mcp_http_client(dict(spec.headers))
            stack.push_async_callback(http_client.aclose)  # runs after the transport below has exited
            streams, self._http = await stack.enter_async_context(streamable_http_session(spec.url, http_client))
            return streams
        raise TypeError(f"unknown server spec {type(spec).__name__}")

    # -- calls ------------------------------------------------------------------------------------

    @overload
    def params_for(self, params: P) -> P: ...

    @overload
    def params_for(self, params: None) -> None: ...

    def params_for(self, params: P | None) -> P | None:
        """A downstream request's `params` as this upstream's era takes them.

        A 2026-era client's request carries the envelope (`ENVELOPE_META_KEYS`); the upstream session is
        a handshake-era one (holdgate's client initializes), which refuses it, so the envelope stays
        here. The rest of `_meta` (a progress token, a related task) goes on.
        """
        if params is None or not params.meta:
            return params
        if self.info is not None and self.info.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return params
        meta = {key: value for key, value in params.meta.items() if key not in ENVELOPE_META_KEYS}
        if len(meta) == len(params.meta):
            return params
        return params.model_copy(update={"meta": meta or None})

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """One `tools/call`, its `CallToolResult` as JSON (a proxy passes results through untouched).

        `arguments` go as given: None sends none, `{}` sends `{}` (TypeScript SDK 1.x servers refuse a
        call without `arguments` to a tool that has an input schema, even an empty one).

        On a 2025-era HTTP session the request goes straight over the session's connections
        (`upstream_direct`); otherwise, and when the upstream redirects it, through the SDK's client.
        The result is a handshake-era one, so it is complete: it says so (`resultType`), as a 2026-era
        client must be told; the downstream's serialisation drops the key for a 2025-era client.
        """
        return {**await self._call_tool(name, arguments, progress), "resultType": "complete"}

    async def _call_tool(
        self, name: str, arguments: dict[str, Any] | None, progress: ProgressCallback | None
    ) -> dict[str, Any]:
        direct = self._direct
        if direct is not None:
            try:
                return await call_upstream(self, lambda _session: direct.call_tool(name, arguments, progress))
            except SessionLost as exc:
                self._lose(exc)
                raise UpstreamUnavailable(self.name, exc.why) from exc
            except NotDirect as exc:
                logger.info("upstream %s redirected a call (%s): sending it through the SDK's client", self.name, exc)
        request = types.CallToolRequest(params=types.CallToolRequestParams(name=name, arguments=arguments))
        result = await call_upstream(
            self, lambda session: session.send_request(request, types.CallToolResult, progress_callback=progress)
        )
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    @property
    def does_tasks(self) -> bool:
        """Whether the upstream declared 2025-11-25 task support for `tools/call` (the only tasks holdgate passes
        through: a 2026-era upstream's tasks extension is not spoken on this side)."""
        info = self.info
        if info is None or info.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return False
        tasks = info.capabilities.tasks
        return (
            tasks is not None
            and tasks.requests is not None
            and tasks.requests.tools is not None
            and (tasks.requests.tools.call is not None)
        )

    async def request_unchecked(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """A request whose answer the SDK does not check (`tasks/*`, a task-augmented `tools/call`): as sent."""
        return await call_upstream(self, lambda session: send_unchecked(session, method, params))

    async def call_tool_as_task(
        self, name: str, arguments: dict[str, Any] | None, ttl_ms: int | None
    ) -> dict[str, Any]:
        """A task-augmented `tools/call` (2025-11-25): the upstream's `CreateTaskResult` (`{"task": …}`), or its
        `CallToolResult` when it answered the call at once."""
        params: dict[str, Any] = {"name": name, "task": {} if ttl_ms is None else {"ttl": ttl_ms}}
        if arguments is not None:
            params["arguments"] = arguments
        return await self.request_unchecked("tools/call", params)

    async def call_tool_following_task(self, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        """A call to a tool the upstream runs only as a task (`taskSupport: "required"`) made for a caller that did
        not ask for one (an approved held call, a 2026-era request without the tasks extension): the call is made as
        a task and `tasks/result` (which blocks until the task ends) gives what the call returns. A JSON-RPC error
        of the task raises `MCPError`, as the call would have."""
        created = await self.call_tool_as_task(name, arguments, None)
        task = created.get("task")
        if not isinstance(task, dict) or not isinstance(task.get("taskId"), str):
            return {**created, "resultType": "complete"}  # answered at once
        result = await self.request_unchecked("tasks/result", {"taskId": task["taskId"]})
        meta = {k: v for k, v in (result.get("_meta") or {}).items() if k != RELATED_TASK_META_KEY}
        result = {k: v for k, v in result.items() if k != "_meta"}
        return {**result, **({"_meta": meta} if meta else {}), "resultType": "complete"}

    def _lose(self, exc: SessionLost) -> None:
        """The session stopped answering: mark it dead (the next call starts a new one) and close it."""
        if self._error is None:
            logger.warning("upstream %s: session lost: %s", self.name, exc.why)
            self._error = exc
        self._closing.set()

    # Callbacks from the SDK: forward to the listener, or refuse when nobody listens.

    async def _on_elicit(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        if self.listener is None:
            return _no_client(self.name, "elicitation")
        return await self.listener.on_elicit(params)

    async def _on_sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        if self.listener is None:
            return _no_client(self.name, "sampling")
        return await self.listener.on_sampling(params)

    async def _on_list_roots(self, context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
        if self.listener is None:
            return types.ListRootsResult(roots=[])
        return await self.listener.on_list_roots()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            logger.debug("upstream %s: transport error: %s", self.name, _describe(message))
            return
        if self.listener is not None:
            await self.listener.on_notification(message)


T = TypeVar("T")


def refuses_handshake(exc: MCPError) -> bool:
    """Whether an error answering `initialize` says the upstream speaks only the stateless revisions: -32022
    naming no handshake-era version it supports, or -32601 (no such method)."""
    if exc.error.code == METHOD_NOT_FOUND:
        return True
    if exc.error.code != UNSUPPORTED_PROTOCOL_VERSION:
        return False
    data = exc.error.data if isinstance(exc.error.data, dict) else {}
    supported = data.get("supported")
    return isinstance(supported, list) and not any(v in HANDSHAKE_PROTOCOL_VERSIONS for v in supported)


async def call_upstream(client: UpstreamClient, request: Callable[[ClientSession], Awaitable[T]]) -> T:
    """Run one request on `client`, turning a dead connection into an error that names the server."""
    session = client.session
    try:
        return await request(session)
    except MCPError as exc:
        if exc.error.code == CONNECTION_CLOSED or not client.alive:
            raise UpstreamUnavailable(client.name, "connection closed") from exc
        raise
    except (OSError, httpx2.HTTPError) as exc:
        raise UpstreamUnavailable(client.name, _describe(exc)) from exc


def _no_client(server: str, what: str) -> types.ErrorData:
    return types.ErrorData(code=INTERNAL_ERROR, message=f"no downstream client can answer {what} for server '{server}'")


def _describe(exc: BaseException | None) -> str:
    """A one-line reason, unwrapping exception groups (anyio task groups raise them)."""
    if exc is None:
        return "unknown error"
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, MCPError) else text
