"""The hand-over: an ending decided in this process, for a call waiting in this process, reaches that call from
memory instead of through one more database transaction.

When a vote, a timer or a sweep ends a decision that a call here waits on (the bus counts them), the deciding
compare-and-set also claims the ending for that call (`ApprovalService.transition_many`: `claimed_at`, this
process's lease). The transition then `expect`s the hand-over: its commit has not happened yet. After the commit
the service `committed`s it, and the first waiter to `take` it gets the row — a transaction saved per release,
which is most of the cost of approving thousands of held calls at once.

Only memory: nothing here is the truth. A waiter woken before the commit (by NOTIFY or the poll) waits a little
for it (`HANDOFF_WAIT_S`), then reads the database like everyone else; an ending claimed for a call that went
away is given back (`give_back_later`), so the same call coming again collects it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from service.models import Decision

logger = logging.getLogger(__name__)

HANDOFF_WAIT_S = 5.0
"""How long a call woken before the deciding transaction reported its commit waits for its hand-over."""


class Handoff:
    """Endings claimed in a deciding transaction for a call waiting here, until that call takes them."""

    def __init__(self, *, waiting: Callable[[str], int], give_back_later: Callable[[str], None]) -> None:
        self._waiting = waiting
        """How many calls in this process wait on a decision (the bus)."""
        self._give_back_later = give_back_later
        """Unclaims an ending nobody here will take (`ApprovalService.give_back_ending_later`)."""
        self._handed: dict[str, Decision] = {}
        self._committing: dict[str, asyncio.Future[None]] = {}
        """Endings claimed for a call here whose transaction has not reported its commit yet."""

    def expect(self, decision_id: str) -> None:
        """The transaction being written claims `decision_id`'s ending for a call here; it commits later."""
        self._committing.setdefault(decision_id, asyncio.get_running_loop().create_future())

    def committed(self, decision: Decision) -> None:
        """After the commit of a change of `decision`: keep an expected ending for its call, or give it back when
        its last waiter went away meanwhile."""
        committing = self._committing.pop(decision.id, None)
        if committing is None:
            return
        if self._waiting(decision.id):
            self._handed[decision.id] = decision
        else:
            _log_unwaited(decision.id)
            self._give_back_later(decision.id)
        if not committing.done():
            committing.set_result(None)

    async def take(self, decision_id: str) -> Decision | None:
        """The ending handed over for `decision_id`, once; None if there is none (then the database decides).

        A waiter that woke before the deciding transaction reported its commit waits up to `HANDOFF_WAIT_S` for
        it; an expectation whose transaction rolled back is dropped.
        """
        handed = self._handed.pop(decision_id, None)
        if handed is not None:
            return handed
        committing = self._committing.get(decision_id)
        if committing is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(committing), HANDOFF_WAIT_S)
        handed = self._handed.pop(decision_id, None)
        if handed is None and self._committing.get(decision_id) is committing:
            del self._committing[decision_id]  # rolled back: the database decides
        return handed

    def forget(self, decision_id: str) -> None:
        """The last call waiting on `decision_id` went away: an ending handed over for it is given back."""
        if self._handed.pop(decision_id, None) is not None:
            _log_unwaited(decision_id)
            self._give_back_later(decision_id)


def _log_unwaited(decision_id: str) -> None:
    logger.info("decision %s ended as its last waiting call went away; it waits for the call again", decision_id)
