"""`holdgate bridge`: a stdio ↔ Streamable HTTP relay for clients that only launch stdio servers.

Claude Desktop and other stdio-only clients start `holdgate bridge --url URL` as if it were an MCP
server. The bridge reads JSON-RPC messages from stdin and relays them to holdgate's `/mcp/{server}`
endpoint with the agent's grant token (`Authorization: Bearer …`), and relays everything the endpoint
sends back to stdout: responses, notifications (progress, logging, list_changed, cancellation) and
server-to-client requests (elicitation, sampling), whose answers travel back the same way.

What it owns: moving messages, and the HTTP headers the protocol needs on each POST. It is not an MCP
session: it never answers, drops or rewrites a message, so whatever protocol the client and holdgate
agree on passes through unchanged. Because the SDK's `ClientSession` is not in the loop, the bridge
stamps the per-request headers that `ClientSession` would have stamped (see `HeaderStamper`).

Invariants: stdout carries protocol only (`stdio_server` diverts fd 1 to stderr while it runs); logs
go to stderr; the token is never logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import anyio
import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    jsonrpc_message_adapter,
)

from service.gateway.mcp_compat import ReadStream, WriteStream
from service.gateway.upstream_http import KeepAliveTransport, mcp_http_client

logger = logging.getLogger(__name__)

TOKEN_ENV = "HOLDGATE_TOKEN"
ERROR_TEXT_LIMIT = 2000
"""Characters of an HTTP error's text the bridge passes on (a proxy's error page can be long)."""


class BridgeError(RuntimeError):
    """The bridge could not keep relaying (holdgate unreachable, connection lost); the message says why."""


class HeaderStamper:
    """Works out, from the relayed messages alone, the HTTP headers each client POST must carry.

    - 2025-11-25 era (initialize handshake): every message after `initialize` carries
      `MCP-Protocol-Version` with the version the server answered.
    - 2026-07-28 era (stateless, per-request `_meta` envelope): each request carries its envelope's
      version, `Mcp-Method`, `Mcp-Name` for tools/call, prompts/get and resources/read, and the
      `Mcp-Param-*` headers that the tool's input schema asks for via `x-mcp-header` (learnt from the
      tools/list results that pass through). The server rejects a request whose headers and body differ.
    """

    def __init__(self) -> None:
        self._negotiated: str | None = None
        self._initialize_ids: set[RequestId] = set()
        self._tools_list_ids: set[RequestId] = set()
        self._param_header_maps: dict[str, dict[tuple[str, ...], str]] = {}

    def outbound(self, message: JSONRPCMessage) -> ClientMessageMetadata | None:
        """Metadata for a client → server message (None when it needs no extra headers)."""
        headers = self._headers_for(message)
        return ClientMessageMetadata(headers=headers) if headers else None

    def inbound(self, message: JSONRPCMessage) -> None:
        """Learn from a server → client message: the negotiated version, tools' header annotations."""
        if not isinstance(message, JSONRPCResponse | JSONRPCError):
            return
        if message.id in self._initialize_ids:
            self._initialize_ids.discard(message.id)
            if isinstance(message, JSONRPCResponse):
                version = message.result.get("protocolVersion")
                self._negotiated = version if isinstance(version, str) else None
        elif message.id in self._tools_list_ids:
            self._tools_list_ids.discard(message.id)
            if isinstance(message, JSONRPCResponse):
                self._learn_param_headers(message.result.get("tools"))

    def _headers_for(self, message: JSONRPCMessage) -> dict[str, str]:
        if isinstance(message, JSONRPCRequest):
            if message.method == "initialize":
                # A new handshake: the server answers with the version to use from now on.
                self._initialize_ids.add(message.id)
                self._negotiated = None
                return {}
            if message.method == "tools/list":
                self._tools_list_ids.add(message.id)
        if isinstance(message, JSONRPCRequest | JSONRPCNotification):
            params = message.params or {}
            meta = params.get("_meta")
            version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, Mapping) else None
            if isinstance(version, str):
                return self._envelope_headers(message.method, params, version)
        return {MCP_PROTOCOL_VERSION_HEADER: self._negotiated} if self._negotiated else {}

    def _envelope_headers(self, method: str, params: Mapping[str, Any], version: str) -> dict[str, str]:
        headers = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: method}
        name_key = NAME_BEARING_METHODS.get(method)
        if name_key is not None and isinstance(name := params.get(name_key), str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
        if method == "tools/call" and isinstance(name := params.get("name"), str):
            header_map = self._param_header_maps.get(name)
            arguments = params.get("arguments")
            if header_map and isinstance(arguments, Mapping):
                headers.update(mcp_param_headers(header_map, arguments))
        return headers

    def _learn_param_headers(self, tools: Any) -> None:
        if not isinstance(tools, list):
            return
        for tool in tools:
            if not isinstance(tool, Mapping) or not isinstance(name := tool.get("name"), str):
                continue
            schema = tool.get("inputSchema")
            if find_invalid_x_mcp_header(schema) is None and (header_map := x_mcp_header_map(schema)):
                self._param_header_maps[name] = header_map
            else:
                self._param_header_maps.pop(name, None)


def _auth_headers(token: str | None) -> dict[str, str]:
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None:
        logger.warning("no token given (--token or %s): holdgate will refuse the connection", TOKEN_ENV)
        return {}
    return {"Authorization": f"Bearer {token}"}


class ErrorTextTransport(httpx2.AsyncBaseTransport):
    """Keeps the text of an HTTP error that is not a JSON-RPC error, so that the client can show it; answers
    a POST that cannot reach holdgate at all with a JSON-RPC error saying so.

    The SDK's transport shows a JSON-RPC error found in an error response's body; any other body (a
    reverse proxy's page, a framework's `{"detail": …}`) becomes a bare "Not Found" or "Server returned
    an error response". This turns such an answer to a POST into a JSON-RPC error that names the HTTP
    status and carries the text, and says the same on stderr.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            if request.method != "POST":
                raise
            # Holdgate is not there (not started, restarting, wrong port): answer the client's request with
            # that, at once, instead of leaving it to its own timeout; the next request tries again.
            where = str(request.url)
            logger.error("cannot reach holdgate at %s: %s", where, exc)
            message = f"cannot reach holdgate at {where}: {exc or type(exc).__name__}"
            unreachable = {"code": INTERNAL_ERROR, "message": message}
            return httpx2.Response(502, json={"jsonrpc": "2.0", "id": None, "error": unreachable}, request=request)
        if response.status_code < 400 or request.method != "POST":
            return response
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
        status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        error = _jsonrpc_error_in(body)
        if error is not None:
            logger.error("holdgate answered %s: %s", status, error.error.message)
            return httpx2.Response(response.status_code, headers=headers, content=body, request=request)
        text = body.decode("utf-8", errors="replace").strip()[:ERROR_TEXT_LIMIT]
        logger.error("holdgate answered %s: %s", status, text or "(no text)")
        code = METHOD_NOT_FOUND if response.status_code == 404 else INTERNAL_ERROR
        message = f"holdgate answered {status}: {text}" if text else f"holdgate answered {status}"
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
        return httpx2.Response(
            response.status_code,
            headers=[*headers, ("content-type", "application/json")],
            json={"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}},
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


_BODY_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})
"""Headers of the body as it came, which no longer hold for the body the bridge passes on."""


def _jsonrpc_error_in(body: bytes) -> JSONRPCError | None:
    try:
        message = jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValueError:
        return None
    return message if isinstance(message, JSONRPCError) else None


async def _log_refusals(response: httpx2.Response) -> None:
    """Point at the token when holdgate refuses it (the refusal's own text reaches the client and stderr
    through `ErrorTextTransport`)."""
    if response.status_code in (401, 403):
        logger.error(
            "holdgate refused the grant token (HTTP %s): check --token or %s",
            response.status_code,
            TOKEN_ENV,
        )


async def _relay_client_to_server(
    stdin: ReadStream[SessionMessage | Exception],
    stdout: WriteStream[SessionMessage],
    http: WriteStream[SessionMessage],
    stamper: HeaderStamper,
) -> None:
    """stdin → HTTP, until the client closes stdin (its way of stopping a stdio server)."""
    async for item in stdin:
        if isinstance(item, Exception):
            # JSON-RPC's answer to a line that is not a message: a parse error with a null id.
            logger.warning("stdin line is not a JSON-RPC message: %s", item)
            error = ErrorData(code=PARSE_ERROR, message="Parse error: not a JSON-RPC message")
            await stdout.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error)))
            continue
        await http.send(SessionMessage(item.message, metadata=stamper.outbound(item.message)))
    logger.info("stdin closed: stopping the bridge")


async def _relay_server_to_client(
    http: ReadStream[SessionMessage | Exception],
    stdout: WriteStream[SessionMessage],
    stamper: HeaderStamper,
) -> None:
    """HTTP → stdout, for as long as the HTTP transport runs."""
    async for item in http:
        if isinstance(item, Exception):
            logger.warning("message from holdgate could not be read: %s", item)
            continue
        stamper.inbound(item.message)
        await stdout.send(SessionMessage(item.message))


async def run_bridge(url: str, token: str | None) -> None:
    """Relay MCP between this process's stdio and holdgate's Streamable HTTP endpoint at `url`.

    Returns when the client closes stdin. The token falls back to the `HOLDGATE_TOKEN` environment
    variable. A request that cannot reach holdgate is answered with an error saying so (the bridge goes
    on, so the next request works once holdgate is back); raises BridgeError when the transport fails
    in any other way.
    """
    headers = _auth_headers(token)
    logger.info("bridging stdio to %s", url)
    try:
        async with stdio_server() as (stdin, stdout):  # noqa: SIM117 - must outlive the inner block
            # stdio_server waits for its stdout writer, which ends only when `stdout` is closed.
            async with (
                stdout,
                mcp_http_client(
                    headers,
                    event_hooks={"response": [_log_refusals]},
                    transport=ErrorTextTransport(KeepAliveTransport()),
                ) as client,
                streamable_http_client(url, http_client=client) as (http_read, http_write),
                anyio.create_task_group() as tg,
            ):
                stamper = HeaderStamper()
                tg.start_soon(_relay_server_to_client, http_read, stdout, stamper)
                await _relay_client_to_server(stdin, stdout, http_write, stamper)
                tg.cancel_scope.cancel()
    except Exception as exc:
        cause = _transport_error_in(exc)
        if cause is None:
            raise
        logger.error("cannot reach holdgate at %s: %s", url, cause)
        raise BridgeError(f"cannot reach holdgate at {url}: {cause}") from cause


def _transport_error_in(exc: BaseException) -> httpx2.TransportError | None:
    """The first HTTP transport failure in `exc`, looking inside (nested) task-group exception groups."""
    if isinstance(exc, httpx2.TransportError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _transport_error_in(inner)) is not None:
                return found
    return None
