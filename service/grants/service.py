"""Create, list, revoke and resolve grants.

A token is shown once, at creation; the database keeps its sha256 only. Resolving a token
on every MCP request would be a database round trip per call, so `GrantResolver` keeps a
short-lived in-memory map (revocations take effect within its TTL).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from service.models import Grant, utcnow

TOKEN_PREFIX = "hg_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")
ANONYMOUS_DEV_GRANT = "anonymous-dev"


class GrantError(ValueError):
    """A grant cannot be created or changed as asked."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_grant(session: AsyncSession, *, name: str) -> tuple[Grant, str]:
    """A new grant and its token (returned once, never stored)."""
    if not NAME_PATTERN.match(name):
        raise GrantError(f"grant name {name!r} must match {NAME_PATTERN.pattern}")
    if name == ANONYMOUS_DEV_GRANT:
        raise GrantError(f"{ANONYMOUS_DEV_GRANT!r} is reserved")
    existing = await session.execute(select(Grant).where(col(Grant.name) == name))
    if existing.scalar_one_or_none() is not None:
        raise GrantError(f"grant {name!r} already exists")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    grant = Grant(name=name, token_sha256=token_sha256(token))
    session.add(grant)
    await session.flush()
    return grant, token


async def list_grants(session: AsyncSession) -> list[Grant]:
    return list((await session.execute(select(Grant).order_by(col(Grant.name)))).scalars())


async def revoke_grant(session: AsyncSession, *, name: str) -> bool:
    # An UPDATE without RETURNING gives a CursorResult (with `rowcount`); Session.execute is typed for
    # every statement, so SQLAlchemy's own advice is this cast (its 2.0.44 changelog).
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(Grant).where(col(Grant.name) == name, col(Grant.revoked_at).is_(None)).values(revoked_at=utcnow())
        ),
    )
    return result.rowcount == 1


class GrantResolver:
    """Token -> grant name, cached for `ttl` seconds (hits and misses alike)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def resolve(self, token: str) -> str | None:
        digest = token_sha256(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._sessions() as session:
            row = await session.execute(
                select(col(Grant.name)).where(col(Grant.token_sha256) == digest, col(Grant.revoked_at).is_(None))
            )
            name = row.scalar_one_or_none()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (name, now + self._ttl)
        return name
