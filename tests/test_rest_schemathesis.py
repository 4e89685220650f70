"""Schemathesis over the REST API's own OpenAPI document: no generated request gets a 500.

The real service runs on a real port (SQLite, and PostgreSQL) in a thread of its own, so schemathesis' blocking
client can call it; requests carry a person's token, so the authenticated routes are reached, not
just their 401. Both valid (schema-conforming) and invalid requests are generated for every
operation, by schemathesis' own command line (`st run`, all its phases, with only the
`not_a_server_error` check). The number of generated requests is printed (`-s`).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.approvals.support import PERSON_TOKENS, approval_policy
from tests.support.harness import run_gateway

EXAMPLES = 50
"""Schemathesis' fuzzing cases per operation (17 operations since the standing and tool routes), after the
coverage phase's edges of each parameter and before the stateful sequences. A count, not a time budget: on a
loaded machine (the suite runs in four workers on two cores) a 40 s budget generated as few as 26 requests,
so the same test tested less exactly when the machine was busiest."""

RUN_TIMEOUT_S = 600
"""A run that takes longer than this is stuck, not slow."""


@contextmanager
def gateway_in_a_thread(tmp_path: Path, **settings: Any) -> Iterator[str]:
    """A running holdgate (its base URL), served by an event loop of its own."""
    started = threading.Event()
    box: dict[str, object] = {}
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        try:
            async with run_gateway(tmp_path, policy=approval_policy(), servers={}, **settings) as gw:
                box["url"] = gw.url
                started.set()
                await stop.wait()
        finally:
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="holdgate", daemon=True)
    thread.start()
    try:
        assert started.wait(60) and "url" in box, "holdgate did not start"
        yield str(box["url"])
    finally:
        stop = box.get("stop")
        if isinstance(stop, asyncio.Event):
            loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()


async def test_no_generated_request_gets_a_server_error(tmp_path, database):
    with gateway_in_a_thread(tmp_path / "service", **database) as url:
        authorization = f"Bearer {PERSON_TOKENS['alice']}"
        reached = await asyncio.to_thread(
            requests.get, f"{url}/api/decisions", headers={"Authorization": authorization}, timeout=30
        )
        assert reached.status_code == 200, "the token reaches the authenticated routes"
        run = await asyncio.to_thread(
            subprocess.run,
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"{url}/openapi.json",
                "--header",
                f"Authorization: {authorization}",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(EXAMPLES),
                "--workers",
                "1",
                "--no-color",
            ],
            cwd=tmp_path,  # schemathesis keeps its state in ./.schemathesis
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    generated = re.search(r"Test cases:\s+(\d+) generated", run.stdout)
    where = "postgresql" if database else "sqlite"
    count = generated.group(1) if generated else "?"
    print(f"schemathesis ({where}): {count} generated requests, exit {run.returncode}")
    assert run.returncode == 0, run.stdout[run.stdout.find("FAILURES") :] or run.stdout + run.stderr
    assert generated and int(generated.group(1)) >= 500, run.stdout
