"""Two holdgate replicas on one PostgreSQL database: cross-replica release latency, and throughput.

Starts server-everything over Streamable HTTP as the shared upstream, a fresh PostgreSQL database,
and two `holdgate serve` processes on it. Measures:
  1. decision to release: a call held on replica A (tool `get-sum` needs approval), approved with
     a POST to replica B (or to A, for comparison); time from sending the POST to the MCP client on
     A receiving the upstream's result, p50/p99 (target cross-replica p99 <= 100 ms);
  2. throughput of allowed `echo` calls with N concurrent sessions, all on A vs spread over A and B.
Usage: python bench/bench_replicas.py [--decisions 100] [--seconds 8] [--sessions 16]
The PostgreSQL server: HOLDGATE_TEST_POSTGRES_URL or postgresql+asyncpg://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from bench_gateway import EVERYTHING, free_port, pct, session, throughput, wait_http

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.postgres import fresh_database  # noqa: E402 - needs the repository on sys.path

APPROVER_TOKEN = "bench-approver-token"


APPROVAL = {"action": "require_approval", "approval": {"approvers": ["alice"], "channels": ["console"]}}


def write_config(config: Path, upstream_url: str, tools: dict[str, Any]) -> None:
    config.mkdir()
    policy = {
        "version": "1",
        "default": "deny",
        "people": {"alice": {"token_sha256": hashlib.sha256(APPROVER_TOKEN.encode()).hexdigest()}},
        "tools": tools,
    }
    (config / "policy.json").write_text(json.dumps(policy))
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"everything": {"url": upstream_url}}}))


def holdgate(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.Popen:
    """This checkout's holdgate (`python -m service`), not whatever `holdgate` the virtualenv installed."""
    return subprocess.Popen([sys.executable, "-m", "service", *args], cwd=ROOT, env=env, **kwargs)


@asynccontextmanager
async def two_replicas(tools: dict[str, Any], **settings: str) -> AsyncIterator[tuple[str, str, str]]:
    """server-everything over Streamable HTTP, a fresh PostgreSQL database and two `holdgate serve` processes on
    it under a policy of `tools` (alice approves); yields a grant's token and the two replicas' base URLs."""
    up_port, a_port, b_port = free_port(), free_port(), free_port()
    upstream = subprocess.Popen(
        ["node", str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(up_port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    replicas: list[subprocess.Popen] = []
    async with fresh_database() as database_url:
        with tempfile.TemporaryDirectory() as scratch:
            tmp = Path(scratch)
            write_config(tmp / "config", f"http://127.0.0.1:{up_port}/mcp", tools)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "HOLDGATE_CONFIG_DIR": str(tmp / "config"),
                "HOLDGATE_DATA_DIR": str(tmp / "data"),
                "HOLDGATE_DATABASE_URL": database_url,
                **settings,
            }
            created = holdgate(
                env, "grant", "create", "bench", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            token = created.communicate()[0].strip().splitlines()[-1]
            try:
                quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
                replicas = [
                    holdgate(env, "serve", "--port", str(port), "--log-level", "warning", **quiet)
                    for port in (a_port, b_port)
                ]
                a_url, b_url = (f"http://127.0.0.1:{port}" for port in (a_port, b_port))
                await wait_http(f"http://127.0.0.1:{up_port}/")
                for url in (a_url, b_url):
                    await wait_http(f"{url}/healthz")
                yield token, a_url, b_url
            finally:
                for process in [*replicas, upstream]:
                    process.terminate()
                for process in [*replicas, upstream]:
                    process.wait(10)


async def release_latencies(a_url: str, approve_url: str, token: str, decisions: int) -> list[float]:
    """Hold one call at a time on A, approve it through `approve_url`, time POST → result on A."""
    headers = {"Authorization": f"Bearer {APPROVER_TOKEN}"}
    latencies = []
    async with session(f"{a_url}/mcp/everything", token) as s, httpx2.AsyncClient(headers=headers) as api:
        for i in range(decisions):
            call = asyncio.create_task(s.call_tool("get-sum", {"a": i, "b": 1}))
            while True:
                items = (await api.get(f"{a_url}/api/decisions?status=pending")).json()["items"]
                if items:
                    break
                await asyncio.sleep(0.005)
            started = time.perf_counter()
            response = await api.post(f"{approve_url}/api/decisions/{items[0]['id']}/approve")
            result = await call
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and not result.is_error, (response.text, result)
    return latencies


async def spread_throughput(urls: list[str], token: str, sessions: int, seconds: float) -> float:
    per = [sessions // len(urls) + (1 if i < sessions % len(urls) else 0) for i in range(len(urls))]
    rates = await asyncio.gather(
        *(throughput(f"{url}/mcp/everything", token, n, seconds) for url, n in zip(urls, per, strict=True))
    )
    return sum(rates)


async def main(args: argparse.Namespace) -> None:
    tools = {"echo": {"action": "allow"}, "get-sum": APPROVAL}
    async with two_replicas(tools, HOLDGATE_APPROVAL_HOLD_S="60") as (token, a_url, b_url):
        same = await release_latencies(a_url, a_url, token, args.decisions)
        cross = await release_latencies(a_url, b_url, token, args.decisions)
        one = await spread_throughput([a_url], token, args.sessions, args.seconds)
        two = await spread_throughput([a_url, b_url], token, args.sessions, args.seconds)
    print(f"PostgreSQL, 2 replicas, {os.cpu_count()} CPUs")
    print(f"decision to release, {args.decisions} decisions (approve POST sent -> client on A has the result), ms:")
    print(f"  approved on A (same replica)   p50 {pct(same, 50):7.2f}  p99 {pct(same, 99):7.2f}")
    cross50, cross99 = pct(cross, 50), pct(cross, 99)
    print(f"  approved on B (cross-replica)  p50 {cross50:7.2f}  p99 {cross99:7.2f}   (target p99 <= 100)")
    print(f"throughput of allowed calls, {args.sessions} sessions, {args.seconds:g}s:")
    print(f"  one replica   {one:8.0f} calls/s")
    print(f"  two replicas  {two:8.0f} calls/s  = {two / one:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--sessions", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
