"""The key of the arguments digest (`service.policy.redaction.args_digest`): one per deployment.

The digest must be equal for equal calls on every replica and across restarts (a retry joins its
pending decision by it; the audit and the decision pages are compared by it), so a per-process
random key will not do. With `HOLDGATE_SECRET_KEY` set, the key is derived from it (HMAC with a
label of its own, so it is never the key that signs sessions and links). Without it, the first
process to need one generates 32 random bytes and stores them in `service_keys`; every later
process, and every replica, reads that row. Changing `HOLDGATE_SECRET_KEY` (or setting it later)
changes every digest from then on: a retry no longer joins a decision opened before the change.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from typing import Any

from pydantic import SecretStr
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.models import ServiceKey
from service.policy.redaction import args_digest

KEY_NAME = "args_digest"
DERIVATION_LABEL = b"holdgate arguments digest v1"


class ArgsDigester:
    """Computes `args_digest` under the deployment's key, loading the key once, when first needed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], secret_key: SecretStr | None = None) -> None:
        self._sessions = sessions
        self._key: bytes | None = (
            hmac.new(secret_key.get_secret_value().encode(), DERIVATION_LABEL, hashlib.sha256).digest()
            if secret_key is not None
            else None
        )
        self._loading = asyncio.Lock()

    async def digest(self, args: Any) -> str:
        """The keyed digest of a call's (unredacted) arguments."""
        return args_digest(await self.key(), args)

    async def key(self) -> bytes:
        if self._key is None:
            async with self._loading:
                if self._key is None:
                    self._key = await stored_key(self._sessions)
        return self._key


async def stored_key(sessions: async_sessionmaker[AsyncSession]) -> bytes:
    """The key in `service_keys`, made now if no process made it before (the first insert wins a race)."""
    async with sessions() as session:
        row = await session.get(ServiceKey, KEY_NAME)
        if row is not None:
            return bytes.fromhex(row.secret)
        session.add(ServiceKey(name=KEY_NAME, secret=secrets.token_hex(32)))
        try:
            await session.commit()
        except IntegrityError:  # another replica stored one first: use that
            await session.rollback()
    async with sessions() as session:
        row = await session.get(ServiceKey, KEY_NAME)
        assert row is not None
        return bytes.fromhex(row.secret)
