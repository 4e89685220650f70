"""`ApprovalService`: the approvals domain's one entry point, put together from its parts.

Each part is a module of one concept, and a class that owns its methods:

    states.Transitions   the one compare-and-set that moves a decision out of `pending`
    opening.Opening      open a decision for a held call, or join the one the same call waits on
    votes.Votes          who may vote, the pre-vote check, votes and quorums (one or many at once)
    edits.Edits          approving a held call with changed arguments (an editable rule)
    endings.Endings      timeouts, reminders, waits withdrawn, approvals that lapse
    release.Release      claim the ending for one call, mark it sent, record its outcome, leases, give-backs
    queries.Reads        decisions as they stand: one, a page, their statuses
    standing.Standing    standing approvals: made by a quorum (a base of `Votes`), covering, list, revoke, expiry

They share `core.DecisionCore` (the database, the clock, this process's claim-holder name, the listeners) and
the hand-over (`handoff.Handoff`), which is wired here because it needs both the transition (which claims an
ending for a waiting call) and the release (which gives back an ending nobody took). Callers use this class and
the names `service.approvals` exports, never the parts.
"""

from __future__ import annotations

from service.approvals.edits import Edits
from service.approvals.endings import Endings
from service.approvals.handoff import Handoff
from service.approvals.opening import Opening
from service.approvals.queries import Reads
from service.approvals.release import Release
from service.approvals.votes import Votes


class ApprovalService(Opening, Edits, Votes, Endings, Release, Reads):
    """Every read and write of decisions, votes and their outbox rows."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.handoff = Handoff(
            waiting=lambda decision_id: self.local_waiters(decision_id),
            give_back_later=lambda decision_id: self.give_back_ending_later(decision_id),
        )
