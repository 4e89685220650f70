"""Session limits (global and per grant) and idle close: one grant cannot exhaust the host."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import asyncpg
import httpx2
import pytest
from sqlalchemy.engine import make_url

from service.approvals.pg_listen import asyncpg_dsn
from service.gateway.sessions import SessionBudget
from tests.support.harness import (
    WIRE_HEADERS,
    Gateway,
    executed_calls,
    run_gateway,
    servers,
    wire_initialize,
    wire_request,
)
from tests.support.postgres import ADMIN_URL

JOBS_POLICY = {"version": "1", "default": "deny", "tools": {"list-async-jobs": {"action": "allow"}}}


@asynccontextmanager
async def wire_client(gw: Gateway, grant: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(
        headers={**WIRE_HEADERS, "Authorization": f"Bearer {gw.tokens[grant]}"}, timeout=30
    ) as http:
        yield http


async def open_session(http: httpx2.AsyncClient, url: str) -> httpx2.Response:
    """POST initialize (and, when it opened a session, notifications/initialized); the initialize response."""
    opened = await http.post(url, json=wire_initialize())
    if opened.status_code == 200:
        headers = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        initialized = await http.post(url, json=note, headers=headers)
        assert initialized.status_code == 202
    return opened


def assert_refused(response: httpx2.Response, status: int, limit: str) -> None:
    assert response.status_code == status
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert limit in body["error"]["message"]
    assert body["error"]["data"] == {"limit": limit}


async def test_a_grant_over_its_limit_gets_429_and_the_host_over_its_limit_503_until_a_session_ends(tmp_path):
    async with (
        run_gateway(
            tmp_path,
            policy=JOBS_POLICY,
            servers=servers(tmp_path),
            grants=["agent", "other"],
            max_sessions=3,
            max_sessions_per_grant=2,
            stdio_spares=False,
        ) as gw,
        wire_client(gw, "agent") as agent,
        wire_client(gw, "other") as other,
    ):
        url = gw.mcp_url("jobs")
        first = await open_session(agent, url)
        second = await open_session(agent, url)
        assert first.status_code == second.status_code == 200
        assert_refused(await open_session(agent, url), 429, "HOLDGATE_MAX_SESSIONS_PER_GRANT")

        # Another grant still has room under the global limit, until the host is full.
        assert (await open_session(other, url)).status_code == 200
        assert_refused(await open_session(other, url), 503, "HOLDGATE_MAX_SESSIONS")
        assert gw.state.endpoint.budget.open == 3
        exported = (await agent.get(f"{gw.url}/metrics")).text
        assert "holdgate_open_sessions 3.0" in exported.splitlines()
        assert 'holdgate_refused_sessions_total{limit="HOLDGATE_MAX_SESSIONS_PER_GRANT"}' in exported

        # A session that ends (DELETE) gives its slot back; the refused ones never took one.
        ended = await agent.delete(url, headers={"Mcp-Session-Id": first.headers["mcp-session-id"]})
        assert ended.status_code == 200
        assert gw.state.endpoint.budget.open == 2
        assert (await open_session(other, url)).status_code == 200
        assert_refused(await open_session(agent, url), 503, "HOLDGATE_MAX_SESSIONS")


async def test_the_limits_hold_across_servers(tmp_path):
    upstreams = {**servers(tmp_path), "jobs2": servers(tmp_path)["jobs"]}
    async with (
        run_gateway(
            tmp_path, policy=JOBS_POLICY, servers=upstreams, max_sessions_per_grant=1, stdio_spares=False
        ) as gw,
        wire_client(gw, "agent") as agent,
    ):
        assert (await open_session(agent, gw.mcp_url("jobs"))).status_code == 200
        assert_refused(await open_session(agent, gw.mcp_url("jobs2")), 429, "HOLDGATE_MAX_SESSIONS_PER_GRANT")


async def test_an_idle_session_closes_with_its_upstream_child_and_frees_its_slot(tmp_path):
    async with (
        run_gateway(
            tmp_path,
            policy=JOBS_POLICY,
            servers=servers(tmp_path),
            max_sessions_per_grant=1,
            session_idle_s=0.5,
            stdio_spares=False,
        ) as gw,
        wire_client(gw, "agent") as agent,
    ):
        url = gw.mcp_url("jobs")
        opened = await open_session(agent, url)
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        called = await agent.post(
            url, json=wire_request(2, "tools/call", {"name": "list-async-jobs", "arguments": {}}), headers=session
        )
        assert called.status_code == 200 and "result" in called.json()
        child = executed_calls(tmp_path)[-1]["pid"]
        assert process_exists(child)

        async with asyncio.timeout(15):
            while process_exists(child) or gw.state.endpoint.budget.open:
                await asyncio.sleep(0.05)
        gone = await agent.post(url, json=wire_request(3, "tools/list"), headers=session)
        assert gone.status_code == 404
        assert (await open_session(agent, url)).status_code == 200


def process_exists(pid: int) -> bool:
    """True while `pid` runs (a zombie no longer counts: it has exited, only its exit status is left)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    if not os.path.isdir("/proc/self"):
        pytest.skip("reads child processes from /proc")


async def test_a_grant_lookup_the_database_cannot_answer_is_a_503_not_a_500(tmp_path, postgres_url):
    database = make_url(postgres_url).database
    admin = await asyncpg.connect(asyncpg_dsn(ADMIN_URL))
    try:
        async with (
            run_gateway(tmp_path, policy=JOBS_POLICY, servers=servers(tmp_path), database_url=postgres_url) as gw,
            wire_client(gw, "agent") as agent,
        ):
            # The database takes no more connections (as when every one is taken), and drops the gateway's.
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            refused = await agent.post(gw.mcp_url("jobs"), json=wire_initialize())
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            body = refused.json()
            assert body["id"] is None and "cannot check the token" in body["error"]["message"]

            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            assert (await open_session(agent, gw.mcp_url("jobs"))).status_code == 200
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_retry_after_is_when_the_soonest_session_concerned_may_idle_out():
    budget = SessionBudget(max_sessions=3, max_per_grant=2, idle_s=600)
    now = anyio.current_time()
    assert budget.admit("a1", "a", lambda: now + 100.5) is None
    assert budget.admit("a2", "a", lambda: math.inf) is None  # a request in flight: it does not idle
    assert budget.admit("b1", "b", lambda: now + 30) is None

    over_grant = budget.admit("a3", "a", lambda: math.inf)
    assert over_grant is not None and over_grant.limit == "HOLDGATE_MAX_SESSIONS_PER_GRANT"
    assert over_grant.retry_after_s == 101  # a1's, not b1's: only the grant's own sessions free its slots
    over_host = budget.admit("c1", "c", lambda: math.inf)
    assert over_host is not None and over_host.limit == "HOLDGATE_MAX_SESSIONS"
    assert over_host.retry_after_s == 30

    budget.release("b1")
    budget.release("b1")  # twice changes nothing
    assert budget.open == 2 and budget.admit("c1", "c", lambda: math.inf) is None
    budget.release("a2")
    budget.release("a1")
    assert budget.admit("a3", "a", lambda: math.inf) is None  # every slot of the grant was freed
    assert budget.open_for("a") == 1
    budget.release("a3")
    budget.release("c1")
    over = SessionBudget(max_sessions=1, max_per_grant=1, idle_s=600)
    assert over.admit("x", "x", lambda: math.inf) is None
    refusal = over.admit("y", "x", lambda: math.inf)
    assert refusal is not None and refusal.retry_after_s == 600  # nothing idles: the idle period itself
