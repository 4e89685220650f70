"""Through the real gateway and a real upstream: calls whose arguments hold values strict JSON refuses
(`1e400`, `NaN`), NUL, or whose tool name overflows a column are audited, open decisions, and the
service keeps auditing; the digest it shows is keyed. Both databases."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx2
from typer.testing import CliRunner, Result

from service.audit import chain
from service.cli import app as cli_app
from service.policy import canonical_json
from service.settings import get_settings
from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.dashboard.support import browser, sign_in
from tests.support.harness import (
    Gateway,
    audit_events,
    run_gateway,
    servers,
    text_of,
)


async def call_raw(http: httpx2.AsyncClient, gw: Gateway, request_id: int, name: str, arguments: str) -> dict[str, Any]:
    """tools/call with `arguments` as literal JSON text (`1e400` and `NaN` survive no JSON encoder)."""
    params = f'{{"name":{json.dumps(name)},"arguments":{arguments}}}'
    body = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{params}}}'
    answer = await http.post(gw.mcp_url("jobs"), content=body.encode())
    assert answer.status_code == 200, answer.text
    [data] = [line.removeprefix("data: ") for line in answer.text.splitlines() if line.startswith("data: ")] or [
        answer.text
    ]
    return json.loads(data)


async def verify(gw: Gateway) -> chain.ChainReport:
    async with gw.state.sessions() as session:
        return await chain.verify(session)


async def holdgate_cli(tmp_path, database: dict[str, Any], monkeypatch, *args: str) -> Result:
    """`holdgate …` against the gateway's database (in a thread: the command runs its own event loop)."""
    monkeypatch.setenv("HOLDGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOLDGATE_CONFIG_DIR", str(tmp_path / "config"))
    if "database_url" in database:
        monkeypatch.setenv("HOLDGATE_DATABASE_URL", database["database_url"])
    else:
        monkeypatch.delenv("HOLDGATE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args))
    finally:
        get_settings.cache_clear()


async def test_a_call_with_1e400_is_audited_and_the_service_keeps_auditing(tmp_path, database, monkeypatch):
    policy = {"version": "1", "default": "allow"}
    async with run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), **database) as gw:
        async with gw.wire("jobs") as http:
            await call_raw(http, gw, 2, "cancel-async-job", '{"jobId": "job-1", "amount": 1e400, "ratio": NaN}')
            await call_raw(http, gw, 3, "cancel-async-job", '{"jobId": "job-2", "note": "a\\u0000b"}')
        async with gw.session("jobs") as session:
            assert not (await session.call_tool("list-async-jobs", {})).is_error
        await gw.state.audit.flush()
        events = await audit_events(gw)
        report = await verify(gw)

    assert [(e.tool, json.loads(e.arguments)) for e in events] == [
        ("cancel-async-job", {"jobId": "job-1", "amount": "[number: Infinity]", "ratio": "[number: NaN]"}),
        ("cancel-async-job", {"jobId": "job-2", "note": "a\x00b"}),
        ("list-async-jobs", {}),
    ]
    assert all(e.detail is None or not e.detail.startswith("unrecordable") for e in events)
    assert report.ok and report.checked == 3
    verified = await holdgate_cli(tmp_path, database, monkeypatch, "audit", "verify")
    assert verified.exit_code == 0 and "ok: the chain is intact" in verified.output, verified.output
    exported = await holdgate_cli(tmp_path, database, monkeypatch, "audit", "--format", "jsonl")
    assert exported.exit_code == 0 and chain.verify_export(exported.stdout.splitlines()).ok


async def test_held_calls_with_unstorable_arguments_open_decisions_and_an_overlong_tool_is_refused_audited(
    tmp_path, database
):
    policy = approval_policy()
    policy["tools"]["*"] = {"action": "require_approval", "approval": {"approvers": ["group:ops"], "timeout": "15m"}}
    long_tool = "cancel-" + "x" * 249  # 256 characters: the decisions' tool column holds 200
    async with run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), approval_hold_s=0.3, **database) as gw:
        async with gw.wire("jobs") as http:
            odd = '{"jobId": "job-1", "amount": 1e400, "ratio": NaN, "note": "a\\u0000b", "token": "abc"}'
            first = await call_raw(http, gw, 2, "cancel-async-job", odd)
            again = await call_raw(http, gw, 3, "cancel-async-job", odd)
            overlong = await call_raw(http, gw, 4, long_tool, '{"jobId": "job-2"}')
        [odd_decision] = await wait_for_decisions(gw, 1)
        pages = [await api(gw, "GET", f"/api/decisions/{odd_decision.id}", "alice")]
        await gw.state.audit.flush()
        events = await audit_events(gw)
        listings = [await api(gw, "GET", path, "alice") for path in ("/api/decisions", "/api/audit")]
        async with browser(gw) as client:
            await sign_in(client, "alice")
            screens = [
                await client.get(path) for path in ["/", "/history", "/history/export", f"/decisions/{odd_decision.id}"]
            ]
        report = await verify(gw)

    assert odd_decision.id in first["result"]["content"][0]["text"]
    assert odd_decision.id in again["result"]["content"][0]["text"]  # the retry joined it
    # A name no column can hold is refused at the edge (no decision asks a person about a cut name),
    # and the refusal is audited with the name cut to fit and marked.
    assert "at most 200" in overlong["error"]["message"]
    [refused] = [e for e in events if e.tool.startswith("cancel-xxx")]
    assert refused.verdict == "denied" and len(refused.tool) == 200
    assert [page.status_code for page in pages + listings + screens] == [200] * 7
    assert "[number: Infinity]" in listings[1].text
    shown = pages[0].json()
    assert shown["arguments"] == {
        "jobId": "job-1",
        "amount": "[number: Infinity]",
        "ratio": "[number: NaN]",
        "note": "a\x00b",
        "token": "[redacted]",
    }
    assert report.ok


async def test_the_digest_shown_for_a_call_is_keyed_and_equal_for_equal_calls(tmp_path, database):
    arguments = {"jobId": "job-1", "token": "abc"}  # a short secret: redacted, and must not be guessable
    async with run_gateway(
        tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=0.3, **database
    ) as gw:
        async with gw.session("jobs") as session:
            first = await session.call_tool("cancel-async-job", arguments)
            again = await session.call_tool("cancel-async-job", dict(reversed(arguments.items())))
        [decision] = await wait_for_decisions(gw, 1)
        page = await api(gw, "GET", f"/api/decisions/{decision.id}", "alice")
        await gw.state.audit.flush()
        events = await audit_events(gw)
        tokens = gw.tokens
    async with run_gateway(  # a restart: same database, same key
        tmp_path, policy=None, servers={}, grants=[], tokens=tokens, approval_hold_s=0.3, **database
    ) as gw:
        async with gw.session("jobs") as session:
            after_restart = await session.call_tool("cancel-async-job", arguments)

    unkeyed = hashlib.sha256(canonical_json(arguments).encode()).hexdigest()
    assert decision.id in text_of(first) and decision.id in text_of(again) and decision.id in text_of(after_restart)
    assert page.json()["args_sha256"] == decision.args_sha256 != unkeyed
    assert len(decision.args_sha256) == 64
    assert {e.args_sha256 for e in events} == {decision.args_sha256}
    assert unkeyed not in page.text
