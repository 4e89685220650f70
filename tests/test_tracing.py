"""OpenTelemetry traces (`service.tracing`): spans of a real MCP client's call through the gateway, recorded by
the SDK's in-memory exporter, and the trace context a real HTTP upstream receives.

The test's own "agent" span stands for the client's trace: the mcp SDK's client carries it in `_meta`, so the
gateway's spans join it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from service import tracing
from service.approvals import Voter
from tests.approvals.support import PERSON_TOKENS, api, approval_policy, sha256, wait_for_decisions
from tests.support.harness import ROOT, free_port, run_gateway, servers, text_of, write_config
from tests.support.sdk_upstream import http_peer, sdk_upstream_command
from tests.test_logs import serving

ALLOWED = {"version": "1", "default": "deny", "tools": {"trace-context": {"action": "allow"}}}
HELD = {
    "version": "1",
    "default": "deny",
    "people": {"alice": {"token_sha256": sha256(PERSON_TOKENS["alice"])}},
    "tools": {"trace-context": {"action": "require_approval", "approval": {"approvers": ["alice"]}}},
}


@pytest.fixture
def traced() -> Iterator[tuple[InMemorySpanExporter, Tracer]]:
    """Tracing on for the test, into memory; the tracer is the agent's."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.installed(provider):
        yield exporter, provider.get_tracer("agent")
    provider.shutdown()


def sdk_upstream() -> contextlib.AbstractAsyncContextManager[str]:
    port = free_port()
    return http_peer(sdk_upstream_command(port, "json"), port)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_a_call_is_one_span_with_policy_and_upstream_children_and_the_upstream_gets_its_context(tmp_path, traced):
    exporter, agent = traced
    async with (
        sdk_upstream() as url,
        run_gateway(tmp_path, policy=ALLOWED, servers={"sdk": {"url": url}}) as gw,
        gw.session("sdk") as session,
    ):
        with agent.start_as_current_span("agent") as root:
            result = await session.call_tool("trace-context", {})
    received = json.loads(text_of(result))
    spans = exporter.get_finished_spans()
    [call] = by_name(spans, "holdgate tools/call")
    [policy] = by_name(spans, "holdgate policy")
    [upstream] = by_name(spans, "holdgate upstream")

    assert call.context.trace_id == root.get_span_context().trace_id, "the agent's trace goes on through holdgate"
    assert policy.parent.span_id == call.context.span_id and upstream.parent.span_id == call.context.span_id
    assert policy.context.trace_id == upstream.context.trace_id == call.context.trace_id
    assert dict(call.attributes) == {
        "holdgate.grant": "agent",
        "holdgate.server": "sdk",
        "holdgate.tool": "trace-context",
        "holdgate.verdict": "allow",
        "holdgate.rule": "trace-context",
        "holdgate.outcome": "ok",
    }
    assert received == {"header": traceparent(upstream), "meta": traceparent(upstream)}, (
        "the HTTP upstream's request carries the upstream span as its parent, as a header and in _meta"
    )
    assert not by_name(spans, "holdgate hold") and not by_name(spans, "holdgate decision")


async def test_a_held_call_has_a_hold_span_and_its_decision_change_a_span_of_its_own(tmp_path, traced):
    exporter, agent = traced
    async with (
        sdk_upstream() as url,
        run_gateway(tmp_path, policy=HELD, servers={"sdk": {"url": url}}, approval_hold_s=30) as gw,
        gw.session("sdk") as session,
    ):
        with agent.start_as_current_span("agent"):
            call = asyncio.create_task(session.call_tool("trace-context", {}))
            [decision] = await wait_for_decisions(gw)
        approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        result = await asyncio.wait_for(call, 10)
    assert approved.status_code == 200
    spans = exporter.get_finished_spans()
    [tool_call] = by_name(spans, "holdgate tools/call")
    [hold] = by_name(spans, "holdgate hold")
    [upstream] = by_name(spans, "holdgate upstream")
    [change] = by_name(spans, "holdgate decision")

    assert hold.parent.span_id == tool_call.context.span_id == upstream.parent.span_id
    assert hold.attributes["holdgate.decision_id"] == decision.id and hold.attributes["holdgate.ending"] == "approved"
    assert tool_call.attributes["holdgate.decision_id"] == decision.id
    assert tool_call.attributes["holdgate.verdict"] == "require_approval"
    assert hold.end_time <= upstream.start_time, "the upstream is called once the hold has ended"
    assert dict(change.attributes) == {
        "holdgate.decision_id": decision.id,
        "holdgate.status": "approved",
        "holdgate.via": "api",
        "holdgate.server": "sdk",
        "holdgate.tool": "trace-context",
        "holdgate.grant": "agent",
    }
    assert change.context.trace_id == tool_call.context.trace_id, "the change joins the held call's trace"
    assert change.parent.span_id == hold.context.span_id, "as a child of the hold that opened the decision"
    assert not change.links, "the REST request that approved it is not traced here: nothing to link"
    assert json.loads(text_of(result))["header"] == traceparent(upstream)


async def test_a_change_made_under_another_span_joins_the_calls_trace_and_links_to_that_span(tmp_path, traced):
    """An approver's traced request (here a span of the test's own around the service's vote, as an instrumented
    web framework would open one): the change lands in the held call's trace, and links back to that request."""
    exporter, agent = traced
    async with (
        sdk_upstream() as url,
        run_gateway(tmp_path, policy=HELD, servers={"sdk": {"url": url}}, approval_hold_s=30) as gw,
        gw.session("sdk") as session,
    ):
        with agent.start_as_current_span("agent"):
            call = asyncio.create_task(session.call_tool("trace-context", {}))
            [decision] = await wait_for_decisions(gw)
        with agent.start_as_current_span("approver request") as request:
            await gw.state.approvals.service.vote(decision.id, Voter("person", "alice"), "approve", via="api")
        await asyncio.wait_for(call, 10)
    spans = exporter.get_finished_spans()
    [hold] = by_name(spans, "holdgate hold")
    [change] = by_name(spans, "holdgate decision")
    [link] = change.links

    assert change.parent.span_id == hold.context.span_id and change.context.trace_id == hold.context.trace_id
    assert link.context.span_id == request.get_span_context().span_id
    assert link.context.trace_id != change.context.trace_id and link.attributes["holdgate.link"] == "changed_in"


@pytest.mark.parametrize("operator_socket", [False, True], ids=["cli-exports", "service-traces"])
async def test_the_cli_approving_in_another_process_puts_its_change_in_the_calls_trace(
    tmp_path, traced, operator_socket
):
    """`holdgate approve` as its own process, with the standard variables pointing at an OTLP receiver: the
    decision's change is a child of the hold span this gateway recorded. Carried out by the command on the
    database, the command exports it to the receiver; carried out by the service for the command (its operator
    socket), the service records it with its own tracing, as any change it makes."""
    exporter, agent = traced
    async with (
        otlp_receiver() as (endpoint, received),
        sdk_upstream() as url,
        run_gateway(
            tmp_path,
            policy=HELD,
            servers={"sdk": {"url": url}},
            approval_hold_s=30,
            operator_socket=operator_socket,
        ) as gw,
        gw.session("sdk") as session,
    ):
        with agent.start_as_current_span("agent"):
            call = asyncio.create_task(session.call_tool("trace-context", {}))
            [decision] = await wait_for_decisions(gw)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HOLDGATE_DATA_DIR": str(tmp_path / "data"),
            "HOLDGATE_CONFIG_DIR": str(tmp_path / "config"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        }
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "approve", decision.id, env=env, stdout=PIPE, stderr=PIPE
        )
        out, err = await asyncio.wait_for(cli.communicate(), 120)
        await asyncio.wait_for(call, 10)
    assert cli.returncode == 0, err.decode()
    assert b"approved by local-operator" in out and err == b""
    [hold] = by_name(exporter.get_finished_spans(), "holdgate hold")
    changes_exported = [span for span in otlp_spans(received) if span.name == "holdgate decision"]
    changes_recorded = [s for s in by_name(exporter.get_finished_spans(), "holdgate decision") if s.parent]
    if operator_socket:
        assert changes_exported == []
        [change] = changes_recorded
        assert change.context.trace_id == hold.context.trace_id and change.parent.span_id == hold.context.span_id
        assert change.attributes["holdgate.via"] == "cli"
    else:
        [change] = changes_exported
        assert change.trace_id == hold.context.trace_id.to_bytes(16, "big")
        assert change.parent_span_id == hold.context.span_id.to_bytes(8, "big")
        assert {a.key: a.value.string_value for a in change.attributes}["holdgate.via"] == "cli"


async def test_a_decision_opened_while_tracing_is_off_keeps_no_trace_context(tmp_path):
    assert not tracing.enabled()
    async with (
        sdk_upstream() as url,
        run_gateway(tmp_path, policy=HELD, servers={"sdk": {"url": url}}, approval_hold_s=30) as gw,
        gw.session("sdk") as session,
    ):
        call = asyncio.create_task(session.call_tool("trace-context", {}))
        [decision] = await wait_for_decisions(gw)
        row, _ = await gw.state.approvals.service.get(decision.id)
        await gw.state.approvals.service.vote(decision.id, Voter("person", "alice"), "approve", via="api")
        await asyncio.wait_for(call, 10)
    assert row.traceparent is None


async def test_with_tracing_off_nothing_is_recorded_and_the_upstream_gets_no_trace_context(tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agent = provider.get_tracer("agent")
    assert not tracing.enabled()
    async with (
        sdk_upstream() as url,
        run_gateway(tmp_path, policy=ALLOWED, servers={"sdk": {"url": url}}) as gw,
        gw.session("sdk") as session,
    ):
        with agent.start_as_current_span("agent"):
            result = await session.call_tool("trace-context", {})
    assert [span.name for span in exporter.get_finished_spans()] == ["agent"]
    assert json.loads(text_of(result))["header"] is None, "holdgate adds no traceparent header while tracing is off"


# -- the parts ----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_off_is_one_shared_null_context_and_inject_writes_nothing():
    assert not tracing.enabled()
    assert tracing.span("a") is tracing.span("b", {"x": 1})
    with tracing.span("a") as span:
        assert span is None
    carrier: dict[str, str] = {}
    tracing.inject(carrier)
    tracing.annotate(outcome="ok")
    tracing.record("x", start_ns=tracing.now_ns(), attributes={})
    assert carrier == {} and tracing.now_ns() == 0


@pytest.mark.unit
@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-0000000000000000-01",  # all-zero ids are invalid
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-0AF7651916CD43DD8448EB211C80319Z-b7ad6b7169203331-01",  # not hex
        "00-" + "a" * 10_000,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\x00",
    ],
)
def test_a_stored_traceparent_that_is_not_one_leaves_the_change_where_it_happens(stored):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.installed(provider), provider.get_tracer("test").start_as_current_span("here") as here:
        tracing.record("holdgate decision", start_ns=tracing.now_ns(), attributes={}, joins=stored)
    [change, _] = exporter.get_finished_spans()
    assert change.parent.span_id == here.get_span_context().span_id and not change.links


@pytest.mark.unit
def test_the_stored_traceparent_is_the_current_spans_and_none_outside_a_span():
    assert tracing.traceparent() is None  # off
    provider = TracerProvider()
    with tracing.installed(provider):
        assert tracing.traceparent() is None  # on, but no span
        with provider.get_tracer("test").start_as_current_span("opening") as opening:
            value = tracing.traceparent()
    context = opening.get_span_context()
    assert value == f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_SERVICE_NAME": "holdgate"}, False),
    ],
)
def test_the_standard_variables_decide_whether_to_trace(environ, wanted):
    assert tracing.wanted(environ) is wanted


@pytest.mark.unit
@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' is not supported",
        ),
    ],
)
def test_a_setting_holdgate_cannot_follow_refuses_to_start_naming_the_variable(environ, problem):
    with pytest.raises(ValueError, match=problem):
        tracing.configure_from_environment(environ)
    assert not tracing.enabled()


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A local OTLP/HTTP receiver that keeps the bodies it is sent: (its endpoint, the bodies)."""
    received: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        assert request.path == "/v1/traces" and request.content_type == "application/x-protobuf"
        received.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", received
    finally:
        await runner.cleanup()


def otlp_spans(received: list[bytes]) -> list[Any]:
    return [
        span
        for body in received
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource_spans.scope_spans
        for span in scope.spans
    ]


async def test_holdgate_serve_exports_its_spans_over_otlp_when_the_standard_variables_say_so(tmp_path):
    """The real command with `OTEL_EXPORTER_OTLP_ENDPOINT` set: its spans reach an OTLP/HTTP receiver (a local
    one that keeps what it is sent), with the mcp SDK's server span as the call's parent."""
    write_config(tmp_path / "config", policy=approval_policy(), servers=servers(tmp_path))
    async with otlp_receiver() as (endpoint, received):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        async with serving(tmp_path, tmp_path / "holdgate.log", **env) as gw, gw.session("jobs") as session:
            result = await session.call_tool("list-async-jobs", {})
            for _ in range(200):
                if any(b"holdgate tools/call" in body for body in received):
                    break
                await asyncio.sleep(0.05)

    assert not result.is_error
    spans, services = [], set()
    for body in received:
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            services.add(attributes.get("service.name"))
            spans += [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert services == {"holdgate"}
    named = {span.name: span for span in spans}
    call = named["holdgate tools/call"]
    assert named["holdgate policy"].parent_span_id == call.span_id == named["holdgate upstream"].parent_span_id
    server_span = named["tools/call list-async-jobs"]  # the mcp SDK's, through the global provider
    assert call.parent_span_id == server_span.span_id and call.trace_id == server_span.trace_id
