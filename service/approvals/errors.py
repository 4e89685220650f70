"""Why a vote or a lookup of a decision is refused: one exception tree, each with its HTTP status.

Every entry point (REST, dashboard, CLI, each channel) catches `ApprovalError` and shows `message` to the
person who acted; the REST API answers `status_code`. The tree:

    ApprovalError (400)          not due yet (a timer that fired early), and the base of:
    ├── UnknownDecision (404)    no decision with that id
    ├── AlreadyDecided (409)     it ended: "already decided: approved by alice"
    ├── AlreadyVoted (409)       this approver has voted on it already
    ├── NotAllowed (403)         not an approver of it, or the call's own grant
    ├── ReasonRequired (422)     a deny without a reason
    └── EditRefused (422)        changed arguments the decision cannot be approved with (not editable, not an
                                 object, too large, or the edited call would not land on this rule or on allow)
"""

from __future__ import annotations

from service.models import Decision


class ApprovalError(Exception):
    """A vote or lookup that cannot be honoured; `status_code` is what the REST API answers."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownDecision(ApprovalError):
    status_code = 404


class AlreadyDecided(ApprovalError):
    """The decision has ended; `decision` is the row as it ended, for a channel that shows the ending."""

    status_code = 409

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        by = f" by {decision.decided_by}" if decision.decided_by else ""
        super().__init__(f"already decided: {decision.status}{by}")


class AlreadyVoted(ApprovalError):
    status_code = 409


class NotAllowed(ApprovalError):
    """Not an approver of this decision, or the agent's own grant voting on its own call."""

    status_code = 403


class ReasonRequired(ApprovalError):
    status_code = 422


class EditRefused(ApprovalError):
    """An approval with changed arguments that cannot be given; nothing changed (`service.approvals.edits`)."""

    status_code = 422
