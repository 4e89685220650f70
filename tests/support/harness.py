"""A real holdgate on a real port, in the test's event loop, plus MCP clients for both protocol eras."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import uvicorn
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import select

from service import db
from service.app import AppState, build_state, create_app
from service.approvals.channels import Channel
from service.grants.service import create_grant
from service.models import AuditEvent
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING_JS = ROOT / "tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
EVERYTHING_ELICITATION_ANSWER = {
    "name": "Ada",
    "check": True,
    "firstLine": "x",
    "email": "ada@example.com",
    "homepage": "https://example.com",
    "birthdate": "1815-12-10",
    "integer": 5,
    "number": 1.5,
    "untitledSingleSelectEnum": "option1",
    "titledSingleSelectEnum": "value1",
    "legacyTitledEnum": "opt1",
    "untitledMultipleSelectEnum": ["option1"],
    "titledMultipleSelectEnum": ["value1"],
}
"""A form that satisfies server-everything's `trigger-elicitation-request` schema."""
JOBS_SERVER = ROOT / "examples/jobs_server.py"


def free_port() -> int:
    """A port free now, from this xdist worker's own slice of 10000-31999 (below the kernel's ephemeral range):
    a port the kernel hands out for `bind(0)` could be handed to another worker before this one binds it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    slot = int(worker) % 4 if worker.isdigit() else 0
    base = 10000 + slot * 5500
    for _ in range(200):
        port = random.randrange(base, base + 5500)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this worker's slice")


def everything_server() -> dict[str, Any]:
    return {"command": "node", "args": [str(EVERYTHING_JS), "stdio"]}


def time_server() -> dict[str, Any]:
    return {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}


def jobs_server(state_dir: Path, call_log: Path | None = None, **env: str) -> dict[str, Any]:
    environment = {"JOBS_STATE_DIR": str(state_dir), **env}
    if call_log is not None:
        environment["JOBS_CALL_LOG"] = str(call_log)
    return {"command": sys.executable, "args": [str(JOBS_SERVER)], "env": environment}


WIRE_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
"""What a 2025-11-25 era client sends with each POST, for tests that speak the wire themselves."""


def wire_request(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-RPC request as it goes on the wire."""
    request = {"jsonrpc": "2.0", "id": request_id, "method": method}
    return request if params is None else {**request, "params": params}


def wire_initialize(request_id: int = 1) -> dict[str, Any]:
    """The `initialize` request that opens a 2025-11-25 era session."""
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "wire-test", "version": "0"}}
    return wire_request(request_id, "initialize", hello)


def wire_answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer to a POST, whichever way the server chose to send it: a plain JSON body, or a
    stream (when anything came first, or nothing came within the keep-alive) whose last event is the answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line.removeprefix("data:").strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(events[-1])
    return response.json()


def write_config(config_dir: Path, *, policy: dict[str, Any], servers: dict[str, Any]) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "policy.json").write_text(json.dumps(policy, indent=2))
    (config_dir / "servers.json").write_text(json.dumps({"mcpServers": servers}, indent=2))


@dataclass
class Gateway:
    """A running holdgate: its base URL, its state, and grant tokens by name."""

    url: str
    state: AppState
    tokens: dict[str, str]

    def mcp_url(self, server: str) -> str:
        return f"{self.url}/mcp/{server}"

    @asynccontextmanager
    async def session(self, server: str, grant: str = "agent", **callbacks: Any) -> AsyncIterator[ClientSession]:
        """A 2025-11-25 era session (initialize handshake, Mcp-Session-Id)."""
        headers = {"Authorization": f"Bearer {self.tokens[grant]}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
            streamable_http_client(self.mcp_url(server), http_client=http) as (read, write),
            ClientSession(read, write, **callbacks) as session,
        ):
            await session.initialize()
            yield session

    @asynccontextmanager
    async def wire(self, server: str, grant: str = "agent") -> AsyncIterator[httpx2.AsyncClient]:
        """An initialized 2025-11-25 session spoken by hand (the body goes on the wire exactly as written);
        the client's requests carry the token and the session id."""
        headers = {**WIRE_HEADERS, "Authorization": f"Bearer {self.tokens[grant]}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            opened = await http.post(self.mcp_url(server), json=wire_initialize())
            http.headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
            await http.post(self.mcp_url(server), json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            yield http

    @asynccontextmanager
    async def modern(self, server: str, grant: str = "agent", **kwargs: Any) -> AsyncIterator[Client]:
        """A 2026-07-28 era client (stateless requests, server/discover)."""
        headers = {"Authorization": f"Bearer {self.tokens[grant]}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
            transport = streamable_http_client(self.mcp_url(server), http_client=http)
            async with Client(transport, mode="2026-07-28", **kwargs) as client:
                yield client


async def seed_grants(settings: Settings, names: list[str]) -> dict[str, str]:
    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.upgrade(engine)
        tokens = {}
        async with db.session_scope(db.session_factory(engine)) as session:
            for name in names:
                _, tokens[name] = await create_grant(session, name=name)
        return tokens
    finally:
        await engine.dispose()


@asynccontextmanager
async def run_gateway(
    tmp_path: Path,
    *,
    policy: dict[str, Any],
    servers: dict[str, Any],
    grants: list[str] = ("agent",),
    tokens: dict[str, str] | None = None,
    clock: Callable[[], float] | None = None,
    channels: dict[str, Channel] | None = None,
    configure: Callable[[AppState], None] | None = None,
    port: int | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[Gateway]:
    """Start holdgate on a free port (or `port`) with this policy and these upstreams; stop it cleanly after.

    `policy=None` keeps the config already in `tmp_path` (a restart); `tokens` reuses earlier grants;
    `clock` and `channels` replace the real ones; `configure` may change the built state before it serves.
    """
    config_dir = tmp_path / "config"
    if policy is not None:
        write_config(config_dir, policy=policy, servers=servers)
    port = port or free_port()
    settings = Settings(
        _env_file=None,
        config_dir=config_dir,
        data_dir=tmp_path / "data",
        port=port,
        watch_policy=False,
        audit_flush_interval_s=0.05,
        **settings_overrides,
    )
    tokens = {**(tokens or {}), **(await seed_grants(settings, list(grants)) if grants else {})}
    state = build_state(settings, clock=clock or time.time, channels=channels)
    if configure is not None:
        configure(state)
    app = create_app(settings, state=state)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(600):
            if server.started:
                break
            if task.done():
                task.result()
                raise RuntimeError("gateway stopped during start-up")
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("gateway did not start")
        yield Gateway(url=f"http://127.0.0.1:{port}", state=state, tokens=tokens)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


SERVE_START_S = 180.0
"""How long a `holdgate serve` process may take to answer /healthz (imports, migrations, probing its upstreams):
seconds when idle, minutes on a loaded 2-core host running the suite in four workers."""


async def wait_until_serving(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    """Return once `url`/healthz answers 200; fail with the process's log if it exits or never answers (a test
    that went on regardless would fail later on a refused connection, saying nothing of why)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVE_START_S
    async with httpx2.AsyncClient() as client:
        while loop.time() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"holdgate exited during start-up:\n{log.read_text()[-3000:]}")
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"holdgate did not answer /healthz in {SERVE_START_S:g} s:\n{log.read_text()[-3000:]}")


class Clock:
    """A settable wall clock for the gateway (unix seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def audit_events(gw: Gateway) -> list[AuditEvent]:
    """The gateway's audit records as written so far, oldest first (flush the writer first)."""
    async with gw.state.sessions() as session:
        return list((await session.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars())


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def servers(tmp_path: Path, **env: str) -> dict:
    """The demo jobs server, logging the calls it executes to tmp_path/calls.jsonl."""
    return {"jobs": jobs_server(tmp_path / "jobs", tmp_path / "calls.jsonl", **env)}


def executed_calls(tmp_path: Path) -> list[dict]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
