"""Timeouts when the replica that opened the decisions dies: how late do they fire on the survivor?

Two `holdgate serve` replicas (A, B) on a fresh PostgreSQL database, the demo jobs server as the upstream.
`--decisions` calls of `cancel-async-job` (needs approval, timeout `--timeout`) are held on A, in
`--sessions` sessions at once; as soon as all are open, A is killed with SIGKILL. Nobody decides, so every
decision must expire on B. Lateness = `decided_at - expires_at` as the database recorded them (B's clock),
p50/p99/max in ms (target p99 <= 1000 ms; before openings were announced, B found them on its 5 s sweep).

Usage: python bench/bench_failover.py [--decisions 100] [--timeout 30] [--sessions 25] [--root CHECKOUT]
`--root` runs holdgate from another checkout (e.g. the code before this change) for comparison.
The PostgreSQL server: HOLDGATE_TEST_POSTGRES_URL or postgresql+asyncpg://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from bench_gateway import free_port, session, wait_http

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.approvals.pg_listen import asyncpg_dsn  # noqa: E402 - needs the repository on sys.path
from tests.support.postgres import fresh_database  # noqa: E402

APPROVER_TOKEN = "bench-approver-token"


def write_config(config: Path, data: Path, timeout: float) -> None:
    config.mkdir()
    policy = {
        "version": "1",
        "default": "deny",
        "people": {"alice": {"token_sha256": hashlib.sha256(APPROVER_TOKEN.encode()).hexdigest()}},
        "tools": {
            "cancel-async-job": {
                "action": "require_approval",
                "approval": {"approvers": ["alice"], "channels": ["console"], "timeout": f"{timeout:g}s"},
            }
        },
    }
    jobs = {
        "command": sys.executable,
        "args": [str(ROOT / "examples/jobs_server.py")],
        "env": {"JOBS_STATE_DIR": str(data)},
    }
    (config / "policy.json").write_text(json.dumps(policy))
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"jobs": jobs}}))


def start_replica(root: Path, env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(port), "--log-level", "warning"],
            cwd=root,
            env={**env, "PYTHONPATH": str(root)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the value below which q% of `values` fall (never beyond the largest)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


async def hold(url: str, token: str, first: int, count: int) -> None:
    """Open `count` decisions through one session (each call answers "approval pending" after the hold bound)."""
    async with session(f"{url}/mcp/jobs", token) as s:
        for i in range(first, first + count):
            await s.call_tool("cancel-async-job", {"jobId": f"failover-{i}"})


async def main(args: argparse.Namespace) -> None:
    root = Path(args.root).resolve()
    a_port, b_port = free_port(), free_port()
    async with fresh_database() as database_url:
        with tempfile.TemporaryDirectory() as scratch:
            tmp = Path(scratch)
            write_config(tmp / "config", tmp / "jobs", args.timeout)
            env = {
                **os.environ,
                "HOLDGATE_CONFIG_DIR": str(tmp / "config"),
                "HOLDGATE_DATA_DIR": str(tmp / "data"),
                "HOLDGATE_DATABASE_URL": database_url,
                "HOLDGATE_APPROVAL_HOLD_S": "0.05",
                "HOLDGATE_WATCH_POLICY": "false",
            }
            created = subprocess.run(
                [sys.executable, "-m", "service", "grant", "create", "bench"],
                cwd=root,
                env={**env, "PYTHONPATH": str(root)},
                capture_output=True,
                text=True,
                check=True,
            )
            token = created.stdout.strip().splitlines()[-1]
            a = start_replica(root, env, a_port, tmp / "a.log")
            b = start_replica(root, env, b_port, tmp / "b.log")
            connection = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                a_url = f"http://127.0.0.1:{a_port}"
                for url in (a_url, f"http://127.0.0.1:{b_port}"):
                    await wait_http(f"{url}/healthz")
                per = -(-args.decisions // args.sessions)
                opening = time.perf_counter()
                await asyncio.gather(
                    *(hold(a_url, token, i * per, min(per, args.decisions - i * per)) for i in range(args.sessions))
                )
                opened_in = time.perf_counter() - opening
                a.send_signal(signal.SIGKILL)
                a.wait()
                killed_at = time.time()
                early = await connection.fetchval("SELECT count(*) FROM decisions WHERE status <> 'pending'")
                deadline = time.monotonic() + args.timeout + 30
                while time.monotonic() < deadline:
                    left = await connection.fetchval("SELECT count(*) FROM decisions WHERE status = 'pending'")
                    if left == 0:
                        break
                    await asyncio.sleep(0.2)
                rows = await connection.fetch("SELECT status, decided_at, expires_at FROM decisions")
            finally:
                await connection.close()
                for process in (a, b):
                    if process.poll() is None:
                        process.terminate()
                for process in (a, b):
                    process.wait(15)
    late = [(r["decided_at"] - r["expires_at"]) * 1000 for r in rows if r["decided_at"] and r["expires_at"] > killed_at]
    statuses = sorted({r["status"] for r in rows})
    print(f"PostgreSQL, 2 replicas, {os.cpu_count()} CPUs, code from {root}")
    print(f"{len(rows)} decisions opened on A in {opened_in:.1f} s (timeout {args.timeout:g} s), A killed (SIGKILL);")
    print(f"  {early} ended before the kill; statuses at the end: {', '.join(statuses)}")
    print(f"timeout lateness on B, {len(late)} decisions that fell due after the kill, ms:")
    p50, p99 = percentile(late, 50), percentile(late, 99)
    print(f"  p50 {p50:7.1f}  p99 {p99:7.1f}  max {max(late):7.1f}   (target p99 <= 1000)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=30.0, help="longer than opening them all takes")
    parser.add_argument("--sessions", type=int, default=25)
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose holdgate runs (default: this one)")
    asyncio.run(main(parser.parse_args()))
