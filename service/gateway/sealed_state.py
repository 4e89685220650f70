"""The `requestState` of the `client` approval channel's 2026-07-28 rounds: sealed, bound, short-lived, spent once.

A 2026-07-28 request has no back channel, so asking the person at the client is a multi round-trip request: the
held `tools/call` is answered with an `InputRequiredResult` whose `requestState` names the decision, and the
client's retry brings the person's answer with that state echoed. The specification makes the state
attacker-controlled input: integrity-protected, bound to the principal, the originating request and a short
expiry, and single use enforced by the server. This module owns that, and nothing about what the state means:

- sealing is the SDK's `RequestStateBoundary` (AES-256-GCM, binding the method, the tool, a digest of the
  arguments, an audience and the principal; every bad token gets -32602 "Invalid or expired requestState", the
  reason only in the log). It is a server middleware, and holdgate's low-level `Server` takes it as is
  (`ServerProxy._build_server` puts it first). The key is derived from `HOLDGATE_SECRET_KEY` (so every replica
  opens every other's state); without one, a key of this process (a retry to another replica, or after a restart,
  is refused and the call simply asks again);
- the principal is the grant and the person its credentials say it acts for (`service.gateway.proxy.state_principal`);
- the audience is the proxy's server name: state minted for one upstream's tools opens for no other;
- `ClientState` is the plaintext inside (decision id, grant, how the person was asked, a random id);
- `SpentStates` makes each state single use across replicas: the retry that spends it inserts its id into
  `spent_request_states`, and a second one finds it there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp import MCPError
from mcp.server import ServerRequestContext
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp_types import INVALID_PARAMS
from pydantic import SecretStr
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from service.db import session_scope
from service.models import SpentRequestState

STATE_TTL_S = 600.0
"""How long a person has to answer the client's question before the retry's state is refused (-32602); the same
call again simply asks again. The SDK's default; the decision itself waits its own timeout."""
SPENT_KEEP_S = STATE_TTL_S + 120.0
"""How long a spent id is kept: past the state's expiry (plus the seal's allowance for clock skew), by then the seal
refuses it anyway."""
KEY_LABEL = b"holdgate/request-state/v1"
INVALID_STATE = "Invalid or expired requestState"
"""The one wording for every refused state (the SDK's own): a client learns nothing of why."""

Principal = Callable[[ServerRequestContext[Any, Any]], str | None]


def state_security(secret_key: SecretStr | None, principal: Principal) -> RequestStateSecurity:
    """The sealing policy: a key derived from the service's secret (a subkey, not the secret itself, which also signs
    sign-ins and email links), or one of this process; bound to `principal`."""
    if secret_key is None:
        key = secrets.token_bytes(32)
    else:
        key = hmac.new(secret_key.get_secret_value().encode(), KEY_LABEL, hashlib.sha256).digest()
    return RequestStateSecurity(keys=[key], ttl=STATE_TTL_S, bind_principal=principal)


def state_boundary(security: RequestStateSecurity, audience: str) -> RequestStateBoundary:
    """The middleware that seals each `InputRequiredResult`'s state and opens (or refuses, -32602) each echo."""
    return RequestStateBoundary(security, default_audience=audience)


@dataclass(frozen=True, slots=True)
class ClientState:
    """What a `client` round's `requestState` says, once the boundary has opened it."""

    decision_id: str
    grant: str
    mode: str
    """How the person was asked: `form` (Approve / Deny, reason) or `url` (the decision page)."""
    id: str
    """Random: what `SpentStates` records, so the state is spent once."""

    @classmethod
    def new(cls, decision_id: str, grant: str, mode: str) -> ClientState:
        return cls(decision_id, grant, mode, secrets.token_urlsafe(24))

    def plaintext(self) -> str:
        return json.dumps({"d": self.decision_id, "g": self.grant, "m": self.mode, "i": self.id}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: object) -> ClientState:
        """The state the boundary opened; it was minted here, so anything else is refused like a forgery."""
        try:
            fields = json.loads(text) if isinstance(text, str) else {}
            state = cls(fields["d"], fields["g"], fields["m"], fields["i"])
        except (ValueError, TypeError, KeyError):
            raise invalid_state() from None
        if not all(isinstance(value, str) and value for value in (state.decision_id, state.grant, state.id)):
            raise invalid_state()
        if state.mode not in ("form", "url"):
            raise invalid_state()
        return state


def invalid_state() -> MCPError:
    """-32602, as the SDK's boundary answers a state it cannot open."""
    return MCPError(code=INVALID_PARAMS, message=INVALID_STATE, data={"reason": "invalid_request_state"})


class SpentStates:
    """Single use of sealed states, across replicas: a state's id is inserted once; a second insert fails."""

    def __init__(self, sessions: Any, clock: Callable[[], float]) -> None:
        self.sessions = sessions
        self.clock = clock

    async def spent(self, state_id: str) -> bool:
        """Whether `state_id` was spent already (and has not expired)."""
        async with self.sessions() as session:
            row = await session.get(SpentRequestState, state_id)
        return row is not None and row.expires_at >= self.clock()

    async def spend(self, state_id: str) -> bool:
        """Record `state_id` as spent; False if it already was (a replay). Expired ids are dropped on the way."""
        now = self.clock()
        try:
            async with session_scope(self.sessions) as session:
                await session.execute(delete(SpentRequestState).where(col(SpentRequestState.expires_at) < now))
                await session.execute(insert(SpentRequestState).values(id=state_id, expires_at=now + SPENT_KEEP_S))
        except IntegrityError:
            return False
        return True
