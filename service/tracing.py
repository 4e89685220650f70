"""OpenTelemetry traces, when the standard `OTEL_*` variables ask for them; nothing at all otherwise.

Off by default. `configure_from_environment` (run by `holdgate serve`) turns tracing on when
`OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`; `none` is off) or an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), unless `OTEL_SDK_DISABLED=true`. The
SDK and its OTLP exporter are the optional extra `holdgate[otel]`; the exporter reads its own variables
(endpoint, headers, timeout, `OTEL_EXPORTER_OTLP_PROTOCOL`), and the resource `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES` (the service is `holdgate` unless they name it).

What is traced: a span per `tools/call` (`holdgate tools/call`) with children for the policy, the rate limit,
the hold and the upstream; a span per change of a decision's status (`holdgate decision`). The mcp SDK's own
spans (a server span per request, a client span per request it sends) join the same traces, and the trace
context goes on to HTTP upstreams (a `traceparent` header and, as the SDK does, `_meta`).

A decision outlives the request that opened it and is changed elsewhere (an approver's request, a timer, the
CLI, another replica), so the opening call's context travels with the decision: `traceparent()` is stored on it
when it opens, and `record(..., joins=...)` makes the change a child of that span, in the call's trace, with a
link to the span that made the change (the approver's request, when it is traced).

The guard: while tracing is off, `span()` returns one shared null context and `inject()` returns at once,
so a call pays a function call and a global read per span, nothing more (bench/bench_gateway.py measures it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace

from service import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

_tracer: Tracer | None = None
"""The tracer while tracing is on; None is the guard every call site checks first."""
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def enabled() -> bool:
    return _tracer is not None


def span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Span | None]:
    """A child of the current span for the block (the span, or None while tracing is off)."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=_clean(attributes))


def annotate(**attributes: Any) -> None:
    """Add `attributes` (None ones left out) to the current span, as `holdgate.<name>`."""
    if _tracer is not None:
        current = trace.get_current_span()
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(f"holdgate.{key}", value)


def record(name: str, *, start_ns: int, attributes: Mapping[str, Any], joins: str | None = None) -> None:
    """A span that began at `start_ns` (`now_ns()`) and ends now: one event of a batch (a decision's change).

    `joins`: a W3C traceparent (`traceparent()`, kept with a decision) whose span becomes this one's parent, so
    the span lands in that trace even when it is recorded in another request or process; the span current
    here, if any, is linked instead. A missing or malformed value leaves the current span as the parent.
    """
    tracer = _tracer
    if tracer is None:
        return
    parent = None if joins is None else _span_context_of(joins)
    if parent is None:
        tracer.start_span(name, start_time=start_ns, attributes=_clean(attributes)).end()
        return
    here = trace.get_current_span().get_span_context()
    links = [trace.Link(here, {"holdgate.link": "changed_in"})] if here.is_valid else None
    tracer.start_span(
        name,
        context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
        links=links,
        start_time=start_ns,
        attributes=_clean(attributes),
    ).end()


def traceparent() -> str | None:
    """The current span as a W3C `traceparent` value, to store with work that outlives it; None while tracing is
    off or outside any span."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _span_context_of(value: str) -> trace.SpanContext | None:
    """The remote span a stored `traceparent` names, or None if it is not a valid one (read by the W3C
    propagator, which refuses bad versions, lengths, all-zero ids and non-hex)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = trace.get_current_span(TraceContextTextMapPropagator().extract({"traceparent": value}))
    span_context = context.get_span_context()
    return span_context if span_context.is_valid else None


def now_ns() -> int:
    """A start time for `record` (0 while tracing is off: nothing reads it)."""
    return time.time_ns() if _tracer is not None else 0


def inject(carrier: MutableMapping[str, Any]) -> None:
    """Put the current trace context (`traceparent`, `tracestate`) into `carrier`: HTTP headers, or `_meta`."""
    if _tracer is not None:
        propagate.inject(carrier)


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """OpenTelemetry takes no None values: a field not known yet is left out."""
    if attributes is None:
        return None
    return {key: value for key, value in attributes.items() if value is not None}


def install(provider: TracerProvider | None, *, make_global: bool = False) -> None:
    """Trace with `provider` (None: stop tracing). `make_global` also gives it to every library that traces
    through the global provider (the mcp SDK): done once per process, by `configure_from_environment`."""
    if provider is not None and make_global:
        trace.set_tracer_provider(provider)
    _use(provider.get_tracer("holdgate", __version__) if provider is not None else None)


def _use(tracer: Tracer | None) -> None:
    global _tracer
    _tracer = tracer


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (the OpenTelemetry SDK's own variables)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return _exporter_names(exporters) != []
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def _exporter_names(value: str) -> list[str]:
    return [name for name in (part.strip().lower() for part in value.split(",")) if name and name != "none"]


def configure_from_environment(environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Turn tracing on if the environment asks for it; raises ValueError, naming the variable, when it cannot."""
    if not wanted(environ):
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ValueError(
            "OTEL_* variables ask for traces, but the OpenTelemetry SDK is not installed: "
            "pip install 'holdgate[otel]' (or unset them)"
        ) from None
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "holdgate"}))
    provider = TracerProvider(resource=resource)
    for name in _exporter_names(environ.get("OTEL_TRACES_EXPORTER", "otlp")):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    install(provider, make_global=True)
    return provider


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (holdgate knows otlp, console, none)")
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip() == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc installed; "
                "holdgate[otel] brings http/protobuf (the default)"
            ) from None
        return GrpcExporter()
    if protocol.strip() != "http/protobuf":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported (http/protobuf or grpc)")
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ValueError(
            "OTEL_* variables ask for OTLP traces, but the OTLP exporter is not installed: pip install 'holdgate[otel]'"
        ) from None
    return OTLPSpanExporter()


@contextlib.contextmanager
def installed(provider: TracerProvider) -> Iterator[None]:
    """Trace with `provider` for the block (tests, and an embedding that owns its provider)."""
    previous = _tracer
    install(provider)
    try:
        yield
    finally:
        _use(previous)
