"""The audit never stops: a record with values no database or strict JSON takes, or one the database
refuses outright, never holds back the others, and the chain stays verifiable. Both databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service import db
from service.audit import chain
from service.audit import service as audit_service
from service.audit.service import UNRECORDABLE, AuditFilter, AuditRecord, AuditWriter
from service.models import AuditEvent

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()


def record(i: int, **changes: Any) -> AuditRecord:
    fields: dict[str, Any] = dict(
        ts=NOW + i / 1000,
        grant="agent",
        server="jobs",
        tool="cancel-async-job",
        arguments={"jobId": f"job-{i}"},
        redact=(),
        rule="cancel-async-job",
        verdict="allowed",
        outcome="ok",
        duration_ms=1.0,
    )
    return AuditRecord(**{**fields, **changes})


async def events(engine: AsyncEngine) -> list[AuditEvent]:
    async with db.session_factory(engine)() as session:
        return list((await session.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars())


async def verified(engine: AsyncEngine) -> chain.ChainReport:
    async with db.session_factory(engine)() as session:
        report = await chain.verify(session)
        exported = [audit_service.to_jsonl(e) async for e in audit_service.iter_events(session, flt=AuditFilter())]
    assert chain.verify_export(exported).ok, "the export does not verify"
    return report


def unrecordable_count() -> float:
    return REGISTRY.get_sample_value("holdgate_audit_unrecordable_total") or 0.0


async def refuse_inserts(engine: AsyncEngine, condition: str) -> None:
    """A trigger that makes the database itself refuse some audit rows (what a real refusal looks like)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(
                "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN "
                f"IF {condition} THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
            )
        else:
            await conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events WHEN {condition} "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            )


async def allow_inserts(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "DROP TRIGGER refuse_audit" + (" ON audit_events" if conn.dialect.name == "postgresql" else "")
        )


async def test_values_no_database_or_strict_json_takes_are_stored_in_a_canonical_form(engine):
    long_tool = "t" * 256  # the engine allows 256 characters, the column holds 200
    poisoned = [
        record(1, arguments={"amount": float("inf"), "low": float("-inf"), "ratio": float("nan")}),
        record(2, tool="cancel\x00job", detail="upstream said \x00", arguments={"note": "a\x00b"}),
        record(3, tool=long_tool),
        record(4, tool="x" * 250 + "\x00"),
        record(5, arguments={"lone": "\ud800", "\udfff": 1}, reason="rule \x00 reason"),
    ]
    before = unrecordable_count()
    writer = AuditWriter(db.session_factory(engine), batch_size=50)
    for entry in [record(0), *poisoned, record(6)]:
        writer.record(entry)
    await writer.flush()

    rows = await events(engine)
    assert [json.loads(r.arguments) for r in rows][:2] == [
        {"jobId": "job-0"},
        {"amount": "[number: Infinity]", "low": "[number: -Infinity]", "ratio": "[number: NaN]"},
    ]
    assert rows[2].tool.startswith("cancel\\u0000job…[altered to store; sha256 ")
    assert rows[2].detail == "upstream said \\u0000"
    assert json.loads(rows[2].arguments) == {"note": "a\x00b"}  # JSON text escapes NUL itself
    assert len(rows[3].tool) == 200 and rows[3].tool.startswith("t" * 150) and "sha256" in rows[3].tool
    assert len(rows[4].tool) == 200 and rows[3].tool != rows[4].tool
    assert json.loads(rows[5].arguments) == {"lone": "\\ud800", "\\udfff": 1}
    assert rows[5].reason == "rule \\u0000 reason"
    assert rows[6].arguments == '{"jobId": "job-6"}'
    assert len(rows) == 7 and not writer._queue
    assert unrecordable_count() == before  # stored in canonical form, not replaced
    assert (await verified(engine)).ok


async def test_a_record_the_database_refuses_is_replaced_and_the_rest_of_its_batch_written(engine):
    await refuse_inserts(
        engine,
        "position('poison' in NEW.arguments) > 0"
        if engine.dialect.name == "postgresql"
        else "instr(NEW.arguments, 'poison') > 0",
    )
    before = unrecordable_count()
    writer = AuditWriter(db.session_factory(engine), batch_size=50)
    batch = [record(i) for i in range(5)]
    batch[2] = record(2, arguments={"jobId": "poison"}, verdict="approved", decision_id="d_1", detail="text")
    for entry in batch:
        writer.record(entry)
    await writer.flush()

    rows = await events(engine)
    assert [json.loads(r.arguments) for r in rows] == [
        {"jobId": "job-0"},
        {"jobId": "job-1"},
        {},
        {"jobId": "job-3"},
        {"jobId": "job-4"},
    ]
    minimal = rows[2]
    assert (minimal.grant, minimal.server, minimal.tool, minimal.verdict, minimal.decision_id) == (
        "agent",
        "jobs",
        "cancel-async-job",
        "approved",
        "d_1",
    )
    assert minimal.detail is not None and minimal.detail.startswith(UNRECORDABLE)
    assert "refused by the test trigger" in minimal.detail
    assert unrecordable_count() == before + 1

    # Later records are written too, in their own batches.
    writer.record(record(5))
    writer.record(record(6, arguments={"jobId": "poison again"}))
    await writer.flush()
    rows = await events(engine)
    assert len(rows) == 7 and json.loads(rows[5].arguments) == {"jobId": "job-5"}
    assert rows[6].detail is not None and rows[6].detail.startswith(UNRECORDABLE)
    assert unrecordable_count() == before + 2
    assert (await verified(engine)).ok


async def test_a_record_that_cannot_even_be_prepared_is_replaced(engine):
    before = unrecordable_count()
    writer = AuditWriter(db.session_factory(engine))
    writer.record(record(0, arguments={"handle": object()}))  # no JSON spelling at all
    writer.record(record(1))
    await writer.flush()
    rows = await events(engine)
    assert rows[0].detail is not None and rows[0].detail.startswith(UNRECORDABLE) and "TypeError" in rows[0].detail
    assert json.loads(rows[1].arguments) == {"jobId": "job-1"}
    assert unrecordable_count() == before + 1
    assert (await verified(engine)).ok


async def test_arguments_nested_deeper_than_python_recurses_are_still_recorded(engine):
    deep: Any = "bottom"
    for _ in range(5000):
        deep = [deep]
    writer = AuditWriter(db.session_factory(engine))
    writer.record(record(0, arguments={"deep": deep}))
    writer.record(record(1))
    await writer.flush()
    rows = await events(engine)
    assert len(rows) == 2 and json.loads(rows[1].arguments) == {"jobId": "job-1"}
    assert rows[0].detail is not None and rows[0].detail.startswith(UNRECORDABLE)  # no digest for it either
    assert (await verified(engine)).ok


async def test_while_the_database_refuses_everything_nothing_is_replaced_or_lost(engine):
    await refuse_inserts(engine, "NEW.server = 'jobs'")
    before = unrecordable_count()
    writer = AuditWriter(db.session_factory(engine))
    for i in range(3):
        writer.record(record(i))
    with pytest.raises(Exception, match="refused by the test trigger"):
        await writer.flush()
    assert len(writer._queue) == 3 and await events(engine) == []
    await allow_inserts(engine)
    await writer.flush()
    rows = await events(engine)
    assert [json.loads(r.arguments)["jobId"] for r in rows] == ["job-0", "job-1", "job-2"]
    assert all(r.detail is None for r in rows)
    assert unrecordable_count() == before
    assert (await verified(engine)).ok
