"""`/healthz` says what is wrong (without paths or people); `/readyz` tells a load balancer whether to send traffic."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx2
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.app import build_state, create_app
from service.approvals.pg_listen import asyncpg_dsn
from service.settings import Settings
from tests.approvals.support import approval_policy
from tests.support.harness import free_port, run_gateway, time_server, write_config
from tests.support.postgres import ADMIN_URL

ALLOW = {"version": "1", "default": "allow"}


async def get(url: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.get(url)


async def eventually(url: str, predicate, what: str) -> httpx2.Response:
    for _ in range(200):
        response = await get(url)
        if predicate(response):
            return response
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: last answer {response.status_code} {response.text}")


async def test_all_well_is_ok_and_ready(tmp_path, database):
    async with run_gateway(tmp_path, policy=ALLOW, servers={"time": time_server()}, **database) as gw:
        health = await get(f"{gw.url}/healthz")
        assert health.status_code == 200
        body = health.json()
        assert (body["status"], body["problems"]) == ("ok", [])
        assert body["servers"] == {"time": {"probed": True, "up": True}}
        assert body["audit"] == {"last_write_failed": False, "backlog": 0}
        ready = await get(f"{gw.url}/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "problems": []})


async def test_a_refused_policy_reload_is_degraded_without_the_files_path_or_people(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        in_force = gw.state.policy.current.version
        broken = approval_policy()
        broken["people"]["alice"]["token_sha256"] = "not a digest"
        (tmp_path / "config" / "policy.json").write_text(json.dumps(broken))
        assert gw.state.policy.reload() is False  # what SIGHUP and the file watch do
        health = await get(f"{gw.url}/healthz")
        assert health.status_code == 200, "alive: a restart would not fix the file"
        body = health.json()
        assert body["status"] == "degraded" and body["policy_reload_refused"] is True
        assert body["problems"] == [
            f"policy: the policy file on disk was refused at reload; version {in_force} stays in force "
            "(the log says why)"
        ]
        assert str(tmp_path) not in health.text and "alice" not in health.text
        assert (await get(f"{gw.url}/readyz")).status_code == 200, "the last good policy still decides"

        fixed = approval_policy()
        fixed["tools"]["get-job"] = {"action": "allow"}
        (tmp_path / "config" / "policy.json").write_text(json.dumps(fixed))
        assert gw.state.policy.reload() is True
        assert (await get(f"{gw.url}/healthz")).json()["status"] == "ok"


async def test_an_unreachable_upstream_is_degraded_by_name_not_url(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/mcp/secret-path"
    servers = {"broken": {"url": closed}, "time": time_server()}
    async with run_gateway(tmp_path, policy=ALLOW, servers=servers) as gw:
        health = await get(f"{gw.url}/healthz")
        body = health.json()
        assert body["status"] == "degraded"
        assert body["problems"] == ["upstream 'broken': not reachable (retried on next use)"]
        assert body["servers"]["broken"] == {"probed": False, "up": False}
        assert body["servers"]["time"] == {"probed": True, "up": True}
        assert "secret-path" not in health.text and "127.0.0.1" not in health.text


async def test_a_failing_audit_writer_is_degraded_until_it_writes_again(tmp_path, database):
    async with run_gateway(tmp_path, policy=ALLOW, servers={"time": time_server()}, **database) as gw:
        async with gw.state.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
        async with gw.session("time") as session:
            await session.call_tool("get_current_time", {"timezone": "UTC"})
        degraded = await eventually(
            f"{gw.url}/healthz", lambda r: r.json()["status"] == "degraded", "the audit writer's failure shows"
        )
        body = degraded.json()
        assert body["audit"] == {"last_write_failed": True, "backlog": 1}
        assert body["problems"] == ["audit: the last write failed; 1 record(s) waiting (the log says why)"]

        async with gw.state.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
        healed = await eventually(f"{gw.url}/healthz", lambda r: r.json()["status"] == "ok", "the writer recovers")
        assert healed.json()["audit"] == {"last_write_failed": False, "backlog": 0}


async def test_readyz_is_503_while_the_database_does_not_answer(tmp_path, postgres_url):
    name = make_url(postgres_url).database
    async with run_gateway(tmp_path, policy=ALLOW, servers={}, database_url=postgres_url) as gw:
        assert (await get(f"{gw.url}/readyz")).status_code == 200
        admin = await asyncpg.connect(asyncpg_dsn(ADMIN_URL))
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            down = await get(f"{gw.url}/readyz")
            assert down.status_code == 503
            assert down.json() == {"status": "not ready", "problems": ["database: not answering"]}
            assert (await get(f"{gw.url}/healthz")).status_code == 200, "alive all the same"
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
        await eventually(f"{gw.url}/readyz", lambda r: r.status_code == 200, "ready again")


async def test_readyz_is_503_before_start_up_has_finished(tmp_path):
    write_config(tmp_path / "config", policy=ALLOW, servers={})
    settings = Settings(_env_file=None, config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    app = create_app(settings, state=build_state(settings))
    transport = httpx2.ASGITransport(app=app)  # no lifespan: the app has not started
    async with httpx2.AsyncClient(transport=transport, base_url="http://holdgate") as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert "not serving: starting up or shutting down" in response.json()["problems"]
