"""Rate limits in the database: latency and throughput of `consume` for one call with two limits.

Each figure is one call's check against a per-grant limit and a global one (what a rule's
`rate_limit` plus an `all_tools` limit costs), on SQLite (a file) and on PostgreSQL (a fresh
database on 127.0.0.1:5432): sequential calls for p50/p99, then `--tasks` concurrent callers on
the same counters for throughput. Limits are large enough never to refuse, and the clock moves
1 ms a call, so every call writes. `--rounds N` repeats each figure N times and keeps the best (on a
shared machine the best is the least disturbed). Also the process's own CPU per call.
`--amounts`: the global limit adds up an amount (`limits[].amount`, 3.5 a call) instead of counting calls;
every call stays inside its 60 s window, so each check sums all the key's calls so far (the worst case).
Usage: python bench/bench_limits.py [--calls 2000] [--tasks 16] [--rounds 1] [--amounts]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import db
from service.policy import Limit, consume
from service.policy.conditions import compile_amount
from tests.support.postgres import fresh_database, unreachable_reason

LIMITS = [Limit("bench_rate", 60, 100_000, "grant"), Limit("bench_all", 3600, 100_000, "global")]
AMOUNT_LIMITS = [
    Limit("bench_rate", 60, 100_000, "grant"),
    Limit("bench_sum", 60, 10**12, "global", compile_amount("args.n")),
]
AMOUNTS: list[float] | None = None
T0 = 1_800_000_000.0


async def run(url: str, calls: int, tasks: int) -> tuple[float, float, float, float]:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        tick = iter(range(10**9))

        async def one(grant: str) -> None:
            limits = LIMITS if AMOUNTS is None else AMOUNT_LIMITS
            outcome = await consume(sessions, limits, grant=grant, now=T0 + next(tick) / 1000, amounts=AMOUNTS)
            assert outcome.allowed

        for _ in range(50):  # warm the pool and the statement caches
            await one("warm")
        latencies = []
        cpu = time.process_time()
        for _ in range(calls):
            started = time.perf_counter()
            await one("seq")
            latencies.append(time.perf_counter() - started)
        cpu_ms = (time.process_time() - cpu) / calls * 1000
        latencies.sort()

        async def worker(i: int, per: int) -> None:
            for _ in range(per):
                await one(f"g{i % 4}")

        per = max(calls // tasks, 1)
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, per) for i in range(tasks)))
        throughput = per * tasks / (time.perf_counter() - started)
        p50, p99 = statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000
        return p50, p99, throughput, cpu_ms
    finally:
        await engine.dispose()


async def best(url_of, args) -> str:
    figures = []
    for _ in range(args.rounds):
        async with url_of() as url:
            figures.append(await run(url, args.calls, args.tasks))
    p50 = min(f[0] for f in figures)
    p99 = min(f[1] for f in figures)
    rate = max(f[2] for f in figures)
    cpu = min(f[3] for f in figures)
    return f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  cpu {cpu:5.2f} ms/call  {rate:7.0f} calls/s with {args.tasks} tasks"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--amounts", action="store_true", help="a global limit that adds up an amount")
    args = parser.parse_args()
    if args.amounts:
        global AMOUNTS
        AMOUNTS = [1.0, 3.5]

    @asynccontextmanager
    async def sqlite_file():
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite+aiosqlite:///{tmp}/bench.db"

    print(f"{'sqlite':20s} {await best(sqlite_file, args)}")
    if (reason := await unreachable_reason()) is not None:
        print(f"postgresql  skipped: {reason}")
        return
    for driver in ("postgresql+asyncpg", "postgresql+psycopg"):
        print(f"{driver:20s} {await best(lambda d=driver: fresh_database(d), args)}")


if __name__ == "__main__":
    asyncio.run(main())
