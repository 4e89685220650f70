"""`DecisionView`: a decision as people see it — in the REST API, the CLI and every channel.

One shape for all of them, built from the rows by `DecisionView.of`; times are ISO 8601 UTC strings.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from service.approvals.service import iso
from service.models import Decision, Vote


class VoteView(BaseModel):
    approver: str
    value: str
    via: str
    reason: str | None = None
    at: str


class ExecutionView(BaseModel):
    outcome: str
    detail: str | None = None
    duration_ms: float | None = None


class ApproverView(BaseModel):
    name: str
    slack_ids: list[str] = []
    emails: list[str] = []


class DecisionView(BaseModel):
    """A held call and where its decision stands."""

    id: str
    status: str = Field(description="pending | approved | denied | expired | cancelled")
    server: str
    tool: str
    grant: str
    arguments: dict[str, Any] = Field(description="as the policy's redaction leaves them")
    args_sha256: str
    policy_version: str
    rule: str
    rule_reason: str | None = None
    approvers: list[str]
    approver_details: list[ApproverView] = Field(description="how each approver is reached (channels use it)")
    quorum: int
    channels: list[str]
    slack_channel: str | None = None
    on_timeout: str
    created_at: str
    expires_at: str
    decided_at: str | None = None
    decided_by: str | None = None
    decided_via: str | None = None
    reason: str | None = Field(default=None, description="the approver's reason, or why it timed out")
    released: bool = Field(description="an approved call was handed to the upstream")
    execution: ExecutionView | None = None
    votes: list[VoteView] = []

    @classmethod
    def of(cls, decision: Decision, votes: list[Vote] | None = None) -> DecisionView:
        return cls(
            id=decision.id,
            status=decision.status,
            server=decision.server,
            tool=decision.tool,
            grant=decision.grant,
            arguments=json.loads(decision.arguments),
            args_sha256=decision.args_sha256,
            policy_version=decision.policy_version,
            rule=decision.rule,
            rule_reason=decision.reason,
            approvers=[a["name"] for a in json.loads(decision.approvers)],
            approver_details=[ApproverView(**a) for a in json.loads(decision.approvers)],
            quorum=decision.quorum,
            channels=[c for c in decision.channels.split(",") if c],
            slack_channel=decision.slack_channel,
            on_timeout=decision.on_timeout,
            created_at=iso(decision.created_at),
            expires_at=iso(decision.expires_at),
            decided_at=iso(decision.decided_at) if decision.decided_at is not None else None,
            decided_by=decision.decided_by,
            decided_via=decision.decided_via,
            reason=decision.decision_reason,
            released=decision.status == "approved" and decision.claimed_at is not None,
            execution=(
                ExecutionView(
                    outcome=decision.outcome, detail=decision.outcome_detail, duration_ms=decision.duration_ms
                )
                if decision.outcome
                else None
            ),
            votes=[
                VoteView(approver=v.approver, value=v.value, via=v.via, reason=v.reason, at=iso(v.at))
                for v in votes or []
            ],
        )


class DecisionPage(BaseModel):
    items: list[DecisionView]
    total: int
    limit: int
    offset: int


class VoteRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


class VoteResponse(BaseModel):
    decided: bool
    message: str
    decision: DecisionView
