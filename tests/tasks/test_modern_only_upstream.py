"""An upstream that speaks 2026-07-28 only (it refuses `initialize`) is reached in the stateless form, over
stdio and over Streamable HTTP, by clients of both eras; a held call to it runs once as a task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.support.harness import ROOT, free_port, run_gateway, text_of
from tests.tasks.support import Wire2026

PEER = ROOT / "tests/peers/modern_only_server.py"


def policy():
    base = approval_policy()
    base["tools"] = {
        "echo": {"action": "allow"},
        "drop_table": {"action": "require_approval", "approval": {"approvers": ["group:ops"], "timeout": "15m"}},
    }
    return base


def runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@contextlib.asynccontextmanager
async def http_peer(log: Path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(PEER), "http", str(port)], env={"MODERN_CALL_LOG": str(log), "PATH": "/usr/bin:/bin"}
    )
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx2.AsyncClient() as http:
            for _ in range(200):
                with contextlib.suppress(httpx2.TransportError):
                    await http.get(url)
                    break
                await asyncio.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def peer_spec(kind: str, log: Path):
    if kind == "stdio":
        yield {"command": sys.executable, "args": [str(PEER), "stdio"], "env": {"MODERN_CALL_LOG": str(log)}}
        return
    async with http_peer(log) as url:
        yield {"url": url}


@pytest.mark.parametrize("kind", ["stdio", "http"])
async def test_a_server_that_refuses_initialize_is_reached_statelessly(tmp_path, kind):
    log = tmp_path / "calls.jsonl"
    async with (
        peer_spec(kind, log) as spec,
        run_gateway(tmp_path, policy=policy(), servers={"modern": spec}) as gw,
    ):
        assert gw.state.proxies["modern"].info.protocol_version == "2026-07-28"
        async with gw.session("modern") as session:  # a 2025-11-25 client in front of a 2026-only server
            tools = {t.name for t in (await session.list_tools()).tools}
            echoed = await session.call_tool("echo", {"text": "old client"})
        async with gw.modern("modern") as client:  # and a 2026-07-28 one
            modern_echo = await client.call_tool("echo", {"text": "new client"})
        wire = Wire2026([gw.mcp_url("modern")], gw.tokens["agent"])
        task = (await wire.call("drop_table", {"name": "users"}))["result"]
        [decision] = await wait_for_decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        for _ in range(600):
            got = (await wire.task("tasks/get", task["taskId"]))["result"]
            if got["status"] != "working":
                break
            await asyncio.sleep(0.05)
    assert tools == {"echo", "drop_table"}
    assert text_of(echoed) == "echo: old client" and text_of(modern_echo) == "echo: new client"
    assert task["resultType"] == "task"
    assert got["status"] == "completed" and got["result"]["content"][0]["text"] == "dropped users"
    assert runs(log) == [{"tool": "drop_table", "name": "users"}]
