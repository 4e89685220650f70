"""The cost of `tasks/get`: a 2026-07-28 client polling a held call's task, on one replica and across two.

Starts server-everything over Streamable HTTP as the upstream, a fresh PostgreSQL database and two
`holdgate serve` processes on it (this checkout's code). A 2026-era client (raw JSON-RPC, one POST per
request, as the tasks extension is spoken) calls `get-sum`, which needs approval, on replica A and gets a
task; then it sends `tasks/get` for that task N times to A only, and N times alternating A and B (any
replica answers: the task and its decision are rows). The same again once the task has completed (its
`tasks/get` carries the result). Prints p50/p95 of each, in ms, client side (one persistent HTTP client).

`--passthrough`: the upstream's own task instead (server-everything's `simulate-research-query`, allowed, which
the upstream runs as a task for about 4 s): `tasks/get` on A while it works (each one a `tasks/get` upstream),
then, once it has completed (its outcome kept in the row), on A only and alternating A and B.

Usage: python bench/bench_tasks.py [--requests 400] [--passthrough]
The PostgreSQL server: HOLDGATE_TEST_POSTGRES_URL or postgresql+asyncpg://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time

import httpx2
from bench_gateway import pct
from bench_replicas import APPROVAL, APPROVER_TOKEN, two_replicas

MODERN = "2026-07-28"
EXTENSION = "io.modelcontextprotocol/tasks"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {"extensions": {EXTENSION: {}}},
    "io.modelcontextprotocol/clientInfo": {"name": "bench-tasks", "version": "0"},
}


class Client:
    def __init__(self, http: httpx2.AsyncClient, token: str) -> None:
        self.http, self.token, self.ids = http, token, itertools.count(1)

    async def request(self, url: str, method: str, params: dict, name: str) -> dict:
        headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": method,
            "Mcp-Name": name,
            "Authorization": f"Bearer {self.token}",
        }
        body = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": {**params, "_meta": META}}
        response = await self.http.post(url, json=body, headers=headers)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
            return json.loads(data[-1])
        return response.json()


async def poll(client: Client, urls: list[str], task_id: str, count: int) -> list[float]:
    latencies = []
    for url in itertools.islice(itertools.cycle(urls), count):
        started = time.perf_counter()
        answer = await client.request(url, "tasks/get", {"taskId": task_id}, task_id)
        latencies.append((time.perf_counter() - started) * 1000)
        assert "result" in answer, answer
    return latencies


async def main(args: argparse.Namespace) -> None:
    async with (
        two_replicas({"get-sum": APPROVAL, "simulate-research-query": {"action": "allow"}}) as (token, a_url, b_url),
        httpx2.AsyncClient(timeout=30) as http,
    ):
        a_mcp, b_mcp = f"{a_url}/mcp/everything", f"{b_url}/mcp/everything"
        client = Client(http, token)
        if args.passthrough:
            await passthrough(client, a_mcp, b_mcp, args.requests)
            return
        made = await client.request(a_mcp, "tools/call", {"name": "get-sum", "arguments": {"a": 1, "b": 2}}, "get-sum")
        task_id = made["result"]["taskId"]
        await poll(client, [a_mcp, b_mcp], task_id, 20)  # warm both replicas
        working_one = await poll(client, [a_mcp], task_id, args.requests)
        working_two = await poll(client, [a_mcp, b_mcp], task_id, args.requests)
        listed = await http.get(
            f"{b_url}/api/decisions?status=pending", headers={"Authorization": f"Bearer {APPROVER_TOKEN}"}
        )
        decision_id = listed.json()["items"][0]["id"]
        await http.post(
            f"{b_url}/api/decisions/{decision_id}/approve",
            headers={"Authorization": f"Bearer {APPROVER_TOKEN}"},
            json={},
        )
        for _ in range(200):
            got = await client.request(b_mcp, "tasks/get", {"taskId": task_id}, task_id)
            if got["result"]["status"] != "working":
                break
            await asyncio.sleep(0.05)
        assert got["result"]["status"] == "completed", got
        done_one = await poll(client, [a_mcp], task_id, args.requests)
        done_two = await poll(client, [a_mcp, b_mcp], task_id, args.requests)
    print(f"PostgreSQL, 2 replicas, {os.cpu_count()} CPUs, {args.requests} sequential tasks/get each, ms (client side)")
    for label, values in (
        ("working task, one replica (A)      ", working_one),
        ("working task, alternating A and B  ", working_two),
        ("completed task, one replica (A)    ", done_one),
        ("completed task, alternating A and B", done_two),
    ):
        print(f"  {label}  p50 {pct(values, 50):6.2f}  p95 {pct(values, 95):6.2f}")


async def passthrough(client: Client, a_mcp: str, b_mcp: str, count: int) -> None:
    """The upstream's own task, passed through: `tasks/get` while it works (upstream each time), then done."""
    arguments = {"name": "simulate-research-query", "arguments": {"topic": "bench"}}
    made = await client.request(a_mcp, "tools/call", arguments, "simulate-research-query")
    task_id = made["result"]["taskId"]
    working: list[float] = []
    while len(working) < count:
        started = time.perf_counter()
        got = await client.request(a_mcp, "tasks/get", {"taskId": task_id}, task_id)
        if got["result"]["status"] != "working":
            break
        working.append((time.perf_counter() - started) * 1000)
    for _ in range(400):
        got = await client.request(a_mcp, "tasks/get", {"taskId": task_id}, task_id)
        if got["result"]["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert got["result"]["status"] == "completed", got
    done_one = await poll(client, [a_mcp], task_id, count)
    done_two = await poll(client, [a_mcp, b_mcp], task_id, count)
    print(f"PostgreSQL, 2 replicas, {os.cpu_count()} CPUs, passed-through task, sequential tasks/get, ms (client side)")
    for label, values in (
        (f"working upstream task, A ({len(working)} gets)", working),
        (f"completed (row), A ({count})              ", done_one),
        (f"completed (row), alternating A and B ({count})", done_two),
    ):
        print(f"  {label}  p50 {pct(values, 50):6.2f}  p95 {pct(values, 95):6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--passthrough", action="store_true")
    asyncio.run(main(parser.parse_args()))
