"""Replaying a candidate policy on the audit (`holdgate policy replay`): verdict changes counted exactly,
calls whose answer depends on a redacted value reported undecidable, the candidate's limits replayed in
time order — on a history written by the real audit writer, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from service import db
from service.audit.replay import ReplayFilter, replay, time_point
from service.audit.service import AuditRecord, AuditWriter
from service.cli import app
from service.policy import load_policy
from service.settings import get_settings

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


def call(tool: str, at: float, *, verdict: str = "allowed", rule: str | None = None, **changes: Any) -> AuditRecord:
    fields: dict[str, Any] = dict(
        ts=T0 + at,
        grant="agent",
        server="jobs",
        tool=tool,
        arguments={},
        redact=(),
        rule=rule or tool,
        verdict=verdict,
        outcome="ok" if verdict == "allowed" else None,
        duration_ms=1.0,
    )
    return AuditRecord(**{**fields, **changes})


async def write(engine: AsyncEngine, records: list[AuditRecord]) -> None:
    writer = AuditWriter(db.session_factory(engine))
    for entry in records:
        writer.record(entry)
    await writer.flush()


def candidate(tmp_path: Path, document: dict[str, Any], name: str = "candidate.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"version": "1", "default": "deny", **document}))
    return load_policy(path)


async def run(engine: AsyncEngine, policy, **filters: Any):
    async with db.session_factory(engine)() as session:
        return await replay(session, policy, ReplayFilter(**filters), batch=7)  # small batches: several fetches


async def test_verdict_changes_are_counted_exactly(engine: AsyncEngine, tmp_path: Path) -> None:
    history = [call("list-jobs", i) for i in range(10)]  # 10 in 10 s
    history += [call("cancel-async-job", 20 + i, arguments={"jobId": f"prod-{i}"}) for i in range(5)]
    history += [call("cancel-async-job", 30 + i, arguments={"jobId": f"dev-{i}"}) for i in range(4)]
    history += [call("delete-job", 40 + i, verdict="denied", rule="default", reason="no") for i in range(3)]
    history += [
        call("purge", 50, verdict="approved", decision_id="d_1"),
        call("purge", 51, verdict="denied", decision_id="d_2", reason="denied by alice"),
        call("purge", 52, verdict="expired", decision_id="d_3"),
    ]
    history += [call("bad\\u0000name", 60, verdict="denied", reason="refused at the edge: the tool name contains")]
    history += [AuditRecord(ts=T0 + 61, grant="agent", server="jobs", tool="purge", arguments={}, redact=(),
                            rule="purge", verdict="lapsed", decision_id="d_1")]  # fmt: skip  # a decision event
    await write(engine, history)
    policy = candidate(
        tmp_path,
        {
            "tools": {
                "list-jobs": {"rate_limit": {"max": 3, "window": "minute"}},
                "cancel-async-job": {
                    "cases": [{"when": "args.jobId.startsWith('prod-')", "action": "require_approval"}]
                },
                "delete-job": {"action": "allow"},
            }
        },
    )
    report = await run(engine, policy)
    assert report.replayed == 25 and report.skipped == 1
    assert dict(report.transitions) == {
        ("allow", "allow"): 3 + 4,
        ("allow", "rate_limited"): 7,
        ("allow", "require_approval"): 5,
        ("deny", "allow"): 3,
        ("require_approval", "deny"): 3,
    }
    assert report.changed == 18
    assert report.by_rule[("list-jobs", "allow", "rate_limited")] == 7
    assert report.by_rule[("cancel-async-job.cases[0]", "allow", "require_approval")] == 5
    assert report.by_rule[("default", "require_approval", "deny")] == 3
    [refusals] = report.limits.values()
    assert refusals.counter == "list-jobs_rate" and refusals.refused == 7
    assert refusals.first == datetime.fromtimestamp(T0 + 3, UTC)  # the 4th call in the minute is the first refused
    examples = report.examples[("allow", "require_approval")]
    assert [e.arguments for e in examples] == [{"jobId": "prod-0"}, {"jobId": "prod-1"}, {"jobId": "prod-2"}]
    document = report.to_dict()
    assert json.loads(json.dumps(document)) == document  # one JSON document
    assert document["rate_limit_refusals"][0]["calls"] == 7

    only = await run(
        engine, policy, since=datetime.fromtimestamp(T0 + 20, UTC), until=datetime.fromtimestamp(T0 + 25, UTC)
    )
    assert dict(only.transitions) == {("allow", "require_approval"): 5}


async def test_limits_replay_in_time_order_not_write_order(engine: AsyncEngine, tmp_path: Path) -> None:
    """A long call is audited when it ends, after shorter ones that began later: the replay orders by time."""
    await write(engine, [call("run", 5), call("run", 0), call("run", 20), call("run", 9, grant="other")])
    policy = candidate(tmp_path, {"tools": {"run": {"limits": [{"counter": "runs", "window": 10, "max": 1}]}}})
    report = await run(engine, policy)
    assert dict(report.transitions) == {("allow", "allow"): 3, ("allow", "rate_limited"): 1}
    [refused] = report.examples[("allow", "rate_limited")]
    assert refused.ts == datetime.fromtimestamp(T0 + 5, UTC)
    assert "retry_after=5s" in (refused.reason or "")

    shared = candidate(
        tmp_path,
        {"tools": {"run": {"limits": [{"counter": "runs", "window": 10, "max": 1, "scope": "global"}]}}},
        "g.json",
    )
    report = await run(engine, shared)  # global: the other grant's call at 9 s is refused too
    assert report.transitions[("allow", "rate_limited")] == 2


async def test_a_case_that_reads_a_redacted_value_is_undecidable(engine: AsyncEngine, tmp_path: Path) -> None:
    await write(
        engine,
        [
            call("login", 0, arguments={"user": "ann", "password": "hunter2"}),  # a secret-looking key: redacted
            call("login", 1, arguments={"user": "bob", "password": "x", "kind": "write"}),
            call("send", 2, arguments={"to": "a@b.c", "body": "hello"}, redact=("body",)),
            call("send", 3, arguments={"to": "ops@b.c", "body": "hi"}, redact=("body",)),
            call("nested", 4, arguments={"auth": {"apiKey": "k", "user": "c"}}),
        ],
    )
    policy = candidate(
        tmp_path,
        {
            "tools": {
                "login": {
                    "cases": [
                        {"when": "args.user == 'nobody'", "action": "deny"},
                        {"when": "has(args.kind) && args.kind == 'write' && args.password == 'x'", "action": "deny"},
                        {"when": "args.password.size() > 3", "action": "require_approval"},
                    ]
                },
                "send": {
                    "cases": [
                        {"when": "args.to.endsWith('@b.c') && args.to.startsWith('ops')", "action": "deny"},
                        {"when": "size(args) > 5", "action": "deny"},
                    ]
                },
                "nested": {"cases": [{"when": "has(args.auth.apiKey) && args.auth.user == 'c'", "action": "deny"}]},
            }
        },
    )
    report = await run(engine, policy)
    # ann: case 1 is false without the password (no `kind`), case 2 reads the password -> undecidable
    # bob: case 1 reads the password through `&&` after two true parts -> undecidable
    # send to ops@: decided by case 0, which does not read the redacted body; send to a@: case 1 uses the
    # map holding the body whole (`size(args)`): taken as reading it (the analysis errs on the safe side)
    # nested: has() of the redacted key itself is known (the key was there); the user is known
    assert dict(report.transitions) == {("allow", "undecidable"): 3, ("allow", "deny"): 2}
    unkept = "which the audit does not keep (redacted)"
    reasons = {(location, reason) for (_, location, reason) in report.undecidable}
    assert reasons == {
        ("tools.send.cases[1]", f"condition `size(args) > 5` reads args.body, {unkept}"),
        ("tools.login.cases[2]", f"condition `args.password.size() > 3` reads args.password, {unkept}"),
        (
            "tools.login.cases[1]",
            f"condition `has(args.kind) && args.kind == 'write' && args.password == 'x'` reads args.password, {unkept}",
        ),
    }


async def test_short_circuits_decide_without_the_redacted_value(engine: AsyncEngine, tmp_path: Path) -> None:
    await write(
        engine,
        [
            call("t", 0, arguments={"kind": "read", "token": "abc"}),
            call("t", 1, arguments={"kind": "write", "token": "abc"}),
        ],
    )
    policy = candidate(
        tmp_path,
        {"tools": {"t": {"cases": [{"when": "args.kind == 'write' && args.token == 'abc'", "action": "deny"}]}}},
    )
    report = await run(engine, policy)
    assert dict(report.transitions) == {("allow", "allow"): 1, ("allow", "undecidable"): 1}

    whole = candidate(
        tmp_path,
        {"tools": {"t": {"cases": [{"when": "args.exists(k, args[k] == 'abc')", "action": "deny"}]}}},
        "w.json",
    )
    report = await run(engine, whole)  # the map holding the secret read whole: undecidable, never "false"
    assert dict(report.transitions) == {("allow", "undecidable"): 2}


async def test_an_undecidable_call_makes_the_limits_after_it_undecidable(engine: AsyncEngine, tmp_path: Path) -> None:
    await write(
        engine,
        [
            call("t", 0, arguments={"token": "a"}),
            call("t", 1, arguments={"n": 1}),
            call("t", 30, arguments={"n": 2}),
        ],
    )
    policy = candidate(
        tmp_path,
        {"tools": {"t": {"limits": [{"counter": "c", "window": 10, "max": 1}],
                         "cases": [{"when": "has(args.n) && args.n > 5", "action": "deny"},
                                   {"when": "has(args.token) && args.token == 'zz'", "action": "deny"}]}}},
    )  # fmt: skip
    report = await run(engine, policy)
    # 0 s: undecidable (the token), may have used counter c; 1 s: decided allow, but its limit is unknown;
    # 30 s: the window has passed, decided again
    assert dict(report.transitions) == {("allow", "undecidable"): 2, ("allow", "allow"): 1}
    assert any(location == "limits" for (_, location, _) in report.undecidable)


async def test_storage_spellings_and_unrecordable_records(engine: AsyncEngine, tmp_path: Path) -> None:
    await write(
        engine,
        [
            call("t", 0, arguments={"amount": float("nan")}),  # stored as "[number: NaN]"
            call("t", 1, arguments={"amount": "[number: NaN]"}),  # the same text, sent as is
            call("u", 2, arguments={"x": 1}),
        ],
    )
    policy = candidate(
        tmp_path,
        {"tools": {"t": {"cases": [{"when": "args.amount == '[number: NaN]'", "action": "require_approval"}]},
                   "u": {"cases": [{"when": "args.x == 1", "action": "deny"}]}}},
    )  # fmt: skip
    report = await run(engine, policy)
    # NaN would be denied (fail closed), the text held for approval: the two readings differ -> undecidable
    assert report.transitions[("allow", "undecidable")] == 2
    assert report.transitions[("allow", "deny")] == 1

    agree = candidate(
        tmp_path, {"tools": {"t": {"cases": [{"when": "false", "action": "allow"}], "action": "deny"}}}, "a.json"
    )
    report = await run(engine, agree)  # both readings deny: decided (and `u` falls to the default)
    assert dict(report.transitions) == {("allow", "deny"): 3}


def test_time_points() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert time_point("7d", now=now) == now - timedelta(days=7)
    assert time_point("1.5h", now=now) == now - timedelta(minutes=90)
    assert time_point("2026-11-24T12:00", now=now) == datetime(2026, 11, 24, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither an age"):
        time_point("yesterday", now=now)


def test_replay_command(engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`holdgate policy replay` prints the changes, and `--json` the same as one document."""
    import asyncio

    url = engine.url.render_as_string(hide_password=False)
    asyncio.run(_write_fresh(url, [call("delete-job", 0, verdict="denied", rule="default", arguments={"id": "j1"})]))
    path = tmp_path / "candidate.json"
    path.write_text(json.dumps({"version": "1", "default": "deny", "tools": {"delete-job": {"action": "allow"}}}))
    monkeypatch.setenv("HOLDGATE_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        text = runner.invoke(app, ["policy", "replay", str(path), "--since", "2026-11-24T00:00"])
        assert text.exit_code == 0, text.output
        assert "deny -> allow" in text.output and "#1 " in text.output
        document = runner.invoke(app, ["policy", "replay", str(path), "--since", "2026-11-24T00:00", "--json"])
        data = json.loads(document.output)
        assert data["changed"] == 1 and data["transitions"][0]["examples"][0]["arguments"] == {"id": "j1"}
        bad = runner.invoke(app, ["policy", "replay", str(path), "--since", "last tuesday"])
        assert bad.exit_code == 2 and "neither an age" in bad.output
        missing = runner.invoke(app, ["policy", "replay", str(tmp_path / "nope.json")])
        assert missing.exit_code == 1 and "nope.json" in missing.output
    finally:
        get_settings.cache_clear()


async def _write_fresh(url: str, records: list[AuditRecord]) -> None:
    engine = db.create_engine(url)
    try:
        await write(engine, records)
    finally:
        await engine.dispose()
