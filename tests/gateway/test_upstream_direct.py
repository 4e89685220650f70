"""tools/call straight over an upstream's HTTP session (`service.gateway.upstream_direct`).

The gateway writes and reads the calls to a 2025-era Streamable HTTP upstream itself; these tests
hold it to what the SDK's client did: plain JSON answers and SSE streams, tool errors, a stream
the upstream closes mid-call and the gateway resumes, and the SSE format's corners. The upstream
is the SDK's own `MCPServer` (tests/support/sdk_upstream.py); server-everything over HTTP is in
test_http_upstream.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from mcp import MCPError

from service.gateway.upstream_direct import SseEvent, sse_events
from tests.support.harness import audit_events, free_port, run_gateway, text_of
from tests.support.sdk_upstream import http_peer, sdk_upstream_command

POLICY = {"version": "1", "default": "allow"}


def sdk_upstream(mode: str) -> contextlib.AbstractAsyncContextManager[str]:
    """tests/support/sdk_upstream.py in `mode` (json | resumable); yields its MCP URL."""
    port = free_port()
    return http_peer(sdk_upstream_command(port, mode), port)


async def test_plain_json_answers_pass_through_and_the_sdk_client_is_not_used(tmp_path):
    async with (
        sdk_upstream("json") as url,
        run_gateway(tmp_path, policy=POLICY, servers={"sdk": {"url": url}}) as gw,
        gw.session("sdk") as session,
    ):
        first = await session.call_tool("request-id", {})
        second = await session.call_tool("request-id", {})
        failed = await session.call_tool("fail", {"message": "disk full"})
    # The ids the upstream saw are the direct path's own (the SDK's client numbers its requests 0, 1, …).
    assert text_of(first).startswith("holdgate-") and text_of(second).startswith("holdgate-")
    assert text_of(first) != text_of(second)
    assert failed.is_error and "disk full" in text_of(failed)
    await gw.state.audit.flush()
    outcomes = {e.tool: e.outcome for e in await audit_events(gw)}
    assert outcomes == {"request-id": "ok", "fail": "tool_error"}


async def test_a_stream_the_upstream_closes_mid_call_is_resumed(tmp_path):
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async with (
        sdk_upstream("resumable") as url,
        run_gateway(tmp_path, policy=POLICY, servers={"sdk": {"url": url}}) as gw,
        gw.session("sdk") as session,
    ):
        result = await session.call_tool("poll", {"wait": 0.3}, progress_callback=on_progress)
        after = await session.call_tool("request-id", {})
    assert not result.is_error and text_of(result) == "polled for 0.3s"
    assert progress == [(1, "started"), (2, "done")], "progress from before and after the stream was cut"
    assert text_of(after).startswith("holdgate-"), "the session goes on"


async def test_an_unknown_tool_is_the_upstreams_own_answer(tmp_path):
    async with (
        sdk_upstream("json") as url,
        run_gateway(tmp_path, policy=POLICY, servers={"sdk": {"url": url}}) as gw,
        gw.session("sdk") as session,
    ):
        try:
            result = await session.call_tool("no-such-tool", {})
        except MCPError as exc:  # an upstream may answer with a JSON-RPC error ...
            assert "no-such-tool" in exc.error.message or "Unknown tool" in exc.error.message
        else:  # ... or with a tool error; either way it is the upstream's, passed on
            assert result.is_error and "no-such-tool" in text_of(result)


# -- the SSE reader ---------------------------------------------------------------------------------


class Chunks:
    """What `sse_events` reads from aiohttp: a body arriving in the given pieces."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def events(*chunks: bytes, max_size: int = 1 << 20) -> list[SseEvent]:
    return [event async for event in sse_events(Chunks(*chunks), max_size)]


async def test_sse_lines_may_end_in_lf_crlf_or_cr_and_split_anywhere():
    body = b'id: 1\r\nevent: message\r\ndata: {"a":\r\n\r\nid: 2\rdata: x\r\rdata: y\n\n'
    whole = await events(body)
    assert whole == [
        SseEvent("message", '{"a":', "1", None),
        SseEvent("message", "x", "2", None),
        SseEvent("message", "y", None, None),
    ]
    one_byte_at_a_time = await events(*(body[i : i + 1] for i in range(len(body))))
    assert one_byte_at_a_time == whole


async def test_sse_comments_multi_line_data_retry_and_utf8_split_across_chunks():
    text = ": ping\n\ndata: first\ndata:second\nretry: 250\nid: 7\n\ndata: café\n\n".encode()
    cut = text.index("é".encode()) + 1  # inside the two bytes of é
    assert await events(text[:cut], text[cut:]) == [
        SseEvent("message", "first\nsecond", "7", 250),
        SseEvent("message", "café", None, None),
    ]


async def test_an_sse_event_cut_off_by_the_end_of_the_stream_is_dropped():
    assert await events(b"data: complete\n\ndata: half") == [SseEvent("message", "complete", None, None)]


async def test_an_sse_event_over_the_size_limit_fails_the_stream():
    with pytest.raises(MCPError, match="exceeded 64 bytes"):
        await events(b"data: " + b"x" * 100 + b"\n\n", max_size=64)
    with pytest.raises(MCPError, match="exceeded 64 bytes"):
        await events(*([b"data: " + b"y" * 30 + b"\n"] * 4), max_size=64)
