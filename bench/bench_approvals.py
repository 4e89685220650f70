"""Approvals: decision-to-release latency, held-call capacity, timeout precision.

Each measurement runs against a fresh holdgate in its own process (SQLite in a scratch directory, the
default console channel, log level warning) in front of a small MCP upstream served over Streamable
HTTP in another process. The upstream's tools answer with `time.time()` taken the moment the call
reaches them, so "the upstream received the call" is observed, not inferred.

holdgate is started by this script (`--role holdgate`) the way `holdgate serve` starts it
(`create_app(Settings())` under `uvicorn.run`), inside `Probe`, an ASGI wrapper that only observes:
it notes when a `POST /api/decisions/{id}/approve` reaches the application (headers parsed, before
FastAPI, authentication or the database) — "the approve request arriving at holdgate" — when the
approving vote was committed and when the held call claimed its release (two `ApprovalService`
methods wrapped), and counts SQL statements by kind. Client-side figures (from just before the POST
is sent) are printed beside the server-side ones.

1. Decision to release: one MCP session makes `--decisions` held calls one after another; for each,
   the bench waits until the decision is pending, approves it over REST as an approver, and takes
   (upstream receipt - approve arrival), split into stages. Target p99 <= 20 ms.
2. Held-call capacity: `--held` calls held at once through /mcp (no progress token, so each waits up
   to HOLDGATE_APPROVAL_HOLD_S=600 s), spread over `--sessions` MCP sessions; then all approved in bulk:
   `POST /api/decisions/approve` with `--bulk-size` ids per request, one request after another (with
   `--single-votes`: one `POST /api/decisions/{id}/approve` per decision instead,
   `--approvers-concurrency` of them in flight). Reports holdgate's RSS (/proc/<pid>/status), the
   time to open all decisions, how long the voting took, when the last call reached the upstream and
   the clients, holdgate's CPU and SQL statements per decision. Target: 5,000 held in <= 1 GiB, all
   released within 5 s.
2b. The same, approved in one UPDATE written straight to the database (no votes), so the release
   path is timed apart from the per-vote cost; holdgate notices through its decision poll (1 s).
3. Timeout precision: `--timeouts` held calls on a rule with `timeout: --timeout-s`, started
   `--stagger-ms` apart, left to expire; lateness is decided_at - expires_at read from the database
   (the API rounds times to the second). Target p99 <= 1 s.

Usage: python bench/bench_approvals.py [--quick] [--decisions 200] [--held 5000] [--sessions 10]
       [--bulk-size 5000 | --single-votes [--approvers-concurrency 50]] [--no-db-release] [--timeouts 200]
       [--timeout-s 2] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import logging
import os
import platform
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import httpx2
import mcp_types as types
from bench_gateway import cpu_seconds, free_port
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

SCRIPT = Path(__file__).resolve()
HOLDGATE = Path(sys.executable).parent / "holdgate"
APPROVER, APPROVER_TOKEN = "alice", "bench-alice-token"
GRANT = "bench-agent"
UNLIMITED = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
BULK = "bulk"
"""The probe's marks key for bulk approvals (`POST /api/decisions/approve`)."""


# -- the processes under test ---------------------------------------------------------------------


def serve_upstream(port: int) -> None:
    """The upstream: two tools that report when the call reached them."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(name="bench-upstream", log_level="WARNING")

    @server.tool(name="release", structured_output=False)
    async def release(n: int) -> str:
        return json.dumps({"n": n, "received": time.time()})

    @server.tool(name="expire", structured_output=False)
    async def expire(n: int) -> str:
        return json.dumps({"n": n, "received": time.time()})

    server.run("streamable-http", host="127.0.0.1", port=port, json_response=True)


class Probe:
    """ASGI wrapper around holdgate: observation only, nothing in the service changes.

    - `marks[decision_id][event]`: when the approve request arrived (`arrived`, before FastAPI), when
      the approving vote was committed (`committed`, the service's after-commit notification), when
      the held call woke and asked to claim the release (`claim`), and when it had it (`claimed`);
    - `sql`: statements and commits holdgate sent to the database, by kind (`INSERT outbox`, ...);
    - cProfile of the event-loop thread between `POST /bench/profile?start=1` and `?stop=<file>`.
    `GET /bench/probe` answers {"marks": ..., "sql": ...}.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.marks: dict[str, dict[str, float]] = {}
        self.sql: dict[str, int] = {}
        self.profile: cProfile.Profile | None = None

    def mark(self, decision_id: str, event: str) -> None:
        self.marks.setdefault(decision_id, {}).setdefault(event, time.time())

    def instrument(self, engine: Any) -> None:
        from sqlalchemy import event

        from service.approvals import ApprovalService

        probe, notify, claim = self, ApprovalService._notify, ApprovalService.claim

        def notify_marked(service: ApprovalService, decision: Any) -> None:
            if decision.status == "approved" and decision.outcome is None:  # the approval, not the execution
                probe.mark(decision.id, "committed")
            notify(service, decision)

        async def claim_marked(service: ApprovalService, decision_id: str) -> Any:
            probe.mark(decision_id, "claim")
            try:
                return await claim(service, decision_id)
            finally:
                probe.mark(decision_id, "claimed")

        ApprovalService._notify, ApprovalService.claim = notify_marked, claim_marked

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def count_statement(_conn, _cursor, statement: str, *_args: Any) -> None:
            kind = sql_kind(statement)
            self.sql[kind] = self.sql.get(kind, 0) + 1

        @event.listens_for(engine.sync_engine, "commit")
        def count_commit(_conn) -> None:
            self.sql["COMMIT"] = self.sql.get("COMMIT", 0) + 1

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/api/decisions/approve" and scope["method"] == "POST":
                self.mark(BULK, "arrived")  # the first bulk request: when the approval began
            elif path.endswith("/approve") and scope["method"] == "POST":
                self.mark(path.rsplit("/", 2)[-2], "arrived")
            elif path == "/bench/probe":
                await self.answer(send, {"marks": self.marks, "sql": self.sql})
                return
            elif path == "/bench/profile":
                query = parse_qs(scope["query_string"].decode())
                if "start" in query:
                    self.profile = cProfile.Profile()
                    self.profile.enable()
                elif self.profile is not None:
                    self.profile.disable()
                    self.profile.dump_stats(query["stop"][0])
                    self.profile = None
                await self.answer(send, {})
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def answer(send: Any, payload: dict) -> None:
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def sql_kind(statement: str) -> str:
    """`UPDATE decisions`, `SELECT outbox_messages`, ... for a statement."""
    words = statement.split()
    verb = words[0].upper() if words else "?"
    upper = [w.upper() for w in words]
    after = {"INSERT": "INTO", "UPDATE": "UPDATE", "DELETE": "FROM", "SELECT": "FROM"}.get(verb)
    table = words[upper.index(after) + 1] if after in upper and upper.index(after) + 1 < len(words) else ""
    return f"{verb} {table.strip(chr(34))}".strip()


def serve_holdgate(port: int) -> None:
    """What `holdgate serve --log-level warning` does, wrapped in the probe."""
    import uvicorn

    from service.app import build_state, create_app, prepare_serving_process
    from service.settings import Settings

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(port=port)
    state = build_state(settings)
    app = Probe(create_app(settings, state=state))
    app.instrument(state.engine)
    prepare_serving_process()
    uvicorn.run(app, host=settings.host, port=port, log_level="warning", timeout_graceful_shutdown=10)


def policy(timeout_s: float) -> dict[str, Any]:
    approval = {"approvers": [APPROVER], "channels": ["console"]}
    return {
        "version": "1",
        "default": "deny",
        "people": {APPROVER: {"token_sha256": hashlib.sha256(APPROVER_TOKEN.encode()).hexdigest()}},
        "tools": {
            "release": {"action": "require_approval", "approval": {**approval, "timeout": "15m"}},
            "expire": {"action": "require_approval", "approval": {**approval, "timeout": timeout_s}},
        },
    }


@dataclass
class Holdgate:
    proc: subprocess.Popen
    url: str
    token: str
    db: Path
    log: Path

    def rss_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the holdgate process, MiB."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the holdgate process has used so far."""
        return cpu_seconds(self.proc.pid)

    def mcp(self) -> str:
        return f"{self.url}/mcp/bench"


@asynccontextmanager
async def profiled(gw: Holdgate, out: Path | None) -> AsyncIterator[None]:
    """With `--profile DIR`: cProfile holdgate's event-loop thread for the duration, into `out` (pstats)."""
    if out is None:
        yield
        return
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        (await http.post("/bench/profile", params={"start": "1"})).raise_for_status()
        try:
            yield
        finally:
            (await http.post("/bench/profile", params={"stop": str(out.resolve())})).raise_for_status()


@asynccontextmanager
async def holdgate(workdir: Path, upstream_url: str, timeout_s: float) -> AsyncIterator[Holdgate]:
    workdir.mkdir(parents=True)
    config = workdir / "config"
    config.mkdir()
    (config / "policy.json").write_text(json.dumps(policy(timeout_s), indent=2))
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"bench": {"url": upstream_url}}}))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOLDGATE_")},
        "HOLDGATE_CONFIG_DIR": str(config),
        "HOLDGATE_DATA_DIR": str(workdir / "data"),
        "HOLDGATE_APPROVAL_HOLD_S": "600",
        "HOLDGATE_MAX_SESSIONS_PER_GRANT": "64",  # --sessions of one grant (the default cap is 10)
        "HOLDGATE_MAX_SESSIONS": "64",
    }
    subprocess.run(
        [str(HOLDGATE), "db", "upgrade"], env=env, cwd=workdir, capture_output=True, check=True
    )  # the CLI refuses a missing database
    token = (
        subprocess.run(
            [str(HOLDGATE), "grant", "create", GRANT], env=env, cwd=workdir, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    log = workdir / "holdgate.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--role", "holdgate", "--port", str(port)],
            env=env,
            cwd=workdir,  # no stray .env file
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    gw = Holdgate(proc, f"http://127.0.0.1:{port}", token, workdir / "data/holdgate.db", log)
    try:
        await wait_http(f"{gw.url}/healthz", proc, log)
        yield gw
    except BaseException:
        # The log goes with the scratch directory: show its end while it is still there.
        lines = [line for line in log.read_text(errors="replace").splitlines() if "APPROVAL NEEDED" not in line]
        print("\n".join(["--- the end of holdgate's log:", *lines[-60:]]), file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_http(url: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    async with httpx2.AsyncClient() as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited\n{log.read_text()[-3000:] if log else ''}")
            try:
                await http.get(url)
                return
            except httpx2.HTTPError:
                await asyncio.sleep(0.1)
    raise TimeoutError(url)


# -- clients --------------------------------------------------------------------------------------


@asynccontextmanager
async def mcp_session(gw: Holdgate) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {gw.token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=3600), limits=UNLIMITED) as http,
        streamable_http_client(gw.mcp(), http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


class WireClient:
    """A lean MCP client for load generation: one session, each request one raw JSON-RPC POST over aiohttp.

    The capacity section runs 5,000 calls from this process on the same two cores as holdgate and the
    upstream; the SDK's client (httpx2 on h11, pydantic, anyio streams) spends ~1.7 ms of CPU per result
    there, which a real fleet of agents spends on its own machines. This one sends the bytes an SDK
    client sends (2025-11-25 era, `Mcp-Session-Id`) and reads a JSON or SSE answer; `--sdk-clients` runs
    the SDK's client instead.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": "2025-11-25",
        }
        self._ids = iter(range(1, 1 << 62))

    async def initialize(self) -> None:
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
        await self.request("initialize", hello)
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The `CallToolResult` as JSON; a JSON-RPC error raises."""
        return await self.request("tools/call", {"name": tool, "arguments": arguments})

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self._ids)
        for reply in await self._post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}):
            if reply.get("id") == request_id and "error" in reply:
                raise RuntimeError(f"JSON-RPC error {reply['error']}")
            if reply.get("id") == request_id and "result" in reply:
                return reply["result"]
        raise RuntimeError(f"no answer to {method} {request_id}")

    async def _post(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """POST one message; the JSON-RPC messages of the answer (a JSON body, or an SSE stream read to its end)."""
        async with self.http.post(self.url, data=json.dumps(message), headers=self.headers) as response:
            body = await response.read()
            if response.status >= 400:
                raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
            if session_id := response.headers.get("mcp-session-id"):
                self.headers["Mcp-Session-Id"] = session_id
            kind = response.content_type
        if not body:
            return []
        if kind == "application/json":
            return [json.loads(body)]
        lines = body.decode().splitlines()
        return [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()]


@asynccontextmanager
async def wire_session(gw: Holdgate) -> AsyncIterator[WireClient]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=3600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        client = WireClient(http, gw.mcp(), gw.token)
        await client.initialize()
        yield client


def approver_client(gw: Holdgate, connections: int = 100) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=gw.url,
        headers={"Authorization": f"Bearer {APPROVER_TOKEN}"},
        timeout=120,
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


@dataclass
class CallResult:
    """One held call as the client saw it."""

    n: int
    done_at: float = 0.0
    received: float | None = None
    """upstream receipt time (the tool's own `time.time()`), when it ran"""
    error: str | None = None


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def held_call(session: ClientSession | WireClient, tool: str, n: int) -> CallResult:
    out = CallResult(n)
    try:
        result = await session.call_tool(tool, {"n": n})
    except Exception as exc:
        out.done_at, out.error = time.time(), f"{type(exc).__name__}: {exc}"
        return out
    out.done_at = time.time()
    if isinstance(result, dict):  # a WireClient's answer: the result's JSON
        text = "\n".join(c["text"] for c in result.get("content", []) if c.get("type") == "text")
        failed = bool(result.get("isError"))
    else:
        text, failed = text_of(result), bool(result.is_error)
    if failed:
        out.error = text
    else:
        out.received = json.loads(text)["received"]
    return out


async def pending_ids(http: httpx2.AsyncClient) -> tuple[dict[str, int], int]:
    """Every pending decision (pages of 500) as id -> the call's `n`, and the total the API reports."""
    ids: dict[str, int] = {}
    total = None
    while total is None or len(ids) < total:
        params = {"status": "pending", "limit": 500, "offset": len(ids)}
        page = (await http.get("/api/decisions", params=params)).json()
        total = page["total"]
        if not page["items"]:
            break
        ids |= {item["id"]: item["arguments"]["n"] for item in page["items"]}
    return ids, total or 0


async def sql_counts(http: httpx2.AsyncClient) -> dict[str, int]:
    return (await http.get("/bench/probe")).json()["sql"]


async def sql_settled(http: httpx2.AsyncClient, quiet: float = 1.0, limit: float = 120) -> dict[str, int]:
    """SQL counts once holdgate has sent no statement for `quiet` seconds (the outbox has drained)."""
    deadline = time.time() + limit
    before = await sql_counts(http)
    while time.time() < deadline:
        await asyncio.sleep(quiet)
        after = await sql_counts(http)
        if after == before:
            break
        before = after
    return before


async def pending_count(http: httpx2.AsyncClient) -> int:
    response = await http.get("/api/decisions", params={"status": "pending", "limit": 1})
    return response.json()["total"]


# -- figures --------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p100 = max)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def add(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.missed.append(what)
        return "ok" if ok else "MISSED"

    def dist(self, label: str, values_ms: list[float], target: str = "", ok: bool | None = None) -> None:
        mark = "" if ok is None else self.check(ok, label.strip())
        self.add(
            f"  {label:<50} {pct(values_ms, 50):8.2f} {pct(values_ms, 99):8.2f} {max(values_ms):8.2f}"
            f"   {target:<14} {mark}"
        )


# -- 1. decision to release -----------------------------------------------------------------------


async def bench_release(gw: Holdgate, count: int, warmup: int, report: Report) -> None:
    send_ms, vote_ms, e2e_ms = [], [], []
    ids: list[tuple[str, float]] = []
    async with mcp_session(gw) as session, approver_client(gw, 4) as http:
        for i in range(warmup + count):
            call = asyncio.create_task(held_call(session, "release", i))
            while True:
                page = (await http.get("/api/decisions", params={"status": "pending", "limit": 1})).json()
                if page["items"]:
                    decision_id = page["items"][0]["id"]
                    break
                await asyncio.sleep(0.002)
            sent = time.time()
            response = await http.post(f"/api/decisions/{decision_id}/approve")
            answered = time.time()
            assert response.status_code == 200 and response.json()["decided"], response.text
            result = await asyncio.wait_for(call, 30)
            assert result.error is None and result.received is not None, result.error
            if i >= warmup:
                ids.append((decision_id, result.received))
                send_ms.append((result.received - sent) * 1000)
                vote_ms.append((answered - sent) * 1000)
                e2e_ms.append((result.done_at - sent) * 1000)
        marks = (await http.get("/bench/probe")).json()["marks"]
    stages: dict[str, list[float]] = {}
    for decision_id, received in ids:
        at = {**marks[decision_id], "received": received}
        for label, start, end in STAGES:
            stages.setdefault(label, []).append((at[end] - at[start]) * 1000)
    arrival_ms = stages.pop("approve arrives at holdgate -> upstream has call")
    report.add(f"1. decision to release: {count} decisions, one after another (ms)")
    report.add(f"  {'':<50} {'p50':>8} {'p99':>8} {'max':>8}   target")
    report.dist("approve arrives at holdgate -> upstream has call", arrival_ms, "p99 <= 20", pct(arrival_ms, 99) <= 20)
    for label, values in stages.items():
        report.dist(label, values)
    report.dist("client sends approve -> upstream has call", send_ms)
    report.dist("client sends approve -> approve answered (200)", vote_ms)
    report.dist("client sends approve -> client has the result", e2e_ms)


DB_STAGES = [
    ("approved in the database -> upstream has call", "approved", "received"),
    ("  of which: approved -> held call wakes, claims", "approved", "claim"),
    ("            claim (compare-and-set claimed_at)", "claim", "claimed"),
    ("            claimed -> upstream has call", "claimed", "received"),
]
STAGES = [
    ("approve arrives at holdgate -> upstream has call", "arrived", "received"),
    ("  of which: arrival -> approving vote committed", "arrived", "committed"),
    ("            committed -> held call wakes, claims", "committed", "claim"),
    ("            claim (handed over, or CAS)", "claim", "claimed"),
    ("            claimed -> upstream has call", "claimed", "received"),
]


# -- 2. held-call capacity ------------------------------------------------------------------------


async def bench_capacity(
    gw: Holdgate,
    held: int,
    sessions: int,
    concurrency: int,
    report: Report,
    profile: Path | None = None,
    via_db: bool = False,
    idle_s: float = 10.0,
    bulk_size: int | None = 5000,
    upstream_pid: int | None = None,
    sdk_clients: bool = False,
) -> None:
    """Approve every decision with bulk POSTs of `bulk_size` ids (None: one REST vote each, `concurrency` in
    flight); `via_db`: in one UPDATE from this process instead (no votes)."""
    idle_rss, _ = gw.rss_mib()
    per_session = [held // sessions + (1 if s < held % sessions else 0) for s in range(sessions)]
    all_held = asyncio.Event()
    results: list[CallResult] = []
    ready = asyncio.Barrier(sessions + 1)

    async def client(index: int, calls: int) -> None:
        base = sum(per_session[:index])
        async with mcp_session(gw) if sdk_clients else wire_session(gw) as session:
            await ready.wait()
            tasks = [asyncio.create_task(held_call(session, "release", base + k)) for k in range(calls)]
            results.extend(await asyncio.gather(*tasks))
            await all_held.wait()  # keep the session until every session is done

    clients = [asyncio.create_task(client(s, c)) for s, c in enumerate(per_session)]
    async with approver_client(gw, concurrency + 4) as http:
        cpu_start, open_sql = gw.cpu_s(), await sql_counts(http)
        await ready.wait()
        opening = time.time()
        deadline = opening + 900
        count = 0
        while count < held:
            if time.time() > deadline or any(c.done() for c in clients):
                raise RuntimeError(f"only {count} of {held} decisions opened; see {gw.log}")
            await asyncio.sleep(0.25)
            count = await pending_count(http)
        opened_s = time.time() - opening
        open_cpu = gw.cpu_s() - cpu_start
        idle_sql = await sql_settled(http, quiet=0.5, limit=30)  # the console channel's request notifications
        open_sql = sum(v - open_sql.get(k, 0) for k, v in idle_sql.items() if k != "COMMIT") / held
        idle_cpu, idle_from = gw.cpu_s(), time.time()
        await asyncio.sleep(idle_s)  # nothing happens: what does holding cost?
        idle_for = time.time() - idle_from
        idle_cpu = (gw.cpu_s() - idle_cpu) / idle_for
        idle_sql = sum(v - idle_sql.get(k, 0) for k, v in (await sql_counts(http)).items() if k != "COMMIT") / idle_for
        held_rss, held_hwm = gw.rss_mib()
        ids, total = await pending_ids(http)
        assert total == held == len(ids), (total, held, len(ids))
        sql_before = await sql_counts(http)

        queue: asyncio.Queue[str] = asyncio.Queue()
        for decision_id in ids:
            queue.put_nowait(decision_id)
        refused: list[str] = []

        async def approver() -> None:
            while not queue.empty():
                decision_id = queue.get_nowait()
                response = await http.post(f"/api/decisions/{decision_id}/approve")
                if response.status_code != 200:
                    refused.append(f"{response.status_code} {response.text[:200]}")

        async def bulk_approver() -> None:
            listed = list(ids)
            for start in range(0, len(listed), bulk_size):
                response = await http.post("/api/decisions/approve", json={"ids": listed[start : start + bulk_size]})
                if response.status_code != 200:
                    refused.append(f"{response.status_code} {response.text[:200]}")
                    continue
                refused.extend(f"{i['id']}: {i['message']}" for i in response.json()["results"] if i["code"])

        async with profiled(gw, profile):
            cpu_start, bench_cpu = gw.cpu_s(), time.process_time()
            upstream_cpu = cpu_seconds(upstream_pid) if upstream_pid else 0.0
            started = time.time()
            if via_db:
                approve_all_in_db(gw.db, started)
            elif bulk_size:
                await bulk_approver()
            else:
                await asyncio.gather(*(approver() for _ in range(concurrency)))
            voted_s = time.time() - started
            while len(results) < held:
                if time.time() - started > 600:
                    raise RuntimeError(f"only {len(results)} of {held} calls came back; see {gw.log}")
                await asyncio.sleep(0.01)
            release_cpu, bench_cpu = gw.cpu_s() - cpu_start, time.process_time() - bench_cpu
            upstream_cpu = cpu_seconds(upstream_pid) - upstream_cpu if upstream_pid else float("nan")
            release_s = time.time() - started
        sql_after = await sql_settled(http)
        notified = channel_updates_since(gw.db, started)
        marks = (await http.get("/bench/probe")).json()["marks"]
    all_held.set()
    await asyncio.gather(*clients)
    after_rss, after_hwm = gw.rss_mib()

    ran = [r for r in results if r.received is not None]
    errors = [r.error for r in results if r.error is not None]
    upstream_s = max(r.received for r in ran) - started if ran else float("nan")
    clients_s = max(r.done_at for r in results) - started
    first_s = min(r.received for r in ran) - started if ran else float("nan")
    by_n = {r.n: r for r in ran}
    stages: dict[str, list[float]] = {}
    for decision_id, n in ids.items():
        if n not in by_n or "claimed" not in marks.get(decision_id, {}):
            continue
        bulk_arrived = marks.get(BULK, {}).get("arrived")  # a bulk approval arrives once for all its decisions
        at = {"arrived": bulk_arrived, **marks[decision_id], "received": by_n[n].received, "approved": started}
        for label, start, end in DB_STAGES if via_db else STAGES:
            stages.setdefault(label, []).append((at[end] - at[start]) * 1000)
    arrived = sorted(m["arrived"] for m in marks.values() if "arrived" in m)
    sql = {kind: sql_after.get(kind, 0) - sql_before.get(kind, 0) for kind in sql_after}
    statements = sum(v for k, v in sql.items() if k != "COMMIT")
    how = (
        "approved in ONE database UPDATE from this process (no votes: isolates the release path; "
        "holdgate notices through its 1 s decision poll)"
        if via_db
        else f"approved in bulk: POST /api/decisions/approve with up to {bulk_size} ids, one request after another"
        if bulk_size
        else f"approved one by one: {concurrency} POST /api/decisions/{{id}}/approve in flight"
    )
    step = "2b" if via_db else "2"
    report.add()
    report.add(
        f"{step}. held-call capacity: {held} calls held at once ({sessions} MCP sessions x ~{held // sessions} "
        f"concurrent calls, no progress token; clients: {'SDK ClientSession' if sdk_clients else 'WireClient'}), {how}"
    )
    report.add(
        f"  {'time to open all decisions (first call sent -> all pending)':<62} {opened_s:8.2f} s"
        f"  (holdgate CPU {open_cpu:.1f} s = {1000 * open_cpu / held:.1f} ms/call; {open_sql:.1f} SQL statements/call)"
    )
    report.add(f"  {'holdgate RSS before the calls':<62} {idle_rss:8.0f} MiB")
    ok = max(held_hwm, after_hwm) <= 1024
    report.add(
        f"  {'holdgate RSS with all held (peak so far)':<62} {held_rss:8.0f} MiB (peak {held_hwm:.0f})"
        f"   <= 1024 MiB  {report.check(ok, f'{step}: RSS with all held')}"
    )
    report.add(f"  {'holdgate RSS after all released (peak)':<62} {after_rss:8.0f} MiB (peak {after_hwm:.0f})")
    report.add(
        f"  {f'holdgate CPU while all {held} just wait ({idle_for:.0f} s)':<62} {100 * idle_cpu:8.0f} % of a core"
        f"  ({idle_sql:.0f} SQL statements/s)"
    )
    cpu = f"holdgate CPU {release_cpu:.1f} s = {1000 * release_cpu / held:.1f} ms/decision until all released"
    if via_db:
        report.add(f"  {'approving: the one UPDATE committed':<62} {voted_s:8.2f} s  ({cpu})")
    elif bulk_size:
        posts = -(-held // bulk_size)
        report.add(f"  {f'approving: {posts} bulk POST(s) answered':<62} {voted_s:8.2f} s  ({cpu})")
    else:
        report.add(f"  {'approving: all votes answered':<62} {voted_s:8.2f} s  ({held / voted_s:.0f} votes/s; {cpu})")
        if arrived:
            report.add(f"  {'approve requests reaching holdgate, first -> last':<62} {arrived[-1] - arrived[0]:8.2f} s")
    report.add(f"  {'releasing: first call reaches the upstream':<62} {first_s:8.2f} s")
    ok = upstream_s <= 5
    report.add(
        f"  {'releasing: all calls reached the upstream':<62} {upstream_s:8.2f} s"
        f"   <= 5 s        {report.check(ok, f'{step}: all released to upstream')}"
    )
    ok = clients_s <= 5
    report.add(
        f"  {'releasing: all results back at the clients':<62} {clients_s:8.2f} s"
        f"   <= 5 s        {report.check(ok, f'{step}: all results at clients')}"
    )
    report.add(
        f"  {'CPU while releasing: holdgate / upstream / this process':<62} {release_cpu:8.1f} / "
        f"{upstream_cpu:.1f} / {bench_cpu:.1f} s  (of {2 * release_s:.1f} core-s on 2 cores)"
    )
    count, unsent, last_sent = notified
    report.add(
        f"  {'channel updates (console) all sent, after the approval':<62} {last_sent - started:8.2f} s"
        f"  ({count} update rows, {unsent} unsent; they wait while holdgate's loop is saturated, up to 5 s at a time)"
    )
    report.add(
        f"  {'calls run upstream / errors / approve refusals':<62} {len(by_n):8d} / {len(errors)} / {len(refused)}"
    )
    for error in (errors + refused)[:3]:
        report.add(f"    e.g. {error[:160]}")
    work = "release, execution, outbox" if via_db else "vote, release, execution, outbox"
    report.add(
        f"  database work per decision ({work}): {statements / held:.1f} statements, "
        f"{sql.get('COMMIT', 0) / held:.1f} commits"
    )
    top = sorted(((v, k) for k, v in sql.items() if k != "COMMIT" and v), reverse=True)
    report.add("    " + ", ".join(f"{k} {v / held:.1f}" for v, k in top))
    if stages:
        report.add(f"  per decision (ms) {'':<32} {'p50':>8} {'p99':>8} {'max':>8}")
        for label, values in stages.items():
            report.dist(label, values)


def channel_updates_since(db_path: Path, since: float) -> tuple[int, int, float]:
    """(update rows written since `since`, how many are not sent yet, when the last was sent)."""
    with sqlite3.connect(db_path, timeout=60) as db:
        count, unsent, last_sent = db.execute(
            "SELECT count(*), sum(sent_at IS NULL), max(sent_at) FROM outbox WHERE kind = 'update' AND created_at >= ?",
            (since,),
        ).fetchone()
    return count, unsent or 0, last_sent or float("nan")


def approve_all_in_db(db_path: Path, now: float) -> None:
    """Every pending decision approved in one transaction, as if decided elsewhere (no vote rows)."""
    with sqlite3.connect(db_path, timeout=60) as db:
        db.execute(
            "UPDATE decisions SET status = 'approved', decided_at = ?, decided_by = 'bench', decided_via = 'db', "
            "collect_by = ? + claim_within_s WHERE status = 'pending'",  # as the service's transition sets it
            (now, now),
        )


# -- 3. timeout precision -------------------------------------------------------------------------


async def bench_timeouts(gw: Holdgate, count: int, timeout_s: float, stagger_ms: float, report: Report) -> None:
    async with mcp_session(gw) as session:
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(held_call(session, "expire", i)))
            await asyncio.sleep(stagger_ms / 1000)
        results = await asyncio.gather(*tasks)
    with sqlite3.connect(f"file:{gw.db}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id, status, expires_at, decided_at FROM decisions WHERE tool = 'expire'").fetchall()
    statuses = {status for _, status, _, _ in rows}
    expires = {decision_id: expires_at for decision_id, _, expires_at, _ in rows}
    late_ms = [(decided - expires_at) * 1000 for _, status, expires_at, decided in rows if status == "expired"]
    seen_ms = []
    for r in results:
        found = re.search(r"\(decision (d_[A-Za-z0-9_-]+)\)", r.error or "")
        if found and found.group(1) in expires:
            seen_ms.append((r.done_at - expires[found.group(1)]) * 1000)
    report.add()
    report.add(
        f"3. timeout precision: {count} decisions with timeout {timeout_s:g}s, opened {stagger_ms:g} ms apart "
        f"(statuses: {', '.join(sorted(statuses))})"
    )
    report.add(f"  {'':<50} {'p50':>8} {'p99':>8} {'max':>8}   target")
    report.dist("expired late by (decided_at - expires_at), ms", late_ms, "p99 <= 1000", pct(late_ms, 99) <= 1000)
    if seen_ms:
        report.dist("client has 'expired' result - expires_at, ms", seen_ms)
    if len(late_ms) != count:
        report.check(False, f"{count - len(late_ms)} decisions did not expire")
        report.add(f"  only {len(late_ms)} of {count} decisions expired")


# -- main -----------------------------------------------------------------------------------------


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    report = Report()
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--role", "upstream", "--port", str(up_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    upstream_url = f"http://127.0.0.1:{up_port}/mcp"
    cpu = platform.processor() or platform.machine()
    report.add(
        f"holdgate approvals benchmark: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start"
    )
    report.add(
        "holdgate in its own process (SQLite, console channel, log level warning); upstream = MCP server over "
        "Streamable HTTP in a third process; clients in this process"
    )
    report.add()
    try:
        await wait_http(upstream_url, upstream)
        profile = args.profile
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bench-approvals-") as scratch:
            if args.decisions:
                async with (
                    holdgate(Path(scratch) / "release", upstream_url, args.timeout_s) as gw,
                    profiled(gw, profile and profile / "release.pstats"),
                ):
                    await bench_release(gw, args.decisions, args.warmup, report)
            if args.held:
                async with holdgate(Path(scratch) / "capacity", upstream_url, args.timeout_s) as gw:
                    await bench_capacity(
                        gw,
                        args.held,
                        args.sessions,
                        args.approvers_concurrency,
                        report,
                        profile and profile / "bulk-approval.pstats",
                        idle_s=args.idle_s,
                        bulk_size=None if args.single_votes else args.bulk_size,
                        upstream_pid=upstream.pid,
                        sdk_clients=args.sdk_clients,
                    )
            if args.held and args.db_release:
                async with holdgate(Path(scratch) / "capacity-db", upstream_url, args.timeout_s) as gw:
                    await bench_capacity(
                        gw,
                        args.held,
                        args.sessions,
                        args.approvers_concurrency,
                        report,
                        profile and profile / "db-release.pstats",
                        via_db=True,
                        idle_s=args.idle_s,
                        upstream_pid=upstream.pid,
                        sdk_clients=args.sdk_clients,
                    )
            if args.timeouts:
                async with holdgate(Path(scratch) / "timeouts", upstream_url, args.timeout_s) as gw:
                    await bench_timeouts(gw, args.timeouts, args.timeout_s, args.stagger_ms, report)
    finally:
        upstream.terminate()
        upstream.wait(10)
    report.add()
    report.add(f"load average {os.getloadavg()[0]:.2f} at the end (other work on the machine skews the figures)")
    report.add("targets: " + ("all met" if not report.missed else "MISSED: " + "; ".join(report.missed)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=200, help="sequential decisions for latency (0 skips)")
    parser.add_argument("--warmup", type=int, default=10, help="decisions before measuring latency")
    parser.add_argument("--held", type=int, default=5000, help="calls held at once (0 skips)")
    parser.add_argument("--sessions", type=int, default=10, help="MCP sessions the held calls are spread over")
    parser.add_argument(
        "--bulk-size", type=int, default=5000, help="ids per bulk approve POST in step 2 (at most 10000)"
    )
    parser.add_argument(
        "--single-votes", action="store_true", help="step 2 approves with one POST per decision (the old path)"
    )
    parser.add_argument(
        "--approvers-concurrency", type=int, default=50, help="with --single-votes: approve POSTs in flight"
    )
    parser.add_argument(
        "--sdk-clients",
        action="store_true",
        help="step 2's clients are the SDK's ClientSession (default: WireClient, raw JSON-RPC over aiohttp)",
    )
    parser.add_argument("--idle-s", type=float, default=10.0, help="how long to watch the held calls just wait")
    parser.add_argument(
        "--db-release",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run 2b: the same held calls approved in one database UPDATE (the release path alone)",
    )
    parser.add_argument("--timeouts", type=int, default=200, help="decisions left to expire (0 skips)")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="the rule's approval timeout, seconds")
    parser.add_argument("--stagger-ms", type=float, default=10.0, help="gap between the expiring calls")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 decisions, 300 held, 30 timeouts")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="cProfile holdgate during 1, and during 2's and 2b's approval and release: DIR/*.pstats",
    )
    parser.add_argument("--role", choices=["bench", "upstream", "holdgate"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        serve_upstream(args.port)
    elif args.role == "holdgate":
        serve_holdgate(args.port)
    else:
        if args.quick:
            args.decisions, args.warmup, args.held, args.timeouts, args.idle_s = 30, 3, 300, 30, 3.0
            args.sessions = min(args.sessions, 3)
        asyncio.run(main(args))
