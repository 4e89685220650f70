"""Two real holdgate processes on one PostgreSQL database: decisions, timeouts and limits are shared.

Each replica is `python -m service serve` on its own port with its own demo jobs server child
(both children share one job store and one call log, as two hosts would share the real upstream).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from bots.slack import blocks
from service.settings import Settings
from tests.approvals.support import api, approval_policy
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.slack.support import ALICE, SIGNING_SECRET, post_interaction, slack_policy
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
class Replica(Gateway):
    pid: int = 0


@asynccontextmanager
async def replica(tmp_path: Path, name: str, database_url: str, tokens: dict[str, str], **env: str):
    """One holdgate process; yields a Gateway (no in-process state) once /healthz answers."""
    port = free_port()
    environment = {
        **os.environ,
        "HOLDGATE_DATABASE_URL": database_url,
        "HOLDGATE_CONFIG_DIR": str(tmp_path / "config"),
        "HOLDGATE_DATA_DIR": str(tmp_path / name),
        "HOLDGATE_PORT": str(port),
        "HOLDGATE_WATCH_POLICY": "false",
        "HOLDGATE_APPROVAL_HOLD_S": "30",
        **env,
    }
    log = (tmp_path / f"{name}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", cwd=ROOT, env=environment, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_serving(url, process, tmp_path / f"{name}.log")
        yield Replica(url=url, state=None, tokens=tokens, pid=process.pid)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


@asynccontextmanager
async def two_replicas(
    tmp_path: Path, database_url: str, policy: dict, upstreams: dict | None = None, **env: str
) -> AsyncIterator[tuple]:
    write_config(tmp_path / "config", policy=policy, servers=upstreams or servers(tmp_path))
    tokens = await seed_grants(Settings(_env_file=None, database_url=database_url), ["agent"])
    async with AsyncExitStack() as stack:
        a, b = await asyncio.gather(
            stack.enter_async_context(replica(tmp_path, "a", database_url, tokens, **env)),
            stack.enter_async_context(replica(tmp_path, "b", database_url, tokens, **env)),
        )
        yield a, b


async def pending_on(gw: Gateway, count: int) -> list[dict]:
    for _ in range(500):
        items = (await api(gw, "GET", "/api/decisions?status=pending&limit=500", "alice")).json()["items"]
        if len(items) >= count:
            return items
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} pending decisions, found {len(items)}")


def cancelled_jobs(tmp_path: Path) -> list[str]:
    return sorted(c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job")


async def test_a_call_held_on_one_replica_is_released_by_an_approval_on_the_other(tmp_path, postgres_url):
    async with two_replicas(tmp_path, postgres_url, approval_policy()) as (a, b), a.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "cross-1"}))
        [decision] = await pending_on(b, 1)
        approved = await api(b, "POST", f"/api/decisions/{decision['id']}/approve", "alice")
        result = await asyncio.wait_for(call, 10)
    assert approved.status_code == 200
    assert "holdgate" not in text_of(result)
    assert cancelled_jobs(tmp_path) == ["cross-1"]


async def test_a_signed_slack_click_on_one_replica_releases_the_call_held_on_the_other(tmp_path, postgres_url):
    env = {
        "HOLDGATE_SLACK_BOT_TOKEN": BOT_TOKEN,
        "HOLDGATE_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "HOLDGATE_PUBLIC_URL": "https://holdgate.example.com",
        "HOLDGATE_OUTBOX_POLL_INTERVAL_S": "0.05",
    }
    async with FakeSlack() as fake:
        env["HOLDGATE_SLACK_API_URL"] = fake.url
        async with two_replicas(tmp_path, postgres_url, slack_policy(), **env) as (a, b), a.session("jobs") as session:
            call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "slack-cross"}))
            [decision] = await pending_on(b, 1)
            [message] = await fake.wait_for(lambda: fake.posted(decision["id"]))
            clicked = await post_interaction(b, fake.click(message, blocks.APPROVE, ALICE))
            result = await asyncio.wait_for(call, 10)
            view = (await api(a, "GET", f"/api/decisions/{decision['id']}", "bob")).json()
    assert clicked.status_code == 200
    assert "holdgate" not in text_of(result)
    assert view["decided_by"] == "alice" and view["decided_via"] == "slack"
    assert len(fake.posted(decision["id"])) == 1, "one replica sent the request, once"
    assert cancelled_jobs(tmp_path) == ["slack-cross"]


async def test_approves_on_one_replica_racing_denies_on_the_other_end_each_decision_once(tmp_path, postgres_url):
    count = 12
    async with two_replicas(tmp_path, postgres_url, approval_policy()) as (a, b), a.session("jobs") as session:
        calls = [
            asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": f"race-{i}"})) for i in range(count)
        ]
        held = await pending_on(a, count)

        async def race(decision_id: str) -> tuple[int, int]:
            approve, deny = await asyncio.gather(
                api(a, "POST", f"/api/decisions/{decision_id}/approve", "alice"),
                api(b, "POST", f"/api/decisions/{decision_id}/deny", "bob", json={"reason": "race"}),
            )
            return approve.status_code, deny.status_code

        codes = await asyncio.gather(*(race(d["id"]) for d in held))
        results = await asyncio.wait_for(asyncio.gather(*calls), 20)
        final = (await api(b, "GET", "/api/decisions?limit=500", "alice")).json()["items"]

    for approve, deny in codes:
        assert sorted((approve, deny)) == [200, 409], "exactly one of the two decides"
    approved = sorted(d["arguments"]["jobId"] for d in final if d["status"] == "approved")
    assert len(approved) == sum(1 for approve, _ in codes if approve == 200)
    assert cancelled_jobs(tmp_path) == approved, "approved calls ran once each; denied ones never"
    assert sum(1 for r in results if not text_of(r).startswith("holdgate")) == len(approved)


async def test_killing_a_replica_with_held_calls_loses_no_decision(tmp_path, postgres_url):
    policy = approval_policy(timeout="8s")  # "keep" must be approved before it times out, on a loaded machine too
    env = {"HOLDGATE_APPROVAL_HOLD_S": "0.3", "HOLDGATE_APPROVAL_SWEEP_INTERVAL_S": "0.2"}
    async with two_replicas(tmp_path, postgres_url, policy, **env) as (a, b):
        async with a.session("jobs") as session:
            for job in ("keep", "lapse"):
                pending = await session.call_tool("cancel-async-job", {"jobId": job})
                assert "approval pending" in text_of(pending)
        os.kill(a.pid, signal.SIGKILL)
        by_job = {d["arguments"]["jobId"]: d for d in await pending_on(b, 2)}
        await api(b, "POST", f"/api/decisions/{by_job['keep']['id']}/approve", "bob")
        async with b.session("jobs") as session:
            released = await session.call_tool("cancel-async-job", {"jobId": "keep"})
            for _ in range(150):  # "lapse" times out on b (its timer, from A's announcement), 8 s after it opened
                lapsed = (await api(b, "GET", f"/api/decisions/{by_job['lapse']['id']}", "bob")).json()
                if lapsed["status"] != "pending":
                    break
                await asyncio.sleep(0.1)
    assert "holdgate" not in text_of(released)
    assert lapsed["status"] == "expired"
    assert cancelled_jobs(tmp_path) == ["keep"]


async def test_a_rate_limit_is_shared_by_both_replicas(tmp_path, postgres_url):
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {"list-async-jobs": {"rate_limit": {"max": 5, "window": "hour"}}},
    }
    async with (
        two_replicas(tmp_path, postgres_url, policy) as (a, b),
        a.session("jobs") as on_a,
        b.session("jobs") as on_b,
    ):
        results = await asyncio.gather(*(s.call_tool("list-async-jobs", {}) for s in [on_a, on_b] * 4))
    allowed = [r for r in results if "rate limit" not in text_of(r)]
    assert len(allowed) == 5, "together the replicas allow exactly max calls in the window"


async def test_a_decision_opened_on_a_replica_that_died_times_out_on_the_other_by_its_timer(tmp_path, postgres_url):
    """Openings are announced: the survivor keeps the timer, so the timeout does not wait for its sweep (2 min)."""
    policy = approval_policy(timeout="5s")
    env = {"HOLDGATE_APPROVAL_HOLD_S": "0.2", "HOLDGATE_APPROVAL_SWEEP_INTERVAL_S": "120"}
    async with two_replicas(tmp_path, postgres_url, policy, **env) as (a, b):
        async with a.session("jobs") as session:
            assert "approval pending" in text_of(await session.call_tool("cancel-async-job", {"jobId": "orphan"}))
        os.kill(a.pid, signal.SIGKILL)
        [decision] = await pending_on(b, 1)
        for _ in range(300):
            view = (await api(b, "GET", f"/api/decisions/{decision['id']}", "bob")).json()
            if view["status"] != "pending":
                break
            await asyncio.sleep(0.1)
    assert view["status"] == "expired" and view["decided_by"] == "timeout"
    assert datetime.fromisoformat(view["decided_at"]) - datetime.fromisoformat(view["expires_at"]) <= timedelta(
        seconds=2
    ), "fired by B's timer at the deadline, not by a sweep"
