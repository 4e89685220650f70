"""Replaying a candidate policy on the audit: 1,000,000 audited calls against a 1,000-rule policy (target <= 30 s).

Writes the history straight into a fresh database (one multi-row INSERT per 20,000 rows through SQLAlchemy Core;
records without hash links, which the replay does not read), then times `service.audit.replay.replay`, the
function `holdgate policy replay` and the dashboard call, from the first row fetched to the report. The policy
has 1,000 rules on 50 servers: exact keys and globs, a third with CEL cases on the arguments, a tenth with
sliding-window limits (replayed in memory in time order); the history spans 7 days, 200 grants, with a secret
argument (redacted by the audit) on a fifth of the calls, so some cases are undecidable.

Usage: python bench/bench_replay.py [--calls 1000000] [--database-url postgresql+psycopg://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert  # noqa: E402

from service import db  # noqa: E402
from service.audit.replay import ReplayFilter, load_candidate, replay  # noqa: E402
from service.models import AuditEvent  # noqa: E402

SERVERS = 50
TOOLS_PER_SERVER = 20
T0 = datetime(2026, 11, 24, tzinfo=UTC).timestamp()
SPAN = 7 * 86400


def policy_document() -> dict:
    rng = random.Random(1)
    tools: dict[str, dict] = {}
    for s in range(SERVERS):
        for t in range(TOOLS_PER_SERVER - 1):
            rule: dict = {"action": rng.choice(["allow", "allow", "require_approval", "deny"])}
            if (s * TOOLS_PER_SERVER + t) % 3 == 0:
                rule = {
                    "action": "allow",
                    "cases": [
                        {"when": "args.jobId.startsWith('prod-')", "action": "require_approval"},
                        {"when": "has(args.token) && args.token == 'root'", "action": "deny"},
                        {"when": "args.count > 90", "action": "deny", "reason": "too many"},
                    ],
                }
            if (s * TOOLS_PER_SERVER + t) % 10 == 0 and rule["action"] != "deny":
                rule["limits"] = [{"counter": f"c{s}-{t}", "window": "hour", "max": 3, "scope": "global"}]
            tools[f"srv{s}/tool{t}"] = rule
        tools[f"srv{s}/admin-*"] = {"action": "deny", "reason": "admin tools"}
    assert len(tools) == SERVERS * TOOLS_PER_SERVER
    return {"version": "1", "default": "deny", "tools": tools}


def history_rows(calls: int):
    rng = random.Random(2)
    grants = [f"agent-{g}" for g in range(200)]
    verdicts = ["allowed"] * 7 + ["denied", "rate_limited", "approved"]
    step = SPAN / calls
    for i in range(calls):
        server = rng.randrange(SERVERS)
        tool = f"tool{rng.randrange(TOOLS_PER_SERVER + 2)}"  # a few tools no rule names: the default
        arguments: dict = {"jobId": f"{rng.choice(['prod', 'dev', 'test'])}-{i}", "count": rng.randrange(100)}
        if rng.random() < 0.2:
            arguments["token"] = "[redacted]"
        verdict = rng.choice(verdicts)
        yield {
            "ts": datetime.fromtimestamp(T0 + i * step + rng.random() * step, UTC),
            "grant": rng.choice(grants),
            "server": f"srv{server}",
            "tool": tool,
            "arguments": json.dumps(arguments),
            "args_sha256": "0" * 64,
            "verdict": verdict,
            "rule": f"srv{server}/{tool}",
            "reason": None,
            "outcome": "ok" if verdict == "allowed" else None,
            "detail": None,
            "duration_ms": 1.0,
            "decision_id": f"d_{i}" if verdict == "approved" else None,
        }


def sync_url(url: str) -> str:
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


def generate(url: str, calls: int) -> float:
    started = time.perf_counter()
    asyncio.run(_migrate(url))
    engine = create_engine(sync_url(url))
    table = AuditEvent.__table__  # type: ignore[attr-defined]
    batch: list[dict] = []
    with engine.begin() as connection:
        for row in history_rows(calls):
            batch.append(row)
            if len(batch) == 20_000:
                connection.execute(insert(table), batch)
                batch = []
        if batch:
            connection.execute(insert(table), batch)
    engine.dispose()
    return time.perf_counter() - started


async def _migrate(url: str) -> None:
    engine = db.create_engine(url)
    await db.upgrade(engine)
    await engine.dispose()


async def timed_replay(url: str, policy) -> tuple[float, float, object]:
    engine = db.create_engine(url)
    try:
        async with db.session_factory(engine)() as session:
            cpu, started = time.process_time(), time.perf_counter()
            report = await replay(session, policy, ReplayFilter())
            return time.perf_counter() - started, time.process_time() - cpu, report
    finally:
        await engine.dispose()


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(scratch) / 'audit.db'}"
        policy_path = Path(scratch) / "candidate.json"
        policy_path.write_text(json.dumps(policy_document()))
        policy = load_candidate(policy_path)  # as `holdgate policy replay` loads it
        load_before = os.getloadavg()
        took = generate(url, args.calls)
        print(f"history: {args.calls:,} calls written in {took:.1f} s ({url.split(':')[0]})")
        wall, cpu, report = asyncio.run(timed_replay(url, policy))
        load_after = os.getloadavg()
    data = report.to_dict()  # type: ignore[attr-defined]
    print(f"candidate: {policy.rule_count} rules")
    print(
        f"replay: {data['replayed']:,} calls in {wall:.1f} s wall, {cpu:.1f} s CPU of this process "
        f"({1e6 * wall / max(data['replayed'], 1):.1f} us/call)   (target <= 30 s)"
    )
    print(
        f"  changed {data['changed']:,}; undecidable {data['undecidable']:,}; "
        f"rate-limit refusals {sum(r['calls'] for r in data['rate_limit_refusals']):,} "
        f"on {len(data['rate_limit_refusals'])} counters"
    )
    print(
        f"  load average before {load_before[0]:.2f} / after {load_after[0]:.2f} "
        f"(1 min; {os.cpu_count()} cores shared with other work)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url", default=None, help="A fresh database to fill (default: a scratch SQLite file)"
    )
    main(parser.parse_args())
