"""Rate limits in the database: latency and throughput of `consume` for one call with two limits.

Each figure is one call's check against a per-grant limit and a global one (what a rule's
`rate_limit` plus an `all_tools` limit costs), on SQLite (a file) and on PostgreSQL (a fresh
database on 127.0.0.1:5432): sequential calls for p50/p99, then `--tasks` concurrent callers on
the same counters for throughput. Limits are large enough never to refuse, and the clock moves
1 ms a call, so every call writes. Usage: python bench/bench_limits.py [--calls 2000] [--tasks 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import db
from service.policy import Limit, consume
from tests.support.postgres import fresh_database, unreachable_reason

LIMITS = [Limit("bench_rate", 60, 100_000, "grant"), Limit("bench_all", 3600, 100_000, "global")]
T0 = 1_800_000_000.0


async def run(url: str, calls: int, tasks: int) -> tuple[float, float, float]:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        tick = iter(range(10**9))

        async def one(grant: str) -> None:
            outcome = await consume(sessions, LIMITS, grant=grant, now=T0 + next(tick) / 1000)
            assert outcome.allowed

        for _ in range(50):  # warm the pool and the statement caches
            await one("warm")
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            await one("seq")
            latencies.append(time.perf_counter() - started)
        latencies.sort()

        async def worker(i: int, per: int) -> None:
            for _ in range(per):
                await one(f"g{i % 4}")

        per = max(calls // tasks, 1)
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, per) for i in range(tasks)))
        throughput = per * tasks / (time.perf_counter() - started)
        return statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000, throughput
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p50, p99, rate = await run(f"sqlite+aiosqlite:///{tmp}/bench.db", args.calls, args.tasks)
    print(f"sqlite      p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rate:7.0f} calls/s with {args.tasks} tasks")
    if (reason := await unreachable_reason()) is not None:
        print(f"postgresql  skipped: {reason}")
        return
    for driver in ("postgresql+asyncpg", "postgresql+psycopg"):
        async with fresh_database(driver) as url:
            p50, p99, rate = await run(url, args.calls, args.tasks)
        print(f"{driver:26s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rate:7.0f} calls/s with {args.tasks} tasks")


if __name__ == "__main__":
    asyncio.run(main())
