"""Every database table, in one module so that no two domains import each other for a model.

Times are stored as timezone-aware UTC (SQLModel is pinned so that this holds on SQLite too).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC now; the default clock of the service."""
    return datetime.now(UTC)


class Grant(SQLModel, table=True):
    """An agent's credential: a name and the sha256 of its bearer token (the token itself is never kept)."""

    __tablename__ = "grants"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    token_sha256: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class AuditEvent(SQLModel, table=True):
    """One tools/call as it passed the gateway: who, what, which rule, and how it ended."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_ts", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    grant: str = Field(max_length=200, index=True)
    server: str = Field(max_length=200, index=True)
    tool: str = Field(max_length=200, index=True)
    arguments: str = Field(sa_column=Column(Text, nullable=False), description="redacted JSON")
    args_sha256: str = Field(max_length=64)
    verdict: str = Field(max_length=32, index=True)
    rule: str | None = Field(default=None, max_length=300)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    outcome: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, sa_column=Column(Text))
    duration_ms: float | None = None
    decision_id: str | None = Field(default=None, max_length=64, index=True)


class RateCounter(SQLModel, table=True):
    """Calls counted in one fixed window of one limit; consumed by an atomic conditional upsert."""

    __tablename__ = "rate_counters"
    __table_args__ = (UniqueConstraint("counter", "scope_key", "window_start"),)

    id: int | None = Field(default=None, primary_key=True)
    counter: str = Field(max_length=200)
    scope_key: str = Field(max_length=200)
    window_start: int = Field(sa_column=Column(BigInteger, nullable=False))  # unix seconds
    window_seconds: int
    count: int = 0
