"""Tools that change under holdgate: the demo upstream restarted with another version of its tools.

A real holdgate, the bundled jobs server (`JOBS_TOOLS_VERSION=2` rewords `cancel-async-job`, widens its schema,
drops its destructive hint and adds `purge-async-jobs`), real MCP clients, the real CLI in a child process, the
REST API, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.models import AuditEvent, ToolDefinition
from tests.approvals.support import PERSON_TOKENS, api, decisions, sha256
from tests.support.harness import ROOT, executed_calls, run_gateway, servers, text_of

PEOPLE = {name: {"token_sha256": sha256(token)} for name, token in PERSON_TOKENS.items() if name != "agent"}


def policy(**extra: Any) -> dict[str, Any]:
    return {
        "version": "1",
        "default": "allow",
        "people": PEOPLE,
        "tools": {"jobs/list-async-jobs": {"action": "allow"}},
        **extra,
    }


async def holdgate_cli(tmp_path: Path, database: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`holdgate ARGS` in a child process against the test's configuration and database."""
    env = {
        **os.environ,
        "HOLDGATE_CONFIG_DIR": str(tmp_path / "config"),
        "HOLDGATE_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("HOLDGATE_DATABASE_URL", None)
    if "database_url" in database:
        env["HOLDGATE_DATABASE_URL"] = database["database_url"]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def definitions(gw) -> dict[str, ToolDefinition]:
    async with gw.state.sessions() as session:
        rows = await session.scalars(select(ToolDefinition).where(ToolDefinition.server == "jobs"))
        return {row.tool: row for row in rows}


async def definition_events(gw) -> list[AuditEvent]:
    await gw.state.audit.flush()
    async with gw.state.sessions() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.verdict.like("definition_%")).order_by(AuditEvent.id)
        )
        return list(rows)


def ran(tmp_path: Path, tool: str) -> list[dict]:
    return [call for call in executed_calls(tmp_path) if call["tool"] == tool]


async def until(condition, what: str) -> None:
    for _ in range(300):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_changed_tool_is_held_diffed_accepted_and_then_runs(tmp_path, database):
    settings = dict(database, approval_hold_s=0.3, tool_definitions_refresh_s=0.1)
    async with run_gateway(tmp_path, policy=policy(), servers=servers(tmp_path), **settings) as gw:
        tokens = gw.tokens
        first_seen = await definitions(gw)
        async with gw.session("jobs") as session:
            await session.list_tools()
            await session.call_tool("cancel-async-job", {"jobId": "job-1"})
    # First sight: every tool of the server recorded as accepted, nothing held.
    assert set(first_seen) == {
        "submit-llm-request-async",
        "get-async-job-result",
        "list-async-jobs",
        "cancel-async-job",
    }
    assert {row.accepted_by for row in first_seen.values()} == {"first sight"}
    assert all(row.accepted_sha256 == row.current_sha256 for row in first_seen.values())
    assert len(ran(tmp_path, "cancel-async-job")) == 1

    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with run_gateway(tmp_path, policy=policy(), servers=changed, grants=[], tokens=tokens, **settings) as gw:
        async with gw.session("jobs") as session:
            listed = {tool.name: tool for tool in (await session.list_tools()).tools}
            held = await session.call_tool("cancel-async-job", {"jobId": "job-2", "deleteResults": True})
        # tools/list keeps showing the tool, as the upstream now presents it.
        assert "deleteResults" in json.dumps(listed["cancel-async-job"].input_schema)
        assert "purge-async-jobs" in listed
        # The call is held, not run.
        assert held.is_error and "approval pending" in text_of(held), text_of(held)
        assert ran(tmp_path, "cancel-async-job") == [ran(tmp_path, "cancel-async-job")[0]]
        [decision] = await decisions(gw, status="pending")
        assert decision.rule == "on_tool_change"
        assert decision.tool_change is not None and decision.tool_change.kind == "changed"
        assert decision.tool_change.accepted_sha256 == first_seen["cancel-async-job"].accepted_sha256
        assert '+      "deleteResults": {' in decision.tool_change.diff
        assert '-    "destructiveHint": true,' in decision.tool_change.diff
        assert "changed since it was accepted" in decision.tool_change.summary

        metrics = await api(gw, "GET", "/metrics")
        assert "holdgate_tools_not_accepted 2.0" in metrics.text

        # The diff, from the real CLI: text and JSON.
        code, out, err = await holdgate_cli(tmp_path, database, "tools", "diff", "jobs", "cancel-async-job")
        assert code == 0, err
        assert "jobs/cancel-async-job: changed since accepted by first sight" in out
        assert '+      "deleteResults": {' in out
        assert "Safe to call at any time" in out
        code, out, err = await holdgate_cli(tmp_path, database, "tools", "diff", "jobs", "--json")
        assert code == 0, err
        pending = {view["tool"]: view for view in json.loads(out)}
        assert set(pending) == {"cancel-async-job", "purge-async-jobs"}
        assert pending["purge-async-jobs"]["status"] == "new"
        current = pending["cancel-async-job"]["current_sha256"]

        # The REST API: the same diff; a stale hash is refused and changes nothing; the reviewed one is accepted.
        read = await api(gw, "GET", "/api/tools/jobs/cancel-async-job", "alice")
        assert read.status_code == 200 and read.json()["status"] == "changed"
        assert read.json()["diff"] == pending["cancel-async-job"]["diff"]
        stale = await api(
            gw,
            "POST",
            "/api/tools/jobs/cancel-async-job/accept",
            "alice",
            json={"sha256": decision.tool_change.accepted_sha256},
        )
        assert stale.status_code == 409 and "not the" in stale.json()["detail"]
        assert (await definitions(gw))["cancel-async-job"].accepted_by == "first sight"
        nobody = await api(gw, "POST", "/api/tools/jobs/cancel-async-job/accept", json={"sha256": current})
        assert nobody.status_code == 401
        accepted = await api(gw, "POST", "/api/tools/jobs/cancel-async-job/accept", "alice", json={"sha256": current})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["previous_sha256"] == first_seen["cancel-async-job"].accepted_sha256
        again = await api(gw, "POST", "/api/tools/jobs/cancel-async-job/accept", "alice", json={"sha256": current})
        assert again.status_code == 409 and "already accepted" in again.json()["detail"]

        # Accepted: the next call runs at once (this replica learnt it from its own API).
        async with gw.session("jobs") as session:
            result = await session.call_tool("cancel-async-job", {"jobId": "job-3"})
            assert "approval pending" not in text_of(result)
            assert [call["arguments"] for call in ran(tmp_path, "cancel-async-job")][-1] == {"jobId": "job-3"}

            # A tool that appeared on a known server follows on_tool_change too.
            new = await session.call_tool("purge-async-jobs", {})
            assert new.is_error and "approval pending" in text_of(new)
            assert ran(tmp_path, "purge-async-jobs") == []
            code, out, err = await holdgate_cli(tmp_path, database, "tools", "accept", "jobs", "purge-async-jobs")
            assert code == 0, err
            assert "accepted jobs/purge-async-jobs" in out and "a new tool" in out

            # Accepted with the CLI (another process): this one sees it on its next re-read.
            async def purged() -> bool:
                result = await session.call_tool("purge-async-jobs", {})
                return "approval pending" not in text_of(result)

            await until(purged, "the CLI's accept to reach the gateway")
        assert len(ran(tmp_path, "purge-async-jobs")) == 1

        events = await definition_events(gw)
    seen = [(event.verdict, event.tool, event.grant) for event in events]
    assert ("definition_changed", "cancel-async-job", "upstream") in seen
    assert ("definition_changed", "purge-async-jobs", "upstream") in seen
    assert ("definition_accepted", "cancel-async-job", "alice") in seen
    assert ("definition_accepted", "purge-async-jobs", "local-operator") in seen
    accept_event = next(e for e in events if e.verdict == "definition_accepted" and e.tool == "cancel-async-job")
    assert json.loads(accept_event.arguments) == {
        "accepted_sha256_before": first_seen["cancel-async-job"].accepted_sha256,
        "sha256": current,
    }
    assert "accepted by alice via api" in (accept_event.reason or "")


async def test_deny_refuses_calls_to_a_changed_tool_until_it_is_accepted(tmp_path, database):
    deny = policy(servers={"jobs": {"on_tool_change": "deny"}})
    async with run_gateway(tmp_path, policy=deny, servers=servers(tmp_path), **database) as gw:
        tokens = gw.tokens
    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with run_gateway(tmp_path, policy=deny, servers=changed, grants=[], tokens=tokens, **database) as gw:
        async with gw.session("jobs") as session:
            refused = await session.call_tool("cancel-async-job", {"jobId": "job-1"})
            untouched = await session.call_tool("list-async-jobs", {})
        assert refused.is_error
        assert "changed since a person accepted it" in text_of(refused)
        assert "holdgate tools accept jobs cancel-async-job" in text_of(refused)
        assert "servers.jobs.on_tool_change" in text_of(refused)
        assert not untouched.is_error, "a tool as accepted is not affected"
        assert ran(tmp_path, "cancel-async-job") == []
        assert await decisions(gw) == [], "deny opens no decision"
        await gw.state.audit.flush()
        async with gw.state.sessions() as session:
            call = await session.scalar(
                select(AuditEvent).where(AuditEvent.tool == "cancel-async-job", AuditEvent.verdict == "denied")
            )
        assert call is not None and call.rule == "servers.jobs.on_tool_change"


async def test_allow_lets_calls_through_and_still_records_the_change(tmp_path):
    allow = policy(on_tool_change="allow")
    async with run_gateway(tmp_path, policy=allow, servers=servers(tmp_path)) as gw:
        tokens = gw.tokens
    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with run_gateway(tmp_path, policy=allow, servers=changed, grants=[], tokens=tokens) as gw:
        async with gw.session("jobs") as session:
            result = await session.call_tool("purge-async-jobs", {})
        assert "would purge" in text_of(result)
        rows = await definitions(gw)
    assert rows["cancel-async-job"].accepted_sha256 != rows["cancel-async-job"].current_sha256
    assert rows["purge-async-jobs"].accepted_sha256 is None


async def test_a_denying_rule_still_denies_with_its_own_reason(tmp_path):
    rules = policy(tools={"cancel-async-job": {"action": "deny", "reason": "never cancel"}})
    async with run_gateway(tmp_path, policy=rules, servers=servers(tmp_path)) as gw:
        tokens = gw.tokens
    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with run_gateway(tmp_path, policy=rules, servers=changed, grants=[], tokens=tokens) as gw:
        async with gw.session("jobs") as session:
            refused = await session.call_tool("cancel-async-job", {"jobId": "x"})
    assert refused.is_error and "never cancel" in text_of(refused)


async def test_first_sight_trusts_whatever_the_server_presents(tmp_path):
    """A server never seen before has nothing to compare with: its first complete listing is accepted."""
    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with run_gateway(tmp_path, policy=policy(), servers=changed) as gw:
        async with gw.session("jobs") as session:
            result = await session.call_tool("purge-async-jobs", {})
        rows = await definitions(gw)
    assert "would purge" in text_of(result)
    assert all(row.accepted_sha256 == row.current_sha256 for row in rows.values())
    assert len(rows) == 5


@pytest.mark.parametrize("rule", [{"action": "require_approval", "approval": {"approvers": ["bob"]}}])
async def test_a_rule_that_requires_approval_keeps_its_approvers_and_shows_the_change(tmp_path, rule):
    rules = policy(tools={"cancel-async-job": rule})
    settings = {"approval_hold_s": 0.3}
    async with run_gateway(tmp_path, policy=rules, servers=servers(tmp_path), **settings) as gw:
        tokens = gw.tokens
    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with run_gateway(tmp_path, policy=rules, servers=changed, grants=[], tokens=tokens, **settings) as gw:
        async with gw.session("jobs") as session:
            await session.call_tool("cancel-async-job", {"jobId": "x"})
        [decision] = await decisions(gw, status="pending")
    assert decision.rule == "cancel-async-job" and decision.approvers == ["bob"]
    assert decision.tool_change is not None and decision.tool_change.kind == "changed"


async def test_calls_read_no_tool_definition_from_the_database(tmp_path):
    """The call path's check is memory only: calls to changed and unchanged tools send no statement about
    definitions (a tools/list that matches what is known sends none either)."""
    from sqlalchemy import event

    settings = {"approval_hold_s": 0.2, "tool_definitions_refresh_s": 3600}
    async with run_gateway(tmp_path, policy=policy(), servers=servers(tmp_path), **settings) as gw:
        tokens = gw.tokens
    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with run_gateway(tmp_path, policy=policy(), servers=changed, grants=[], tokens=tokens, **settings) as gw:
        statements: list[str] = []

        def seen(conn, cursor, statement, parameters, context, executemany) -> None:
            if "tool_definitions" in statement or "tool_servers" in statement:
                statements.append(statement)

        event.listen(gw.state.engine.sync_engine, "before_cursor_execute", seen)
        try:
            async with gw.session("jobs") as session:
                await session.list_tools()
                for i in range(10):
                    await session.call_tool("list-async-jobs", {})
                    await session.call_tool("get-async-job-result", {"jobId": f"j{i}"})
                held = await session.call_tool("cancel-async-job", {"jobId": "j"})
        finally:
            event.remove(gw.state.engine.sync_engine, "before_cursor_execute", seen)
    assert "approval pending" in text_of(held)
    assert statements == []
