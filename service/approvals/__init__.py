"""The approvals domain: decisions on held calls, the votes that end them, and the release of the one call
an approval is for.

Outside code (the gateway, the REST API, the dashboard, the CLI, the channels) imports these names from here,
not from the modules inside; `service.approvals.service` explains how `ApprovalService` is put together.
"""

import typing as _typing

from service.approvals.approvers import ApproverRecord, approver_json, approvers_of
from service.approvals.edits import MAX_EDIT_BYTES, describe_changes
from service.approvals.errors import (
    AlreadyDecided,
    AlreadyVoted,
    ApprovalError,
    EditRefused,
    NotAllowed,
    ReasonRequired,
    UnknownDecision,
)
from service.approvals.queries import DecisionQuery, decision_conditions, decision_page
from service.approvals.release import FINISHED, RESULT_LIMIT_BYTES, Reconciled
from service.approvals.schemas import DecisionView, RevokeRequest, StandingPage, StandingView
from service.approvals.service import ApprovalService
from service.approvals.standing import (
    SCOPE_WORDS,
    StandingEnded,
    StandingNotAllowed,
    StandingQuery,
    StandingTerms,
    UnknownStanding,
    standing_state,
)
from service.approvals.states import ENDINGS, LAPSED, PENDING, STATUSES, UNKNOWN, Status
from service.approvals.timestamps import iso
from service.approvals.votes import LOCAL_OPERATOR, VoteOutcome, Voter, VoteResult, VoteValue
from service.lazy import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from service.approvals.holding import CallHolding
    from service.approvals.outbox import was_sent

_LAZY = {"CallHolding": "service.approvals.holding", "was_sent": "service.approvals.outbox"}
"""Imported on first use (PEP 562): holding a call brings the policy's limits and CEL, the outbox the channels;
the CLI's votes and lists need neither (tests/test_cli_imports.py pins it)."""


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)


__all__ = [
    "ENDINGS",
    "FINISHED",
    "LAPSED",
    "LOCAL_OPERATOR",
    "MAX_EDIT_BYTES",
    "PENDING",
    "RESULT_LIMIT_BYTES",
    "SCOPE_WORDS",
    "STATUSES",
    "UNKNOWN",
    "AlreadyDecided",
    "AlreadyVoted",
    "ApprovalError",
    "ApprovalService",
    "ApproverRecord",
    "CallHolding",
    "DecisionQuery",
    "DecisionView",
    "EditRefused",
    "NotAllowed",
    "ReasonRequired",
    "Reconciled",
    "RevokeRequest",
    "StandingEnded",
    "StandingNotAllowed",
    "StandingPage",
    "StandingQuery",
    "StandingTerms",
    "StandingView",
    "Status",
    "UnknownDecision",
    "UnknownStanding",
    "VoteOutcome",
    "VoteResult",
    "VoteValue",
    "Voter",
    "approver_json",
    "approvers_of",
    "decision_conditions",
    "decision_page",
    "describe_changes",
    "iso",
    "standing_state",
    "was_sent",
]
