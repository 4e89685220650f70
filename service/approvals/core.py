"""What every part of `ApprovalService` shares: the database, the clock, this process's claim-holder name, the
hand-over, and the after-commit notification of listeners.

`ApprovalService` is assembled from one class per concept (`opening`, `states`, `votes`, `endings`, `release`,
`queries`), each a subclass of `DecisionCore` that owns its methods and the state they need; `service.py` puts
them together. The rule they all keep: change a decision in a transaction (`session_scope`), write its
notifications in that same transaction (`service.approvals.notices`), and only after the commit `_notify` —
which hands an ending over to a call waiting here (`Handoff`) and tells the listeners (the bus that wakes held
calls, the timers, the outbox worker).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.approvals.errors import UnknownDecision
from service.approvals.handoff import Handoff
from service.models import Decision

CLAIM_LEASE_S = 15.0
"""How long a claim of an approved call outlives its holder's last renewal (`HOLDGATE_CLAIM_LEASE_S`)."""


def new_holder_id() -> str:
    """A claim holder's name: host, process id and a random part (a process id is reused after a restart)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


logger = logging.getLogger(__name__)


@dataclass
class DecisionCore:
    """Every read and write of decisions, votes and their outbox rows goes through a subclass of this."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Callable[[], float]
    listeners: list[Callable[[Decision], None]] = field(default_factory=list)
    """Called after a commit that changed a decision (status, reminder, execution)."""
    local_waiters: Callable[[str], int] = field(default=lambda _decision_id: 0)
    """How many held calls in this process wait on a decision (the bus): an ending decided here is claimed
    for one of them in the deciding transaction and handed over (`claim`), a transaction saved per release."""
    holder: str = field(default_factory=lambda: new_holder_id())
    """This process's name on the claims it holds: new at every start, so a restarted process does not renew
    the claims of its previous life (they expire and are reconciled like a dead peer's)."""
    lease_s: float = CLAIM_LEASE_S
    audit_event: Callable[[Decision, str, str], None] = field(default=lambda _decision, _verdict, _reason: None)
    """Audits what happens to a decision with no call there to report it: (decision, verdict, reason) — an
    approval that lapsed, a withdrawn wait that ended cancelled, a call whose sender died (outcome unknown)."""
    handoff: Handoff = field(init=False, repr=False)
    """Set by `ApprovalService`, which knows how to give back an ending nobody takes."""

    def __post_init__(self) -> None:
        """Each part sets up its own state here, calling `super().__post_init__()` (cooperative)."""

    async def _load(self, session: AsyncSession, decision_id: str) -> Decision:
        decision = await session.get(Decision, decision_id, populate_existing=True)
        if decision is None:
            raise UnknownDecision(f"no decision {decision_id}")
        return decision

    def _notify(self, decision: Decision) -> None:
        """After the commit of a change of `decision`: the hand-over, then every listener."""
        self.handoff.committed(decision)
        for listener in self.listeners:
            try:
                listener(decision)
            except Exception:  # a listener's bug must not undo a committed decision
                logger.exception("decision listener failed for %s", decision.id)
