"""What holdgate's tracing and log context cost on a call's path, in process: off (the default) and on.

Runs the instrumentation an allowed tools/call goes through (`ServerProxy.call_tool`: the log context, the
call span, the policy and upstream spans, three annotations, and the `traceparent` injection of the direct
HTTP path) around an empty body, `--calls` times, best of `--repeat`; then the same with tracing on (the
OpenTelemetry SDK, a batch processor, an exporter that drops the spans). The end-to-end figure is
`bench_gateway.py --tracing`; this one isolates the part the guard is for, and being CPU only it is less
disturbed by a busy machine. Usage: python bench/bench_tracing.py [--calls 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from service import logcontext, tracing


class Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def one_call() -> None:
    """The instrumentation of one allowed, forwarded call (service/gateway/proxy.py, upstream_direct.py)."""
    with (
        logcontext.bound(request_id="0" * 32, grant="agent", server="jobs", tool="cancel-async-job"),
        tracing.span("holdgate tools/call", {"holdgate.grant": "agent", "holdgate.server": "jobs"}),
    ):
        with tracing.span("holdgate policy"):
            pass
        tracing.annotate(verdict="allow", rule="cancel-async-job")
        with tracing.span("holdgate upstream"):
            headers: dict[str, str] = {}
            if tracing.enabled():
                tracing.inject(headers)
                tracing.inject({})
        tracing.annotate(outcome="ok")


def context_only() -> None:
    with logcontext.bound(request_id="0" * 32, grant="agent", server="jobs", tool="cancel-async-job"):
        pass


def best_us(work, calls: int, repeat: int) -> float:
    return min(timeit.repeat(work, number=calls, repeat=repeat)) / calls * 1e6


def main(args: argparse.Namespace) -> None:
    context = best_us(context_only, args.calls, args.repeat)
    off = best_us(one_call, args.calls, args.repeat)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Dropping()))  # each span handed over as it ends, no queue
    with tracing.installed(provider):
        on = best_us(one_call, args.calls // 10, args.repeat)
    provider.shutdown()
    print(f"instrumentation of one call, best of {args.repeat}:")
    print(f"  tracing off  {off:6.2f} µs   (the log context alone: {context:.2f} µs)")
    print(f"  tracing on   {on:6.2f} µs   (3 spans, 3 annotations, the traceparent injected twice)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    main(parser.parse_args())
