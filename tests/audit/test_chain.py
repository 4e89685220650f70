"""The audit trail's hash chain: an edited, deleted or cut-off record is found and named; retention
and export keep the chain verifiable; replicas on PostgreSQL append one after another."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service import db
from service.audit import chain
from service.audit import service as audit_service
from service.audit.service import AuditFilter, AuditRecord, AuditWriter
from service.cli import app
from service.settings import get_settings

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def record(i: int, *, days_ago: float = 0, **changes) -> AuditRecord:
    fields = dict(
        ts=(NOW - timedelta(days=days_ago)).timestamp() + i / 1000,
        grant="agent",
        server="jobs",
        tool="cancel-async-job",
        arguments={"jobId": f"job-{i}", "token": "s3cret", "note": "é ✓"},
        redact=(),
        rule="cancel-async-job",
        verdict="allowed",
        outcome="ok",
        duration_ms=1.25 + i,
    )
    return AuditRecord(**{**fields, **changes})


async def write(url: str, records: list[AuditRecord], **writer_options) -> AuditWriter:
    engine = db.create_engine(url)
    await db.upgrade(engine)
    writer = AuditWriter(db.session_factory(engine), **writer_options)
    for entry in records:
        writer.record(entry)
    await writer.flush()
    await engine.dispose()
    return writer


async def verify(url: str) -> chain.ChainReport:
    engine = db.create_engine(url)
    try:
        async with db.session_factory(engine)() as session:
            return await chain.verify(session)
    finally:
        await engine.dispose()


async def export(url: str) -> list[str]:
    engine = db.create_engine(url)
    try:
        async with db.session_factory(engine)() as session:
            return [audit_service.to_jsonl(e) async for e in audit_service.iter_events(session, flt=AuditFilter())]
    finally:
        await engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "audit.db"
    return f"sqlite+aiosqlite:///{path}", path


def sql(path: Path, statement: str, *params) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(statement, params)


async def test_an_untouched_chain_verifies_and_so_does_its_export(sqlite_db):
    url, _ = sqlite_db
    await write(url, [record(i) for i in range(3)])
    await write(url, [record(i) for i in range(3, 5)])  # a second batch links to the first

    report = await verify(url)
    assert report.ok, report.describe()
    assert (report.checked, report.first_id, report.last_id) == (5, 1, 5)

    lines = await export(url)
    first = json.loads(lines[0])
    assert first["prev_hash"] == chain.GENESIS and len(first["hash"]) == 64
    assert json.loads(lines[1])["prev_hash"] == first["hash"]
    assert first["arguments"]["token"] == "[redacted]", "the chain covers what the audit keeps, redacted"
    assert chain.verify_export(lines).ok


async def test_an_export_line_without_its_time_is_named_not_a_crash(sqlite_db, tmp_path):
    """A hand-edited export that lost `ts`: a clear error with the line, and the CLI exits 2 saying so."""
    url, _ = sqlite_db
    await write(url, [record(i) for i in range(2)])
    lines = await export(url)
    cut = json.loads(lines[1])
    del cut["ts"]
    lines[1] = json.dumps(cut)

    with pytest.raises(ValueError, match=r"line 2: .*'ts'"):
        chain.verify_export(lines)

    (tmp_path / "cut.jsonl").write_text("".join(line.rstrip("\n") + "\n" for line in lines))
    result = CliRunner().invoke(app, ["audit", "verify", "--file", str(tmp_path / "cut.jsonl")])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "line 2: a record without its 'ts'" in said


async def test_an_edited_row_is_named(sqlite_db):
    url, path = sqlite_db
    await write(url, [record(i) for i in range(4)])
    sql(path, "UPDATE audit_events SET verdict = 'denied' WHERE id = 3")

    report = await verify(url)
    assert not report.ok
    assert [(p.kind, p.row_id) for p in report.problems] == [("edited", 3)]
    assert "row 3 was edited" in report.describe()

    tampered = await export(url)
    assert [p.row_id for p in chain.verify_export(tampered).problems] == [3]


async def test_a_row_edited_with_its_hash_recomputed_still_breaks_the_link(sqlite_db):
    url, path = sqlite_db
    await write(url, [record(i) for i in range(3)])
    lines = [json.loads(line) for line in await export(url)]
    forged = {**lines[1], "verdict": "denied"}
    sql(path, "UPDATE audit_events SET verdict = 'denied', hash = ? WHERE id = 2", chain.record_hash(forged))

    report = await verify(url)
    assert [(p.kind, p.row_id) for p in report.problems] == [("relinked", 3)]
    assert "between id 2 and id 3" in report.problems[0].message


async def test_deleted_rows_are_found_between_their_neighbours_and_at_the_tail(sqlite_db):
    url, path = sqlite_db
    await write(url, [record(i) for i in range(6)])
    sql(path, "DELETE FROM audit_events WHERE id IN (3, 4)")

    report = await verify(url)
    assert [(p.kind, p.row_id) for p in report.problems] == [("deleted", 5)]
    assert "row(s) deleted between id 2 and id 5" in report.problems[0].message

    sql(path, "DELETE FROM audit_events WHERE id = 6")
    report = await verify(url)
    assert [p.kind for p in report.problems] == ["deleted", "truncated"]
    assert "row(s) deleted after id 5: the chain head records id 6" in report.describe()

    sql(path, "DELETE FROM audit_events WHERE id = 1")
    report = await verify(url)
    assert "row(s) deleted before id 2: it does not link to the genesis hash" in report.describe()


async def test_retention_prunes_old_records_and_the_chain_still_verifies(sqlite_db):
    url, path = sqlite_db
    old = [record(i, days_ago=40) for i in range(3)]
    recent = [record(i, days_ago=1) for i in range(3, 6)]
    writer = await write(url, old + recent)

    engine = db.create_engine(url)
    writer = AuditWriter(db.session_factory(engine), retention_days=30, clock=lambda: NOW.timestamp())
    result = await writer.prune()
    await engine.dispose()
    assert (result.deleted, result.anchor_id) == (3, 3)

    report = await verify(url)
    assert report.ok, report.describe()
    assert (report.checked, report.first_id, report.anchor_id) == (3, 4, 3)
    assert "last record pruned by retention: id 3" in report.describe()
    assert chain.verify_export(await export(url)).ok

    await write(url, [record(9)])  # appends go on after a prune
    assert (await verify(url)).ok

    sql(path, "DELETE FROM audit_events WHERE id = 4")  # the first kept record: still caught
    report = await verify(url)
    assert "row(s) deleted between id 3 and id 5" in report.describe()
    assert "row 3 (the last record pruned by retention)" in report.describe()


async def test_records_from_before_the_chain_are_reported_apart(sqlite_db):
    url, path = sqlite_db
    await write(url, [])
    sql(
        path,
        'INSERT INTO audit_events (ts, "grant", server, tool, arguments, args_sha256, verdict) '
        "VALUES ('2026-01-01 00:00:00.000000+00:00', 'a', 'jobs', 't', '{}', ?, 'allowed')",
        "0" * 64,
    )
    await write(url, [record(1)])
    report = await verify(url)
    assert report.ok and report.legacy == 1 and report.checked == 1


def test_cli_verify_says_where_the_chain_breaks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOLDGATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("HOLDGATE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        url = get_settings().effective_database_url
        asyncio.run(write(url, [record(i, days_ago=400) for i in range(3)]))
        runner = CliRunner()

        ok = runner.invoke(app, ["audit", "verify"])
        assert ok.exit_code == 0, ok.output
        assert "ok: the chain is intact" in ok.output

        exported = runner.invoke(app, ["audit", "--format", "jsonl"])
        (tmp_path / "audit.jsonl").write_text(exported.stdout)
        assert runner.invoke(app, ["audit", "verify", "--file", str(tmp_path / "audit.jsonl")]).exit_code == 0

        sql(tmp_path / "data" / "holdgate.db", "UPDATE audit_events SET tool = 'other' WHERE id = 2")
        broken = runner.invoke(app, ["audit", "verify"])
        assert broken.exit_code == 1
        assert "row 2 was edited" in broken.output

        pruned = runner.invoke(app, ["audit", "prune", "--days", "30"])
        assert pruned.exit_code == 0 and "3 record(s)" in pruned.output
    finally:
        get_settings.cache_clear()


async def test_replicas_on_postgresql_append_to_one_chain(postgres_url):
    """Two writers (two replicas) flushing at the same time: the chain lock puts one batch after the other."""
    engine = db.create_engine(postgres_url)
    await db.upgrade(engine)
    writers = [AuditWriter(db.session_factory(engine), batch_size=7) for _ in range(2)]
    for n, writer in enumerate(writers):
        for i in range(40):
            writer.record(record(i, grant=f"replica-{n}"))
    await asyncio.gather(*(writer.flush() for writer in writers))
    async with db.session_factory(engine)() as session:
        report = await chain.verify(session)
    await engine.dispose()
    assert report.ok, report.describe()
    assert report.checked == 80
