"""The gateway in front of the demo jobs server: rate limits, restarts, crashes, bad input."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx2
import pytest
from mcp import MCPError

from tests.support.harness import (
    WIRE_HEADERS,
    Clock,
    executed_calls,
    run_gateway,
    servers,
    text_of,
    time_server,
    wire_initialize,
)

POLICYLAYER_EXAMPLE = {
    "version": "1",
    "default": "deny",
    "tools": {
        "cancel-async-job": {
            "limits": [{"counter": "cancel-async-job_rate", "window": "minute", "max": 30, "scope": "grant"}]
        }
    },
}


async def test_policylayer_example_allows_30_a_minute_and_refuses_the_31st(tmp_path):
    clock = Clock(1_800_000_000.0)  # 10 s into a minute window
    clock.now += 10
    async with (
        run_gateway(tmp_path, policy=POLICYLAYER_EXAMPLE, servers=servers(tmp_path), clock=clock) as gw,
        gw.session("jobs") as session,
    ):
        for i in range(30):
            result = await session.call_tool("cancel-async-job", {"jobId": f"job-{i}"})
            assert "rate limit" not in text_of(result)
        refused = await session.call_tool("cancel-async-job", {"jobId": "job-31"})
        other = await session.call_tool("list-async-jobs", {})
    assert refused.is_error
    assert "cancel-async-job_rate" in text_of(refused)
    assert "retry_after=60 seconds" in text_of(refused)  # sliding: until the first of the 30 leaves the window
    assert other.is_error and "denied" in text_of(other)
    ran = [c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]
    assert len(ran) == 30, "the refused call must not reach the upstream"
    assert not any(c["tool"] == "list-async-jobs" for c in executed_calls(tmp_path))


async def test_counters_survive_a_restart_and_reset_in_the_next_window(tmp_path):
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {"list-async-jobs": {"rate_limit": {"max": 2, "window": "hour"}}},
    }
    clock = Clock(1_800_000_000.0)
    async with run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), clock=clock) as gw:
        tokens = gw.tokens
        async with gw.session("jobs") as session:
            assert not (await session.call_tool("list-async-jobs", {})).is_error
            assert not (await session.call_tool("list-async-jobs", {})).is_error
    async with run_gateway(tmp_path, policy=None, servers={}, grants=[], tokens=tokens, clock=clock) as gw:
        async with gw.session("jobs") as session:
            refused = await session.call_tool("list-async-jobs", {})
            assert refused.is_error and "retry_after" in text_of(refused)
            clock.now += 3600
            assert not (await session.call_tool("list-async-jobs", {})).is_error


async def test_a_denied_call_consumes_no_quota(tmp_path):
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {
            "jobs/*": {"rate_limit": {"max": 1, "window": "minute"}, "action": "allow"},
            "jobs/cancel-async-job": {"action": "deny", "reason": "no cancelling"},
        },
    }
    async with (
        run_gateway(tmp_path, policy=policy, servers=servers(tmp_path)) as gw,
        gw.session("jobs") as session,
    ):
        for _ in range(3):
            assert "no cancelling" in text_of(await session.call_tool("cancel-async-job", {"jobId": "x"}))
        assert not (await session.call_tool("list-async-jobs", {})).is_error


async def test_a_crashed_stdio_upstream_fails_with_its_name_then_restarts(tmp_path):
    policy = {"version": "1", "default": "allow"}
    marker = str(tmp_path / "jobs")
    async with (
        run_gateway(tmp_path, policy=policy, servers={**servers(tmp_path), "time": time_server()}) as gw,
        gw.session("jobs") as jobs,
        gw.session("time") as clock_session,
    ):
        assert not (await jobs.call_tool("list-async-jobs", {})).is_error
        killed = _kill_processes_with_env(f"JOBS_STATE_DIR={marker}")
        assert killed, "no jobs server process found"
        with pytest.raises(MCPError) as failure:
            for _ in range(20):  # the first call after the crash may already see the restart
                await jobs.call_tool("list-async-jobs", {})
                killed = _kill_processes_with_env(f"JOBS_STATE_DIR={marker}")
        assert "upstream server 'jobs' is unavailable" in str(failure.value)
        time_result = await clock_session.call_tool("get_current_time", {"timezone": "UTC"})
        assert not time_result.is_error, "other servers keep working"
        assert not (await jobs.call_tool("list-async-jobs", {})).is_error, "restarted on next use"


async def test_http_edge_rejects_unknown_servers_missing_tokens_and_bad_json(tmp_path):
    policy = {"version": "1", "default": "allow"}
    async with run_gateway(tmp_path, policy=policy, servers=servers(tmp_path)) as gw:
        headers = WIRE_HEADERS
        init = wire_initialize()
        auth = {**headers, "Authorization": f"Bearer {gw.tokens['agent']}"}
        async with httpx2.AsyncClient(timeout=30) as http:
            unknown = await http.post(f"{gw.url}/mcp/nope", headers=auth, json=init)
            assert unknown.status_code == 404 and unknown.json()["error"]["data"]["reason"] == "unknown_server"
            assert unknown.json()["error"] == {
                "code": -32601,
                "message": "no MCP server named 'nope' on this holdgate; its servers: jobs",
                "data": {"reason": "unknown_server", "servers": ["jobs"]},
            }
            anonymous = await http.post(f"{gw.url}/mcp/nope", headers=headers, json=init)
            assert anonymous.status_code == 404 and "servers" not in anonymous.json()["error"]["data"], (
                "no list of what sits behind the gateway without a token"
            )
            missing = await http.post(gw.mcp_url("jobs"), headers=headers, json=init)
            assert missing.status_code == 401 and missing.json()["error"]["data"]["reason"] == "unauthorized"
            wrong = await http.post(
                gw.mcp_url("jobs"), headers={**headers, "Authorization": "Bearer hg_forged"}, json=init
            )
            assert wrong.status_code == 401
            garbage = await http.post(gw.mcp_url("jobs"), headers=auth, content=b"{not json")
            assert garbage.status_code == 400
            assert garbage.json()["error"]["code"] == -32700  # JSON-RPC parse error
            huge = await http.post(
                gw.mcp_url("jobs"), headers=auth, content=b'{"x": "' + b"a" * (5 * 1024 * 1024) + b'"}'
            )
            assert huge.status_code == 413
            assert (await http.get(f"{gw.url}/healthz")).status_code == 200
        async with gw.session("jobs") as session:  # still serving
            assert not (await session.call_tool("list-async-jobs", {})).is_error


async def test_upstream_env_secrets_never_reach_logs_or_audit(tmp_path, caplog):
    secret = "sk-live-DO-NOT-LEAK-123456"
    policy = {"version": "1", "default": "allow"}
    caplog.set_level("DEBUG")
    async with (
        run_gateway(tmp_path, policy=policy, servers=servers(tmp_path, OPENAI_API_KEY=secret)) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("submit-llm-request-async", {"provider": "claude", "prompt": "hi"})
        await gw.state.audit.flush()
        async with httpx2.AsyncClient() as http:
            health = (await http.get(f"{gw.url}/healthz")).text
    assert secret not in caplog.text
    assert secret not in health
    assert secret not in repr(gw.state.servers)


async def test_malformed_policy_refuses_to_start_naming_file_and_place(tmp_path):
    from service.app import build_state
    from service.configfile import ConfigError
    from service.settings import Settings
    from tests.support.harness import write_config

    config = tmp_path / "config"
    write_config(
        config,
        policy={
            "version": "1",
            "tools": {"x": {"limits": [{"counter": "c", "window": "fortnight", "max": 1}]}},
        },
        servers={},
    )
    with pytest.raises(ConfigError) as error:
        build_state(Settings(_env_file=None, config_dir=config, data_dir=tmp_path / "data"))
    message = str(error.value)
    assert str(config / "policy.json") in message
    assert "tools.x.limits[0].window" in message


def _kill_processes_with_env(needle: str) -> list[int]:
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle.encode() in environ:
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
    return killed
