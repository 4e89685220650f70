"""A tools/call as the gateway handles it, and how a held one ended.

Plain data, shared by the proxy (`service.gateway.proxy`), the hold point (`service.gateway.hold`) and
the audit (`AuditRecord.begin`, which reads a call through a protocol of its own, as the approvals'
`HeldCall` does: neither imports the gateway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tools/call as the gateway sees it."""

    grant: str
    server: str
    tool: str
    arguments: dict[str, Any]
    """What the policy, the audit and the approval see (`{}` when the request had none)."""
    acting_for: str | None = None
    """Whom the caller's credentials say the agent acts for (an OAuth token's acting-for claim), as given."""
    arguments_absent: bool = False
    """The request had no `arguments` at all: forwarded without them, as `{}` is forwarded as `{}`.
    Upstreams built on the TypeScript SDK 1.x tell the two apart (one of them is -32602)."""

    @property
    def forwarded_arguments(self) -> dict[str, Any] | None:
        """The arguments exactly as the client sent them."""
        return None if self.arguments_absent else self.arguments


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """How a held call ended: `approved` (run it now) or why not, in words for the agent."""

    decision_id: str
    ending: str  # approved | denied | expired | cancelled | pending | already_released | withdrawn | restarting
    # | replayed | ran | may_have_run | running (a retry of a call already released: `ApprovalGate._earlier_run`)
    # | policy_denied | policy_changed | rate_limited (the release check: `service.approvals.recheck`)
    # | input_required (2026-07-28: the client channel asks the person; `result` is the InputRequiredResult)
    message: str = ""
    result: dict[str, Any] | None = None
    """`replayed`: the stored result of the run this call's approval already had; `input_required`: the answer that
    asks the person at the client (`service.gateway.client_approval`)."""
    arguments: dict[str, Any] | None = None
    """`approved` with an approver's edit: the arguments to run instead of the call's own."""
    redact: tuple[str, ...] = ()
    """`approved` with an edit: the argument paths the policy redacts for the edited call (besides the call's)."""
    edit_note: str | None = None
    """`approved` with an edit: what the agent and the audit are told of it (who, and the changes)."""
    rule: str | None = None
    """`policy_denied` / `policy_changed` / `rate_limited` at release: the rule of the current policy that said so."""
