"""The audit trail's hash chain: every record holds the hash of the one before it, and its own.

Owns the canonical form a record is hashed in (`record_hash`), appending a batch under the chain
lock (`append`), checking a chain from the database or from a JSON Lines export (`ChainVerifier`,
`verify`, `verify_export`), and retention (`prune`). It refuses to decide *what* is recorded: that
is `service.audit.service`.

The chain lock is the single `audit_chain` row, taken by an `UPDATE` before anything is read: on
PostgreSQL that is a row lock held to commit, so replicas append one batch after another; on
SQLite it takes the database's write lock. Ids come from the insert that follows the lock, so the
chain's order is the id order.

    row N:   hash_N = sha256("holdgate-audit-v1\\n" + canonical JSON of row N's fields + prev_hash_N)
    row N+1: prev_hash_{N+1} = hash_N

An edited row no longer matches its own hash; a deleted row leaves the next one linking to a hash
that its new predecessor does not have; a deleted tail no longer reaches the head row's `last_*`.
Retention deletes the oldest records and keeps the hash of the last one deleted as the anchor the
first kept record must link to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.models import AuditChainHead, AuditEvent

GENESIS = "0" * 64
"""What the first record of a chain links to."""
CHAIN = "audit"
HASH_PREFIX = b"holdgate-audit-v1\n"
HASHED_FIELDS = (
    "ts", "grant", "server", "tool", "arguments", "args_sha256", "verdict", "rule", "reason",
    "outcome", "detail", "duration_ms", "decision_id", "prev_hash",
)  # fmt: skip
"""Every field of a record but its id and its own hash (and the optional ones below)."""
OPTIONAL_HASHED_FIELDS = ("shadow_verdict", "shadow_rule", "standing_id")
"""Fields added later: hashed only when set, so the records written before them keep their hashes."""


def canonical_ts(value: datetime | str) -> str:
    """A time as UTC ISO 8601 to the microsecond, whatever the driver or the export gave."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(fields: Mapping[str, Any]) -> str:
    """The hash of one record, from its row values or its exported form (`arguments` as text or parsed)."""
    payload = {name: fields.get(name) for name in HASHED_FIELDS}
    payload |= {name: fields[name] for name in OPTIONAL_HASHED_FIELDS if fields.get(name) is not None}
    ts = payload["ts"]
    if ts is None:  # an export line cut short or edited by hand: name the field, not a NoneType error
        raise ValueError("a record without its 'ts' (time) cannot be hashed")
    payload["ts"] = canonical_ts(ts)
    if isinstance(payload["arguments"], str):
        payload["arguments"] = json.loads(payload["arguments"])
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(HASH_PREFIX + text.encode()).hexdigest()


def row_fields(row: AuditEvent) -> dict[str, Any]:
    return {name: getattr(row, name) for name in (*HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS)}


async def lock_head(session: AsyncSession) -> AuditChainHead:
    """Take the chain lock in this transaction and return the head row (created if missing)."""
    touched = cast(
        CursorResult[Any],
        await session.execute(update(AuditChainHead).where(col(AuditChainHead.name) == CHAIN).values(name=CHAIN)),
    )
    if touched.rowcount == 0:  # a schema made without the migrations (which insert the row)
        session.add(AuditChainHead(name=CHAIN, last_hash=GENESIS, anchor_hash=GENESIS))
        await session.flush()
    head = await session.get(AuditChainHead, CHAIN, populate_existing=True)
    assert head is not None
    return head


async def append(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Link `rows` (column values, in this order) to the chain and insert them; the caller commits.

    Three Core statements whatever the batch size: lock-and-read the head, one executemany, move
    the head. The audit writer runs on the event loop that serves the calls, and on SQLite every
    statement is a round trip to aiosqlite's thread; an ORM flush (or an INSERT … RETURNING, which
    SQLite runs row by row to keep the order) cost about 0.3 ms of that loop per record.
    """
    if not rows:
        return
    previous = await _lock_last_hash(session)
    for row in rows:
        row["prev_hash"] = previous
        row["hash"] = previous = record_hash(row)
    await session.execute(insert(_EVENTS), list(rows))
    # Under the chain lock nobody else inserts, and an executemany inserts in list order.
    last_id = select(func.max(_EVENTS.c.id)).scalar_subquery()
    await session.execute(update(_HEAD).where(_HEAD.c.name == CHAIN).values(last_id=last_id, last_hash=previous))


_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_HEAD = AuditChainHead.__table__  # type: ignore[attr-defined]


async def _lock_last_hash(session: AsyncSession) -> str:
    """Take the chain lock and read the head's hash in one statement (`lock_head` when the row is missing)."""
    locked = update(_HEAD).where(_HEAD.c.name == CHAIN).values(name=CHAIN).returning(_HEAD.c.last_hash)
    last_hash = (await session.execute(locked)).scalar_one_or_none()
    return last_hash if last_hash is not None else (await lock_head(session)).last_hash


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """One place where the chain breaks."""

    kind: str  # edited | deleted | relinked | unhashed | truncated
    row_id: int | None
    message: str


@dataclass
class ChainReport:
    """What a verification found; `ok` when the chain is whole."""

    checked: int = 0
    legacy: int = 0
    first_id: int | None = None
    last_id: int | None = None
    anchor_id: int | None = None
    anchor_hash: str = GENESIS
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        start = "the genesis hash" if self.anchor_hash == GENESIS else f"anchor {self.anchor_hash[:16]}…"
        if self.anchor_id is not None:
            start += f" (last record pruned by retention: id {self.anchor_id})"
        span = f"ids {self.first_id}..{self.last_id}" if self.first_id is not None else "no records"
        lines = [f"{self.checked} chained record(s), {span}, starting from {start}"]
        if self.legacy:
            lines.append(f"{self.legacy} older record(s) carry no hash (written before the chain existed)")
        if self.ok:
            lines.append("ok: the chain is intact")
        else:
            lines.append(f"BROKEN: {len(self.problems)} problem(s)")
            lines.extend(f"  - {p.message}" for p in self.problems)
        return "\n".join(lines)


class ChainVerifier:
    """Checks records fed in id order; `finish` adds what the head row says about the tail."""

    def __init__(self, *, anchor_id: int | None = None, anchor_hash: str | None = GENESIS) -> None:
        self.report = ChainReport(anchor_id=anchor_id, anchor_hash=anchor_hash or GENESIS)
        self._expected = anchor_hash  # None: take the first record's link as given (an export)
        self._previous_id = anchor_id
        self._started = False

    def feed(self, row_id: int, fields: Mapping[str, Any], stored_hash: str | None) -> None:
        report = self.report
        if stored_hash is None:
            if self._started:
                report.problems.append(
                    ChainProblem("unhashed", row_id, f"row {row_id} carries no hash: it was not written by the chain")
                )
            else:
                report.legacy += 1
            return
        if not self._started:
            self._started = True
            report.first_id = row_id
            if self._expected is None:
                self._expected = fields.get("prev_hash")
                report.anchor_hash = self._expected or GENESIS
        report.checked += 1
        report.last_id = row_id
        if record_hash(fields) != stored_hash:
            report.problems.append(
                ChainProblem("edited", row_id, f"row {row_id} was edited: its fields no longer match its hash")
            )
        if fields.get("prev_hash") != self._expected:
            report.problems.append(self._link_problem(row_id))
        self._expected = stored_hash
        self._previous_id = row_id

    def _link_problem(self, row_id: int) -> ChainProblem:
        before = self._previous_id
        if before is None:
            start = "the genesis hash" if self.report.anchor_hash == GENESIS else "the retention anchor"
            return ChainProblem("deleted", row_id, f"row(s) deleted before id {row_id}: it does not link to {start}")
        if row_id - before > 1:
            anchor = " (the last record pruned by retention)" if before == self.report.anchor_id else ""
            return ChainProblem(
                "deleted",
                row_id,
                f"row(s) deleted between id {before} and id {row_id}: "
                f"row {row_id} links to a hash that row {before}{anchor} does not have",
            )
        return ChainProblem(
            "relinked",
            row_id,
            f"chain broken between id {before} and id {row_id}: row {row_id} does not link to row {before}'s hash "
            f"(row {before} was rewritten with a new hash, or replaced)",
        )

    def finish(self, *, head_id: int | None = None, head_hash: str | None = None) -> ChainReport:
        """Close the check; with the head row's values, a deleted tail is caught too."""
        if head_hash is not None and self._expected != head_hash:
            after = self._previous_id
            where = f"after id {after}" if after is not None else "at the end of the chain"
            self.report.problems.append(
                ChainProblem(
                    "truncated",
                    after,
                    f"row(s) deleted {where}: the chain head records id {head_id} as the newest record",
                )
            )
        return self.report


async def verify(session: AsyncSession, *, batch: int = 1000) -> ChainReport:
    """Check the whole chain in the database, in one consistent snapshot."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    head = await session.get(AuditChainHead, CHAIN)
    verifier = (
        ChainVerifier(anchor_id=head.anchor_id, anchor_hash=head.anchor_hash) if head is not None else ChainVerifier()
    )
    last_id = 0
    while True:
        rows = list(
            (
                await session.execute(
                    select(AuditEvent).where(col(AuditEvent.id) > last_id).order_by(col(AuditEvent.id)).limit(batch)
                )
            ).scalars()
        )
        if not rows:
            break
        for row in rows:
            verifier.feed(row.id or 0, row_fields(row), row.hash)
        last_id = rows[-1].id or last_id
        session.expunge_all()
    if head is None:
        return verifier.finish()
    return verifier.finish(head_id=head.last_id, head_hash=head.last_hash)


def verify_export(lines: Iterable[str]) -> ChainReport:
    """Check a JSON Lines export (`holdgate audit --format jsonl`): every record links to the one before.

    An export has no head row, so its first record's link is taken as the anchor (the record before
    the export, or the retention anchor) and a cut-off tail cannot be told from a shorter export.
    """
    verifier = ChainVerifier(anchor_hash=None)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not JSON: {exc.msg}") from None
        try:
            verifier.feed(int(record["id"]), record, record.get("hash"))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return verifier.finish()


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: int
    anchor_id: int | None


async def prune(session: AsyncSession, *, before: datetime, now: datetime) -> PruneResult:
    """Delete the oldest records, up to the first one at or after `before`; keep the chain verifiable.

    Only a prefix of the chain is deleted (a record written late for a call that began early is kept
    with the ones after it), and the hash of the last record deleted becomes the anchor.
    """
    head = await lock_head(session)
    boundary = await session.scalar(select(func.min(col(AuditEvent.id))).where(col(AuditEvent.ts) >= before))
    query = select(col(AuditEvent.id), col(AuditEvent.hash)).order_by(col(AuditEvent.id).desc()).limit(1)
    if boundary is not None:
        query = query.where(col(AuditEvent.id) < boundary)
    last = (await session.execute(query)).first()
    if last is None:
        return PruneResult(0, head.anchor_id)
    result = cast(CursorResult[Any], await session.execute(delete(AuditEvent).where(col(AuditEvent.id) <= last.id)))
    if last.hash is not None:
        head.anchor_id, head.anchor_hash = last.id, last.hash
    head.pruned_rows += result.rowcount
    head.pruned_at = now
    return PruneResult(result.rowcount, head.anchor_id)
