"""Audit records: built on the call path, written to the database by a background writer.

`AuditWriter.record()` only appends to an in-memory queue, so no database round trip sits on
a tool call. A background task writes batches; `aclose()` drains what is left, so a clean
shutdown loses nothing. Arguments are redacted and hashed in the writer, not on the call path.
Each batch is linked into the hash chain (`service.audit.chain`) in the transaction that writes
it; with a retention period, the same task prunes the oldest records now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.audit import chain
from service.models import AuditEvent
from service.policy import canonical_sha256, redact_arguments

if TYPE_CHECKING:
    from service.gateway.proxy import ToolCall
    from service.policy import Verdict

logger = logging.getLogger(__name__)

EXPORT_FIELDS = (
    "id", "ts", "grant", "server", "tool", "arguments", "args_sha256", "verdict", "rule", "reason",
    "outcome", "detail", "duration_ms", "decision_id", "prev_hash", "hash",
)  # fmt: skip


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

    @classmethod
    def begin(cls, call: ToolCall, verdict: Verdict, *, ts: float) -> AuditRecord:
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
            reason=reason,
            outcome=outcome,
            detail=detail,
            decision_id=decision_id or self.decision_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def to_row(self) -> dict[str, Any]:
        """The `audit_events` column values (arguments redacted and hashed here, off the call path)."""
        return dict(
            ts=datetime.fromtimestamp(self.ts, UTC),
            grant=self.grant,
            server=self.server,
            tool=self.tool,
            arguments=json.dumps(redact_arguments(self.arguments, self.redact), ensure_ascii=False),
            args_sha256=self.args_sha256 or canonical_sha256(self.arguments),
            verdict=self.verdict,
            rule=self.rule,
            reason=self.reason,
            outcome=self.outcome,
            detail=(self.detail or "")[:2000] or None,
            duration_ms=self.duration_ms,
            decision_id=self.decision_id,
        )


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
    ) -> None:
        self._sessions = sessions
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

    def record(self, entry: AuditRecord) -> None:
        """Queue one record; never blocks and never touches the database."""
        if self._closed:
            logger.error("audit record after shutdown, dropped: %s/%s", entry.server, entry.tool)
            return
        self._queue.append(entry)
        metrics.count_call(entry.server, entry.verdict, entry.outcome, entry.duration_ms)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

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

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            try:
                await self.flush()
                if self.retention_days is not None and time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + self._prune_interval
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("audit write failed; will retry")
                await asyncio.sleep(1)

    async def _write(self, batch: Sequence[AuditRecord]) -> None:
        try:
            async with self._sessions() as session:
                await chain.append(session, [entry.to_row() for entry in batch])
                await session.commit()
        except BaseException:
            self._queue[:0] = batch  # keep them for the next attempt
            raise


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit events to list or export."""

    grant: str | None = None
    server: str | None = None
    tool: str | None = None
    verdict: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(query, flt: AuditFilter):
    for column, value in (
        (AuditEvent.grant, flt.grant),
        (AuditEvent.server, flt.server),
        (AuditEvent.tool, flt.tool),
        (AuditEvent.verdict, flt.verdict),
    ):
        if value is not None:
            query = query.where(column == value)
    if flt.since is not None:
        query = query.where(AuditEvent.ts >= flt.since)
    if flt.until is not None:
        query = query.where(AuditEvent.ts < flt.until)
    return query


async def list_events(
    session: AsyncSession, *, flt: AuditFilter, limit: int = 100, offset: int = 0
) -> list[AuditEvent]:
    """Newest first."""
    query = _filtered(select(AuditEvent), flt).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
    return list((await session.execute(query)).scalars())


async def iter_events(session: AsyncSession, *, flt: AuditFilter, batch: int = 1000) -> AsyncIterator[AuditEvent]:
    """Oldest first, streamed in batches for export."""
    last_id = 0
    while True:
        query = _filtered(select(AuditEvent), flt).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
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
