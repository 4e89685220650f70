"""CPU of the per-call pieces changed for the gateway's overhead after issues 16-19, each beside what it replaced.

In process and CPU only (`time.thread_time`, the median of `--repeat` runs), so a machine busy with other work
disturbs it less than the end-to-end `bench_gateway.py`:

- the request's disconnect watcher (`downstream_http.DeferredChoiceTransport._answer`): an anyio task group whose
  scope is cancelled (before) against a plain asyncio task that is cancelled (now), from a coroutine 15 frames
  deep, as a request handler is;
- the SDK's server span per request (`mcp.server._otel.OpenTelemetryMiddleware`, before) against
  `mcp_compat.SdkSpansWhenSeen` (now) for a request without `_meta` and no global tracer provider;
- `metrics.count_call`: the labelled children looked up on every call (before) against kept (now);
- `proxy.tool_name_problem` for a 4- and a 30-character ASCII name (now; before, every character was looked up);
- the audit writer: CPU per record written in batches of 2 (what a steady stream of calls made of the writer
  before) and of 100 (one batch per second at 100 calls/s, now), SQLite.

Usage: python bench/bench_call_path.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp.server._otel import OpenTelemetryMiddleware

from service import db, metrics
from service.audit.service import AuditRecord, AuditWriter
from service.gateway.mcp_compat import SdkSpansWhenSeen
from service.gateway.proxy import tool_name_problem


def cpu_us(work: Callable[[], object], number: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.thread_time()
        for _ in range(number):
            work()
        runs.append((time.thread_time() - started) / number * 1e6)
    return statistics.median(runs)


async def async_cpu_us(work: Callable[[], Awaitable[object]], number: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.thread_time()
        for _ in range(number):
            await work()
        runs.append((time.thread_time() - started) / number * 1e6)
    return statistics.median(runs)


async def _waits(event: asyncio.Event) -> None:
    await event.wait()


async def watcher_task_group() -> None:
    event = asyncio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_waits, event)
        await asyncio.sleep(0)  # the answer: the handler yields at least once
        tasks.cancel_scope.cancel()


async def watcher_task() -> None:
    event = asyncio.Event()
    watcher = asyncio.create_task(_waits(event))
    try:
        await asyncio.sleep(0)
    finally:
        watcher.cancel()


async def deep(levels: int, work: Callable[[], Awaitable[None]]) -> None:
    if levels == 0:
        await work()
    else:
        await deep(levels - 1, work)


class _Ctx:
    """What the span middleware reads of a request's context."""

    method = "tools/call"
    params: dict[str, Any] = {"name": "echo", "arguments": {"message": "hi"}}  # noqa: RUF012
    protocol_version = "2025-11-25"
    request_id = 7
    meta = None


async def _answer(ctx: Any) -> dict[str, Any]:
    return {"content": []}


def count_call_before(server: str, verdict: str, outcome: str | None, duration_ms: float | None) -> None:
    metrics.TOOL_CALLS.labels(server, verdict, outcome or "none").inc()
    if duration_ms is not None:
        metrics.TOOL_CALL_SECONDS.labels(server, verdict).observe(duration_ms / 1000)


async def audit_us_per_record(batch: int, batches: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        engine = db.create_engine(f"sqlite+aiosqlite:///{Path(scratch) / 'audit.db'}")
        await db.upgrade(engine)
        writer = AuditWriter(db.session_factory(engine), batch_size=batch)
        runs = []
        for turn in range(batches + 3):
            for i in range(batch):
                writer.record(
                    AuditRecord(
                        ts=time.time(),
                        grant="bench",
                        server="everything",
                        tool="echo",
                        arguments={"message": f"call {turn}.{i}"},
                        redact=("message",),
                        rule="echo",
                        verdict="allowed",
                        outcome="ok",
                        duration_ms=1.234,
                    )
                )
            started = time.process_time()  # the writer's thread (aiosqlite's) counts too
            await writer.flush()
            if turn >= 3:  # the first batches warm the statement cache
                runs.append((time.process_time() - started) / batch * 1e6)
        await engine.dispose()
    return statistics.median(runs)


async def main(args: argparse.Namespace) -> None:
    repeat = args.repeat
    print("CPU per call (us), median of runs; before -> now")
    before = await async_cpu_us(lambda: deep(15, watcher_task_group), 2000, repeat)
    now = await async_cpu_us(lambda: deep(15, watcher_task), 2000, repeat)
    print(f"  disconnect watcher        {before:7.1f} -> {now:6.1f}   saves {before - now:6.1f}")
    sdk, ours = OpenTelemetryMiddleware(), SdkSpansWhenSeen(OpenTelemetryMiddleware())
    ctx: Any = _Ctx()
    before = await async_cpu_us(lambda: sdk(ctx, _answer), 20000, repeat)
    now = await async_cpu_us(lambda: ours(ctx, _answer), 20000, repeat)
    print(f"  SDK server span           {before:7.1f} -> {now:6.1f}   saves {before - now:6.1f}")
    before = cpu_us(lambda: count_call_before("everything", "allowed", "ok", 1.2), 20000, repeat)
    now = cpu_us(lambda: metrics.count_call("everything", "allowed", "ok", 1.2), 20000, repeat)
    print(f"  count_call                {before:7.1f} -> {now:6.1f}   saves {before - now:6.1f}")
    short = cpu_us(lambda: tool_name_problem("echo"), 20000, repeat)
    long = cpu_us(lambda: tool_name_problem("get-tiny-image-of-a-long-name1"), 20000, repeat)
    print(f"  tool_name_problem         now {short:.2f} ('echo'), {long:.2f} (30 characters)")
    small = await audit_us_per_record(2, 15)
    large = await audit_us_per_record(100, 5)
    saved = small - large
    print(f"  audit, per record         {small:7.1f} -> {large:6.1f}   saves {saved:6.1f} (batches of 2 -> of 100)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
