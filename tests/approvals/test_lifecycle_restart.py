"""SIGTERM with held calls: a real `holdgate serve` process, a real SDK client, a restart, a retry."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from service.settings import Settings
from tests.approvals.support import api, approval_policy
from tests.support.harness import (
    ROOT,
    Gateway,
    executed_calls,
    free_port,
    seed_grants,
    servers,
    text_of,
    wait_until_serving,
    write_config,
)


@dataclass
class Served(Gateway):
    process: asyncio.subprocess.Process | None = None
    log: Path | None = None


@asynccontextmanager
async def serve(tmp_path: Path, database_url: str, tokens: dict[str, str], log_name: str) -> AsyncIterator[Served]:
    """`python -m service serve` on a free port; yields once /healthz answers, terminates it after if still up."""
    port = free_port()
    environment = {
        **os.environ,
        "HOLDGATE_DATABASE_URL": database_url,
        "HOLDGATE_CONFIG_DIR": str(tmp_path / "config"),
        "HOLDGATE_DATA_DIR": str(tmp_path / "data"),
        "HOLDGATE_PORT": str(port),
        "HOLDGATE_WATCH_POLICY": "false",
        "HOLDGATE_APPROVAL_HOLD_S": "60",
    }
    log = tmp_path / log_name
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", cwd=ROOT, env=environment, stdout=out, stderr=out
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_until_serving(url, process, log)
            yield Served(url=url, state=None, tokens=tokens, process=process, log=log)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def pending(gw: Gateway) -> list[dict]:
    for _ in range(500):
        items = (await api(gw, "GET", "/api/decisions?status=pending", "alice")).json()["items"]
        if items:
            return items
        await asyncio.sleep(0.02)
    raise AssertionError("no pending decision")


async def test_sigterm_answers_each_held_call_at_once_and_the_retry_after_the_restart_joins_its_decision(
    tmp_path, database
):
    write_config(tmp_path / "config", policy=approval_policy(), servers=servers(tmp_path))
    database_url = database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'holdgate.db'}"
    tokens = await seed_grants(Settings(_env_file=None, database_url=database_url), ["agent"])

    async with serve(tmp_path, database_url, tokens, "first.log") as gw:
        assert gw.process is not None and gw.log is not None
        async with gw.session("jobs") as session:
            held = [
                asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": job})) for job in ("one", "two")
            ]
            await pending(gw)
            await asyncio.sleep(0.3)  # both calls are held
            decisions = {d["arguments"]["jobId"]: d["id"] for d in await pending(gw)}
            started = time.monotonic()
            gw.process.send_signal(signal.SIGTERM)
            answers = await asyncio.wait_for(asyncio.gather(*held), 10)
            answered_in = time.monotonic() - started
        await asyncio.wait_for(gw.process.wait(), 15)
        exited_in = time.monotonic() - started
        log = gw.log.read_text()

    async with serve(tmp_path, database_url, tokens, "second.log") as gw, gw.session("jobs") as session:
        still = {d["arguments"]["jobId"]: d["id"] for d in await pending(gw)}
        retry = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "one"}))
        await asyncio.sleep(0.5)  # joined, not a new decision
        after_retry = {d["arguments"]["jobId"]: d["id"] for d in await pending(gw)}
        approved = await api(gw, "POST", f"/api/decisions/{decisions['one']}/approve", "alice")
        released = await asyncio.wait_for(retry, 10)

    for job, answer in zip(("one", "two"), answers, strict=True):
        assert answer.is_error
        assert (
            f"holdgate is restarting; call cancel-async-job again with the same arguments to join {decisions[job]}"
            in (text_of(answer))
        )
    assert answered_in < 2, f"held calls answered {answered_in:.1f}s after SIGTERM"
    assert exited_in < 10, f"exited {exited_in:.1f}s after SIGTERM"
    assert "Traceback" not in log, log[-4000:]
    assert still == decisions, "the decisions stayed pending across the restart"
    assert after_retry == decisions, "the retry joined its decision"
    assert approved.status_code == 200 and "holdgate" not in text_of(released)
    assert [c["arguments"]["jobId"] for c in executed_calls(tmp_path)] == ["one"]
