"""New sessions through a stdio upstream: first-call latency with and without the spare; 300 at once under the caps.

Starts `holdgate serve` (SQLite in a scratch directory, log level warning) in front of the demo jobs
server (`examples/jobs_server.py`, a Python MCP server built on the SDK) as a stdio upstream, and
speaks the 2025-11-25 wire to it with plain HTTP requests (no SDK client in the measurement).

- **first call**: `--sessions` sessions one after another, each opened (initialize, initialized),
  then two `list-async-jobs` calls timed, then ended (DELETE), `--gap` seconds apart (time for the
  next spare to start: a session that comes sooner waits for the rest of its start). With spares
  (the default) and with `HOLDGATE_STDIO_SPARES=false`. The second call is the warm yardstick:
  first minus second is what opening the upstream added.
- **300 at once**: `--concurrent` sessions try to open at the same moment, spread over `--grants`
  grants, against the default caps (`HOLDGATE_MAX_SESSIONS`, `HOLDGATE_MAX_SESSIONS_PER_GRANT`);
  each admitted one makes a call (so its stdio child runs). Reported: the answers by HTTP status,
  and the memory of holdgate with all its child processes (RSS, and PSS, which counts shared pages
  once) before and with the sessions open. holdgate runs with `--nofile` file descriptors (1024, a
  common default soft limit), where uncapped sessions used to run out.

Usage: python bench/bench_sessions.py [--sessions 20] [--gap 3] [--only first|crowd] [--concurrent 300] [--grants 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
HOLDGATE = Path(sys.executable).parent / "holdgate"
JOBS_SERVER = ROOT / "examples/jobs_server.py"
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def call(request_id: int) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "list-async-jobs", "arguments": {}},
    }


def rpc_answer(response: httpx2.Response) -> dict:
    """The JSON-RPC answer of a POST: plain JSON, or the last event of an SSE stream (a call silent for
    `HOLDGATE_STREAM_KEEPALIVE_S`, e.g. one waiting for its child to start on a busy host, is streamed)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return response.json()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Holdgate:
    """One `holdgate serve` in a scratch directory, with the jobs server as its stdio upstream."""

    def __init__(self, scratch: Path, *, grants: int, nofile: int, **env: str) -> None:
        config = scratch / "config"
        config.mkdir(parents=True)
        policy = {"version": "1", "default": "deny", "tools": {"list-async-jobs": {"action": "allow"}}}
        (config / "policy.json").write_text(json.dumps(policy))
        jobs = {"command": sys.executable, "args": [str(JOBS_SERVER)], "env": {"JOBS_STATE_DIR": str(scratch / "jobs")}}
        (config / "servers.json").write_text(json.dumps({"mcpServers": {"jobs": jobs}}))
        self.env = {
            **os.environ,
            "HOLDGATE_CONFIG_DIR": str(config),
            "HOLDGATE_DATA_DIR": str(scratch / "data"),
            **{f"HOLDGATE_{key.upper()}": value for key, value in env.items()},
        }
        self.tokens = [self._grant(f"bench-{index}") for index in range(grants)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp/jobs"

        def limit_files() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        self.process = subprocess.Popen(
            [str(HOLDGATE), "serve", "--port", str(self.port), "--log-level", "warning"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=limit_files,
        )

    def _grant(self, name: str) -> str:
        subprocess.run(
            [str(HOLDGATE), "db", "upgrade"], env=self.env, capture_output=True, check=True
        )  # the CLI refuses a missing database
        created = subprocess.run(
            [str(HOLDGATE), "grant", "create", name], env=self.env, capture_output=True, text=True, check=True
        )
        return created.stdout.strip().splitlines()[-1]

    async def ready(self) -> None:
        async with httpx2.AsyncClient() as http:
            for _ in range(300):
                if self.process.poll() is not None:
                    raise RuntimeError(f"holdgate exited with {self.process.returncode} during start-up")
                try:
                    await http.get(f"http://127.0.0.1:{self.port}/healthz")
                    return
                except httpx2.HTTPError:
                    await asyncio.sleep(0.2)
        raise TimeoutError("holdgate did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)

    def memory_mb(self) -> tuple[float, float, int]:
        """RSS and PSS of holdgate and every process under it (MB), and how many processes that is."""
        rss = pss = 0
        pids = descendants(self.process.pid) | {self.process.pid}
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                pass
        return rss / 1024, pss / 1024, len(pids)


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except FileNotFoundError:
            continue
        for child in map(int, children):
            found |= {child} | descendants(child)
    return found


async def open_session(http: httpx2.AsyncClient, url: str) -> tuple[int, str | None]:
    opened = await http.post(url, json=INITIALIZE)
    if opened.status_code != 200:
        return opened.status_code, None
    session = opened.headers["mcp-session-id"]
    await http.post(url, json=INITIALIZED, headers={"Mcp-Session-Id": session})
    return 200, session


async def timed_call(http: httpx2.AsyncClient, url: str, session: str, request_id: int) -> float:
    started = time.perf_counter()
    answer = await http.post(url, json=call(request_id), headers={"Mcp-Session-Id": session})
    elapsed = (time.perf_counter() - started) * 1000
    assert answer.status_code == 200 and "result" in rpc_answer(answer), answer.text
    return elapsed


async def first_calls(spares: bool, sessions: int, gap: float, nofile: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as scratch:
        gateway = Holdgate(Path(scratch), grants=1, nofile=nofile, stdio_spares=str(spares).lower())
        try:
            await gateway.ready()
            await asyncio.sleep(gap)  # the first spare starts after the gateway is up
            first, second = [], []
            async with httpx2.AsyncClient(
                headers={**HEADERS, "Authorization": f"Bearer {gateway.tokens[0]}"}, timeout=60
            ) as http:
                for _ in range(sessions):
                    status, session = await open_session(http, gateway.url)
                    assert session is not None, status
                    first.append(await timed_call(http, gateway.url, session, 2))
                    second.append(await timed_call(http, gateway.url, session, 3))
                    await http.delete(gateway.url, headers={"Mcp-Session-Id": session})
                    await asyncio.sleep(gap)
            return first, second
        finally:
            gateway.stop()


async def crowd(concurrent: int, grants: int, nofile: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        gateway = Holdgate(Path(scratch), grants=grants, nofile=nofile)
        try:
            await gateway.ready()
            await asyncio.sleep(2)  # the spare is up
            idle_rss, idle_pss, idle_processes = gateway.memory_mb()
            statuses: Counter[int | str] = Counter()
            limits: Counter[str] = Counter()
            calls: Counter[str] = Counter()
            opened: list[tuple[httpx2.AsyncClient, str]] = []
            clients = [
                httpx2.AsyncClient(headers={**HEADERS, "Authorization": f"Bearer {token}"}, timeout=120)
                for token in gateway.tokens
            ]
            start = asyncio.Event()

            async def attempt(index: int) -> None:
                http = clients[index % grants]
                await start.wait()
                try:
                    answer = await http.post(gateway.url, json=INITIALIZE)
                except httpx2.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    return
                statuses[answer.status_code] += 1
                if answer.status_code != 200:
                    try:
                        limits[answer.json()["error"]["data"]["limit"]] += 1
                    except (ValueError, KeyError, TypeError):
                        limits[f"HTTP {answer.status_code}: {answer.text[:80]}"] += 1
                    return
                session = answer.headers["mcp-session-id"]
                opened.append((http, session))
                await http.post(gateway.url, json=INITIALIZED, headers={"Mcp-Session-Id": session})
                called = await http.post(gateway.url, json=call(2), headers={"Mcp-Session-Id": session})
                if called.status_code != 200:
                    calls[f"HTTP {called.status_code}"] += 1
                elif "result" in (answered := rpc_answer(called)):
                    calls["ok"] += 1  # its stdio child runs from here on
                else:
                    calls[answered["error"]["message"][-60:]] += 1

            tasks = [asyncio.create_task(attempt(index)) for index in range(concurrent)]
            started = time.perf_counter()
            start.set()
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
            busy_rss, busy_pss, busy_processes = gateway.memory_mb()
            # With all those sessions still open, a new one per grant once the token cache (5 s) has expired:
            # the grant lookup reads the database again.
            await asyncio.sleep(6)
            later: Counter[int] = Counter()

            async def one_more(http: httpx2.AsyncClient) -> None:
                answer = await http.post(gateway.url, json=INITIALIZE)
                later[answer.status_code] += 1
                if answer.status_code == 200:
                    opened.append((http, answer.headers["mcp-session-id"]))

            await asyncio.gather(*(one_more(http) for http in clients))
            for http, session in opened:
                await http.delete(gateway.url, headers={"Mcp-Session-Id": session})
            for http in clients:
                await http.aclose()
        finally:
            gateway.stop()
    caps = f"HOLDGATE_MAX_SESSIONS / _PER_GRANT at their defaults, {grants} grants, RLIMIT_NOFILE {nofile}"
    print(f"{concurrent} sessions opening at once ({caps}):")
    answers = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items(), key=str))
    print(f"  answers by HTTP status: {answers}   (all opened and called in {elapsed:.1f} s)")
    print(f"  refusals by limit: {dict(limits)}")
    print(f"  first calls of the sessions opened: {dict(calls)}")
    print(f"  6 s later, one more session per grant: {dict(later)}")
    print(f"  memory before: RSS {idle_rss:7.0f} MB  PSS {idle_pss:7.0f} MB  ({idle_processes} processes)")
    print(f"  memory open:   RSS {busy_rss:7.0f} MB  PSS {busy_pss:7.0f} MB  ({busy_processes} processes)")
    if calls["ok"]:
        per_rss, per_pss = (busy_rss - idle_rss) / calls["ok"], (busy_pss - idle_pss) / calls["ok"]
        print(f"  per open session: RSS {per_rss:.1f} MB  PSS {per_pss:.1f} MB (holdgate's share and its child)")


async def main(args: argparse.Namespace) -> None:
    if args.only != "crowd":
        await first_call_figures(args)
    if args.only != "first":
        await crowd(args.concurrent, args.grants, args.nofile)


async def first_call_figures(args: argparse.Namespace) -> None:
    print(f"first call of a new session through a stdio upstream (jobs server), {args.sessions} sessions (ms):")
    for spares in (True, False):
        first, second = await first_calls(spares, args.sessions, args.gap, args.nofile)
        added = [a - b for a, b in zip(first, second, strict=True)]
        label = "with spare   " if spares else "without spare"
        print(
            f"  {label}  first p50 {pct(first, 50):7.1f}  p95 {pct(first, 95):7.1f}   "
            f"second p50 {pct(second, 50):5.1f}   added p50 {pct(added, 50):7.1f}  p95 {pct(added, 95):7.1f}"
        )
    print(f"  (target with the spare: added <= 50 ms; sessions {args.gap:g} s apart, the time the next spare has)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between sessions (the next spare starts)")
    parser.add_argument("--concurrent", type=int, default=300)
    parser.add_argument("--grants", type=int, default=10)
    parser.add_argument("--only", choices=["first", "crowd"], help="run one of the two parts")
    parser.add_argument("--nofile", type=int, default=1024, help="holdgate's file descriptor limit")
    asyncio.run(main(parser.parse_args()))
