"""Audit records: built on the call path, written to the database by a background writer.

`AuditWriter.record()` only appends to an in-memory queue, so no database round trip sits on
a tool call. A background task writes batches; `aclose()` drains what is left, so a clean
shutdown loses nothing. Arguments are redacted and hashed in the writer, not on the call path.
Each batch is linked into the hash chain (`service.audit.chain`) in the transaction that writes
it; with a retention period, the same task prunes the oldest records now and then.

One record can never block the others. Every value is stored in a form each database takes (see
`service.policy.redaction`: non-finite numbers as marker strings, NUL and lone surrogates escaped,
names cut to their column with a marker). A batch the database still refuses is written again one
record at a time; a record that fails on its own is written as a minimal *unrecordable* record
(grant, server, tool, verdict, rule, outcome, and the error in `detail`; no arguments), counted by
`holdgate_audit_unrecordable_total`, so the chain stays whole and the next records follow. Only
when even that minimal record cannot be written (the database is down) is the rest kept in memory
and retried.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from service import metrics
from service.audit import chain
from service.audit.keys import ArgsDigester
from service.background import cancel_and_wait, wait_until_set
from service.models import AuditEvent
from service.policy.redaction import args_digest, bounded_text, redact_arguments, storable_text

if TYPE_CHECKING:
    from service.policy import Verdict

logger = logging.getLogger(__name__)

EXPORT_FIELDS = (
    "id", "ts", "grant", "server", "tool", "arguments", "args_sha256", "verdict", "rule", "reason",
    "outcome", "detail", "duration_ms", "decision_id", "shadow_verdict", "shadow_rule", "standing_id", "prev_hash",
    "hash",
)  # fmt: skip


class AuditedCall(Protocol):
    """What the audit reads of a tools/call (the gateway's `ToolCall`; the audit does not import the gateway)."""

    @property
    def grant(self) -> str: ...

    @property
    def server(self) -> str: ...

    @property
    def tool(self) -> str: ...

    @property
    def arguments(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A call's audit entry before it is written: raw arguments plus the paths to redact."""

    ts: float
    grant: str
    server: str
    tool: str
    arguments: dict[str, Any]
    redact: tuple[str, ...]
    rule: str
    verdict: str = "pending"
    reason: str | None = None
    outcome: str | None = None
    detail: str | None = None
    duration_ms: float | None = None
    decision_id: str | None = None
    args_sha256: str | None = None
    """Given when `arguments` are not the call's own (a decision's event, from its redacted copy)."""
    shadow_verdict: str | None = None
    """The shadow policy's action, set only where it differs from the enforced one (`service.policy.shadow`)."""
    shadow_rule: str | None = None
    standing_id: str | None = None
    """The standing approval that let the call through without asking (or whose end this record is)."""

    @classmethod
    def begin(cls, call: AuditedCall, verdict: Verdict, *, ts: float) -> AuditRecord:
        return cls(
            ts=ts,
            grant=call.grant,
            server=call.server,
            tool=call.tool,
            arguments=call.arguments,
            redact=verdict.redact,
            rule=verdict.rule,
        )

    def finish(
        self,
        verdict: str,
        *,
        started: float,
        reason: str | None = None,
        outcome: str | None = None,
        detail: str | None = None,
        decision_id: str | None = None,
    ) -> AuditRecord:
        """The record with its ending: verdict, outcome and the time the call took."""
        return replace(
            self,
            verdict=verdict,
            reason=reason if reason is not None else self.reason,
            outcome=outcome,
            detail=detail,
            decision_id=decision_id or self.decision_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def to_row(self, key: bytes) -> dict[str, Any]:
        """The `audit_events` column values (arguments redacted and digested here, off the call path)."""
        return fit_columns(
            dict(
                ts=datetime.fromtimestamp(self.ts, UTC),
                grant=self.grant,
                server=self.server,
                tool=self.tool,
                arguments=json.dumps(
                    redact_arguments(self.arguments, self.redact), ensure_ascii=False, allow_nan=False
                ),
                args_sha256=self.args_sha256 or args_digest(key, self.arguments),
                verdict=self.verdict,
                rule=self.rule,
                reason=self.reason,
                outcome=self.outcome,
                detail=(self.detail or "")[:DETAIL_CHARS] or None,
                duration_ms=self.duration_ms,
                decision_id=self.decision_id,
                shadow_verdict=self.shadow_verdict,
                shadow_rule=self.shadow_rule,
                standing_id=self.standing_id,
            )
        )

    def unrecordable_row(self, error: BaseException) -> dict[str, Any]:
        """The minimal record of a call whose full record could not be stored: who, what, the verdict, why not."""
        return fit_columns(
            dict(
                ts=datetime.fromtimestamp(self.ts, UTC),
                grant=self.grant,
                server=self.server,
                tool=self.tool,
                arguments="{}",
                args_sha256="",
                verdict=self.verdict,
                rule=self.rule,
                reason=None,
                outcome=self.outcome,
                detail=f"{UNRECORDABLE}: {error_text(error)}; its arguments and detail were not kept",
                duration_ms=self.duration_ms,
                decision_id=self.decision_id,
                shadow_verdict=self.shadow_verdict,
                shadow_rule=self.shadow_rule,
            )
        )


UNRECORDABLE = "unrecordable call: holdgate could not store this call's full audit record"
"""How an unrecordable record's `detail` begins (search the audit for it)."""
DETAIL_CHARS = 2000
_COLUMN_CHARS: dict[str, int] = {
    column.name: column.type.length
    for column in AuditEvent.__table__.columns  # type: ignore[attr-defined]
    if isinstance(getattr(column.type, "length", None), int)
}


def fit_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Every text value storable (no NUL, no lone surrogate) and within its column's length."""
    for name, value in row.items():
        if isinstance(value, str):
            limit = _COLUMN_CHARS.get(name)
            row[name] = bounded_text(value, limit) if limit is not None else storable_text(value)
    return row


def error_text(error: BaseException) -> str:
    """What went wrong, in one line: the driver's own message, not the statement and its parameters."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:300] if lines else 'no message'}"


class AuditWriter:
    """Queues records and writes them in batches from a background task."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        flush_interval: float = 0.25,
        batch_size: int = 500,
        retention_days: float | None = None,
        prune_interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
        args_digest: ArgsDigester | None = None,
    ) -> None:
        self._sessions = sessions
        self.args_digest = args_digest or ArgsDigester(sessions)
        """Shared with the approvals, so a decision and its call's audit record carry the same digest."""
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self.retention_days = retention_days
        self._prune_interval = prune_interval
        self._clock = clock
        self._next_prune = 0.0
        self._queue: list[AuditRecord] = []
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_write_failed = False

    def record(self, entry: AuditRecord) -> None:
        """Queue one record; never blocks and never touches the database."""
        if self._closed:
            logger.error("audit record after shutdown, dropped: %s/%s", entry.server, entry.tool)
            return
        self._queue.append(entry)
        metrics.count_call(entry.server, entry.verdict, entry.outcome, entry.duration_ms)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    @property
    def last_write_failed(self) -> bool:
        """Whether the background task's last attempt to write (or prune) failed; read by /healthz."""
        return self._last_write_failed

    @property
    def backlog(self) -> int:
        """Records queued and not yet written; read by /healthz."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def flush(self) -> None:
        """Write everything queued so far (tests and shutdown).

        Serialized: a caller that arrives while the background task is writing a batch waits for
        that batch to be committed, so "flushed" means "in the database".
        """
        async with self._flush_lock:
            while self._queue:
                batch, self._queue = self._queue[: self._batch_size], self._queue[self._batch_size :]
                await self._write(batch)

    async def _write_queued(self) -> None:
        """Write the records queued when it starts (the background task's turn); later ones wait for the next.

        Not `flush`, which writes until the queue is empty: under a steady stream of calls records kept arriving
        while a batch was written, so the writer went on committing batches of one or two records back to back,
        each three statements and a commit (1.5-5 ms of CPU) instead of one batch per `flush_interval`. A
        record still waits at most one interval plus the write before it, as documented, in the same order.
        """
        async with self._flush_lock:
            pending = len(self._queue)
            while pending > 0 and self._queue:
                size = min(pending, self._batch_size)
                batch, self._queue = self._queue[:size], self._queue[size:]
                pending -= size
                await self._write(batch)

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self.flush()

    async def prune(self) -> chain.PruneResult | None:
        """Delete records older than the retention period (none without one); the chain stays verifiable."""
        if self.retention_days is None:
            return None
        now = datetime.fromtimestamp(self._clock(), UTC)
        before = now - timedelta(days=self.retention_days)
        async with self._sessions() as session:
            result = await chain.prune(session, before=before, now=now)
            await session.commit()
        if result.deleted:
            logger.info("audit retention: %d record(s) before %s pruned", result.deleted, before.isoformat())
        return result

    async def _run(self) -> None:
        while True:
            await wait_until_set(self._wake, self._flush_interval)
            self._wake.clear()
            try:
                await self._write_queued()
                self._last_write_failed = False
                if self.retention_days is not None and time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + self._prune_interval
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._last_write_failed = True
                logger.exception("audit write failed; will retry")
                await asyncio.sleep(1)

    async def _write(self, batch: Sequence[AuditRecord]) -> None:
        """Write `batch` in one transaction; if the database refuses it, record by record (`_isolate`).

        Whatever stops the write, each record ends up either committed or back in the queue, never both: a
        cancel that lands while a transaction is in flight is taken after it ends (`_append`), so a committed
        batch is never put back for the flush at shutdown to write a second time.
        """
        try:
            key = await self.args_digest.key()
            rows = [self._row(entry, key) for entry in batch]
        except BaseException:
            self._queue[:0] = batch  # nothing written: keep them for the next attempt
            raise
        try:
            await self._append([row for row, _ in rows])
        except CancelledAfterCommit:
            _count_unrecordable(sum(replaced for _, replaced in rows))
            raise
        except Exception as exc:
            if len(batch) > 1:
                logger.warning(
                    "audit batch of %d refused (%s); writing it record by record", len(batch), error_text(exc)
                )
        except BaseException:
            self._queue[:0] = batch  # not committed: keep them for the next attempt
            raise
        else:
            _count_unrecordable(sum(replaced for _, replaced in rows))
            return
        await self._isolate(batch, rows)

    def _row(self, entry: AuditRecord, key: bytes) -> tuple[dict[str, Any], bool]:
        """The record's row, or its minimal replacement when its values cannot even be prepared (True)."""
        try:
            return entry.to_row(key), False
        except Exception as exc:
            return _unrecordable(entry, exc), True

    async def _isolate(self, batch: Sequence[AuditRecord], rows: Sequence[tuple[dict[str, Any], bool]]) -> None:
        """One record at a time, so a record the database refuses cannot hold back the others."""
        for index, (entry, (row, replaced)) in enumerate(zip(batch, rows, strict=True)):
            try:
                try:
                    await self._append([row])
                except CancelledAfterCommit:
                    raise
                except Exception as exc:
                    if replaced:
                        raise
                    replaced = True
                    await self._append([_unrecordable(entry, exc)])
            except CancelledAfterCommit:  # this record is in: the rest wait for the next attempt
                _count_unrecordable(replaced)
                self._queue[:0] = batch[index + 1 :]
                raise
            except BaseException:  # even the minimal record failed: the database itself is the problem
                self._queue[:0] = batch[index:]
                raise
            _count_unrecordable(replaced)

    async def _append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert `rows` into the chain in one transaction, whose outcome the caller always learns.

        The transaction runs in a task of its own. A cancel of the caller (the shutdown stopping the writer) that
        lands while it is in flight is held until the transaction has ended, then raised: as
        `CancelledAfterCommit` if the rows were committed, as the plain cancel if they were not. Raised at once,
        it could come after the database committed (during the commit's round trip, or while the session closes)
        and the caller would put committed records back in the queue. The wait lasts as long as the transaction
        (three statements and a commit; a locked SQLite database fails it after its busy timeout). Only the event
        loop's own teardown, which cancels every task, cancels the transaction too; its outcome is then unknown
        and the records go back in a queue that nothing will flush.
        """
        caller = asyncio.current_task()
        name = caller.get_name() if caller is not None else None
        transaction = asyncio.create_task(self._commit(rows), name=name)  # the INSERT's task reads as the writer's
        cancelled: asyncio.CancelledError | None = None
        while not transaction.done():
            try:
                await asyncio.shield(transaction)
            except asyncio.CancelledError as exc:
                if transaction.cancelled():  # the loop's teardown: the transaction's outcome is unknown
                    raise
                cancelled = cancelled or exc
            except Exception:
                break  # its failure is raised below (or, if we were cancelled meanwhile, the cancel)
        if cancelled is None:
            transaction.result()  # raises the transaction's failure
            return
        if transaction.exception() is not None:
            raise cancelled from transaction.exception()
        raise CancelledAfterCommit() from cancelled

    async def _commit(self, rows: Sequence[dict[str, Any]]) -> None:
        async with self._sessions() as session:
            await chain.append(session, [dict(row) for row in rows])
            await session.commit()


class CancelledAfterCommit(asyncio.CancelledError):
    """The audit writer was cancelled while it wrote rows, and they were committed: they must not be written again."""


def _unrecordable(entry: AuditRecord, error: BaseException) -> dict[str, Any]:
    logger.error(
        "audit: the record of a call to %s/%s (grant %s) could not be stored (%s); a minimal record replaces it",
        storable_text(entry.server)[:200],
        storable_text(entry.tool)[:200],
        storable_text(entry.grant)[:200],
        error_text(error),
    )
    return entry.unrecordable_row(error)


def _count_unrecordable(written: int) -> None:
    """Counted once the minimal records are committed (a retry after an outage does not count twice)."""
    if written:
        metrics.count_unrecordable(written)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit events to list or export."""

    grant: str | None = None
    server: str | None = None
    tool: str | None = None
    verdict: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    shadow_disagrees: bool = False
    """Only calls where the shadow policy's action differed from the enforced one."""


def _filtered(query: Select[AuditEvent], flt: AuditFilter) -> Select[AuditEvent]:
    for column, value in (
        (col(AuditEvent.grant), flt.grant),
        (col(AuditEvent.server), flt.server),
        (col(AuditEvent.tool), flt.tool),
        (col(AuditEvent.verdict), flt.verdict),
    ):
        if value is not None:
            query = query.where(column == value)
    if flt.since is not None:
        query = query.where(col(AuditEvent.ts) >= flt.since)
    if flt.until is not None:
        query = query.where(col(AuditEvent.ts) < flt.until)
    if flt.shadow_disagrees:
        query = query.where(col(AuditEvent.shadow_verdict).is_not(None))
    return query


async def list_events(
    session: AsyncSession, *, flt: AuditFilter, limit: int = 100, offset: int = 0
) -> list[AuditEvent]:
    """Newest first."""
    query = _filtered(select(AuditEvent), flt).order_by(col(AuditEvent.id).desc()).limit(limit).offset(offset)
    return list((await session.execute(query)).scalars())


async def iter_events(session: AsyncSession, *, flt: AuditFilter, batch: int = 1000) -> AsyncIterator[AuditEvent]:
    """Oldest first, streamed in batches for export."""
    last_id = 0
    while True:
        query = (
            _filtered(select(AuditEvent), flt)
            .where(col(AuditEvent.id) > last_id)
            .order_by(col(AuditEvent.id))
            .limit(batch)
        )
        rows = list((await session.execute(query)).scalars())
        if not rows:
            return
        for row in rows:
            yield row
        last_id = rows[-1].id or last_id


def event_dict(event: AuditEvent) -> dict[str, Any]:
    data = {name: getattr(event, name) for name in EXPORT_FIELDS}
    data["ts"] = _aware(event.ts).isoformat()
    data["arguments"] = json.loads(event.arguments)
    return data


def to_jsonl(event: AuditEvent) -> str:
    return json.dumps(event_dict(event), ensure_ascii=False) + "\n"


def csv_header() -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(EXPORT_FIELDS)
    return buffer.getvalue()


def to_csv(event: AuditEvent) -> str:
    data = event_dict(event)
    data["arguments"] = json.dumps(data["arguments"], ensure_ascii=False)
    buffer = io.StringIO()
    csv.writer(buffer).writerow([data[name] for name in EXPORT_FIELDS])
    return buffer.getvalue()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
