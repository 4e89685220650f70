"""`DecisionView`: a decision as people see it — in the REST API, the CLI and every channel.

One shape for all of them, built from the rows by `DecisionView.of`; times are ISO 8601 UTC strings.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from service.approvals.approvers import approver_groups_of, approvers_of
from service.approvals.standing import (
    StandingNotAllowed,
    StandingTerms,
    allowed_scopes,
    standing_state,
)
from service.approvals.states import LAPSED, NOT_RUN, POLICY_CHANGED, POLICY_DENIED
from service.approvals.timestamps import iso
from service.approvals.votes import VoteResult
from service.models import Decision, StandingApproval, Vote


class VoteView(BaseModel):
    approver: str
    value: str
    via: str
    reason: str | None = None
    at: str
    scope: str | None = Field(default=None, description="the standing approval this vote asked for, if any")
    scope_seconds: float | None = None


class ExecutionView(BaseModel):
    outcome: str = Field(
        description="ok | tool_error | upstream_failure | protocol_error | cancelled | unknown (sent by a gateway "
        "process that stopped before the answer: it may have run) | lapsed | policy_denied | policy_changed (the "
        "policy, checked at release, denies the call or asks another rule's approval: not run; `detail` says why)"
    )
    detail: str | None = None
    duration_ms: float | None = None


class EditView(BaseModel):
    """An approval given with changed arguments: what runs instead of the call as the agent sent it."""

    by: str | None = Field(description="who approved with the edit")
    arguments: dict[str, Any] = Field(description="the arguments that run, as the policy's redaction leaves them")
    changes: list[dict[str, Any]] = Field(
        description='each change: {"path", "from", "to"} (no "from": added; no "to": removed), values redacted'
    )


class ApproverView(BaseModel):
    """One approver and their ids by channel (`contacts`), which each channel reads for its own name.

    The REST body keeps its first shape, `{"name", "slack_ids", "emails"}` (derived from the contacts; the
    contacts themselves are not in the body), and both that shape and `{"name", "contacts"}` are read.
    """

    name: str
    contacts: dict[str, list[str]] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _slack_ids_and_emails(cls, data: Any) -> Any:
        """The first shape's `slack_ids` and `emails` are the contacts on those two channels."""
        if isinstance(data, dict) and ("slack_ids" in data or "emails" in data):
            data = dict(data)
            contacts = {channel: list(ids) for channel, ids in (data.get("contacts") or {}).items()}
            for key, channel in (("slack_ids", "slack"), ("emails", "email")):
                ids = data.pop(key, None) or []
                if ids:
                    contacts[channel] = [*contacts.get(channel, []), *ids]
            data["contacts"] = contacts
        return data

    def ids(self, channel: str) -> list[str]:
        """This approver's ids on `channel` (none: not reachable there)."""
        return list(self.contacts.get(channel, []))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def slack_ids(self) -> list[str]:
        return self.ids("slack")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def emails(self) -> list[str]:
        return self.ids("email")


class ToolChangeView(BaseModel):
    """The tool the call names is not as a person accepted it: what its approvers should know before approving."""

    kind: str = Field(description="changed (since accepted) | new (appeared after its server was first seen)")
    accepted_sha256: str | None = Field(default=None, description="the accepted definition's hash (None: new)")
    current_sha256: str = Field(description="the hash of the definition the upstream presents")
    diff: str = Field(
        description="unified diff of the accepted and the current definition, bounded to 4,000 characters"
    )
    summary: str = Field(description="one sentence saying what changed")


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
    approver_groups: list[str] = Field(
        default_factory=list,
        description="the groups the rule's approvers name; their members at the identity provider may vote too",
    )
    acting_for: str | None = Field(default=None, description="the person the calling agent acts for, when known")
    four_eyes: bool = Field(default=False, description="the person the agent acts for may not approve")
    quorum: int
    channels: list[str]
    slack_channel: str | None = Field(default=None, description="the rule's Slack channel (routing.slack.channel)")
    routing: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        exclude=True,
        description="where each channel posts the request, from the rule, by channel name (read with `route`)",
    )
    on_timeout: str
    created_at: str
    expires_at: str
    decided_at: str | None = None
    decided_by: str | None = None
    decided_via: str | None = None
    reason: str | None = Field(default=None, description="the approver's reason, or why it timed out")
    released: bool = Field(description="an approved call was handed to the upstream")
    execution: ExecutionView | None = None
    previous_attempt: str | None = Field(
        default=None, description="an earlier approved run of this call that may have run (its outcome is unknown)"
    )
    tool_change: ToolChangeView | None = Field(
        default=None, description="the tool's definition changed (or is new) since a person accepted it"
    )
    votes: list[VoteView] = []
    agent_stopped_waiting_at: str | None = Field(
        default=None, description="pending: when the last call waiting on it went away (cancelled, stream closed)"
    )
    rejoin_by: str | None = Field(
        default=None,
        description="pending, the agent cancelled: it ends cancelled then, unless the same call comes again before",
    )
    collect_by: str | None = Field(
        default=None, description="ended: its ending waits until then for the call; an approval not collected lapses"
    )
    lapsed: bool = Field(default=False, description="approved, but no call collected it within claim_within: not run")
    editable: bool = Field(default=False, description="an approver may approve it with changed arguments")
    edit: EditView | None = Field(default=None, description="approved with changed arguments: what runs")
    state: str = Field(default="", description="where the decision stands, in words")
    scopes: dict[str, float] = Field(
        default_factory=dict,
        description="standing approvals its rule lets an approver give: scope (same_args | tool) -> longest seconds",
    )
    standing_id: str | None = Field(default=None, description="the standing approval its quorum gave, if any")

    @model_validator(mode="before")
    @classmethod
    def _slack_channel_is_slack_routing(cls, data: Any) -> Any:
        """`slack_channel` (the REST body's field since the first version) and `routing.slack.channel` are one
        value: given either, the view has both."""
        if not isinstance(data, dict):
            return data
        routing = data.get("routing") or {}
        routed = routing.get("slack", {}).get("channel")
        if data.get("slack_channel") is None and routed:
            return {**data, "slack_channel": routed}
        if data.get("slack_channel") and not routed:
            slack = {**routing.get("slack", {}), "channel": data["slack_channel"]}
            return {**data, "routing": {**routing, "slack": slack}}
        return data

    def may_vote(self, approver: str) -> bool:
        """Whether `approver` may vote at all: never the grant that made the call, nor (four eyes) the person its
        agent acts for. What channels use to leave them out of requests."""
        return approver != self.grant and not (self.four_eyes and approver == self.acting_for)

    def route(self, channel: str) -> dict[str, Any]:
        """Where the rule tells `channel` to post the request (`{"channel": "C0123ABC"}` for Slack); empty: the
        channel's own default."""
        return dict(self.routing.get(channel, {}))

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
            approvers=[a["name"] for a in approvers_of(decision)],
            approver_details=[ApproverView(name=a["name"], contacts=a["contacts"]) for a in approvers_of(decision)],
            approver_groups=approver_groups_of(decision),
            acting_for=decision.acting_for,
            four_eyes=bool(decision.four_eyes),
            quorum=decision.quorum,
            channels=[c for c in decision.channels.split(",") if c],
            routing=json.loads(decision.routing or "{}"),
            on_timeout=decision.on_timeout,
            created_at=iso(decision.created_at),
            expires_at=iso(decision.expires_at),
            decided_at=iso(decision.decided_at) if decision.decided_at is not None else None,
            decided_by=decision.decided_by,
            decided_via=decision.decided_via,
            reason=decision.decision_reason,
            released=decision.status == "approved"
            and decision.claimed_at is not None
            and decision.outcome not in NOT_RUN,
            execution=(
                ExecutionView(
                    outcome=decision.outcome, detail=decision.outcome_detail, duration_ms=decision.duration_ms
                )
                if decision.outcome
                else None
            ),
            previous_attempt=decision.previous_attempt,
            tool_change=_tool_change_view(decision),
            votes=[
                VoteView(
                    approver=v.approver,
                    value=v.value,
                    via=v.via,
                    reason=v.reason,
                    at=iso(v.at),
                    scope=v.scope,
                    scope_seconds=v.scope_seconds,
                )
                for v in votes or []
            ],
            agent_stopped_waiting_at=_iso_or_none(decision.withdrawn_at) if decision.status == "pending" else None,
            rejoin_by=_iso_or_none(decision.rejoin_by) if decision.status == "pending" else None,
            collect_by=_iso_or_none(decision.collect_by) if decision.status != "pending" else None,
            lapsed=decision.outcome == LAPSED,
            editable=decision.editable,
            edit=(
                EditView(
                    by=decision.decided_by,
                    arguments=json.loads(decision.edited_shown or "{}"),
                    changes=json.loads(decision.edit_diff),
                )
                if decision.edit_diff is not None
                else None
            ),
            state=state_of(decision),
            scopes=allowed_scopes(decision),
            standing_id=decision.standing_id,
        )


def _tool_change_view(decision: Decision) -> ToolChangeView | None:
    if not decision.tool_change:
        return None
    change = json.loads(decision.tool_change)
    if change["kind"] == "new":
        summary = f"tool '{decision.tool}' is new on server '{decision.server}': nobody has accepted its definition yet"
    else:
        summary = (
            f"the definition of tool '{decision.tool}' on server '{decision.server}' changed since it was accepted"
        )
    return ToolChangeView(summary=summary, **change)


def state_of(decision: Decision) -> str:
    """A decision's standing in words: its status, and whether an agent still waits or may still collect it."""
    if decision.status == "pending":
        if decision.withdrawn_at is None:
            return "pending"
        if decision.rejoin_by is not None:
            return (
                f"pending; the agent stopped waiting (it cancelled its call): ends cancelled at "
                f"{iso(decision.rejoin_by)} unless the same call comes again"
            )
        return "pending; the agent stopped waiting (its connection closed): an approval waits for the same call again"
    if decision.status == "approved":
        if decision.outcome == LAPSED:
            return f"approved, lapsed: no call collected it by {iso(decision.collect_by or 0)}; it was not run"
        if decision.outcome in (POLICY_DENIED, POLICY_CHANGED):
            return f"approved, not run: at its release {decision.outcome_detail}"
        if decision.claimed_at is None and decision.collect_by is not None:
            return f"approved; waiting for the agent to call again (until {iso(decision.collect_by)})"
    return decision.status


def _iso_or_none(ts: float | None) -> str | None:
    return iso(ts) if ts is not None else None


class DecisionPage(BaseModel):
    items: list[DecisionView]
    total: int
    limit: int
    offset: int


class VoteRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)
    scope: str | None = Field(
        default=None,
        description="approve: give a standing approval instead of a one-off one (same_args | tool), where the rule "
        "allows it (`approval.scopes`); needs `for`",
    )
    for_: str | float | None = Field(
        default=None, alias="for", description="with `scope`: for how long (`30m`, `1h`, seconds), within the rule's"
    )

    def standing(self) -> StandingTerms | None:
        """The standing approval asked for, or None (approve once); StandingNotAllowed when malformed."""
        if self.scope is None:
            if self.for_ is not None:
                raise StandingNotAllowed("`for` goes with a `scope` (same_args or tool)")
            return None
        return StandingTerms.parse(self.scope, self.for_)


class StandingView(BaseModel):
    """A standing approval as people see it (REST, CLI, dashboard)."""

    id: str
    scope: str = Field(description="same_args (later identical calls) | tool (every call of the tool)")
    grant: str
    server: str
    tool: str
    arguments: dict[str, Any] = Field(description="the approved call's, redacted (what same_args covers)")
    args_sha256: str
    rule: str
    decision_id: str = Field(description="the decision whose quorum gave it")
    approved_by: str
    approved_via: str
    created_at: str
    expires_at: str
    revoked_at: str | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    active: bool
    state: str

    @classmethod
    def of(cls, standing: StandingApproval, now: float) -> StandingView:
        return cls(
            id=standing.id,
            scope=standing.scope,
            grant=standing.grant,
            server=standing.server,
            tool=standing.tool,
            arguments=json.loads(standing.arguments),
            args_sha256=standing.args_sha256,
            rule=standing.rule,
            decision_id=standing.decision_id,
            approved_by=standing.approved_by,
            approved_via=standing.approved_via,
            created_at=iso(standing.created_at),
            expires_at=iso(standing.expires_at),
            revoked_at=_iso_or_none(standing.revoked_at),
            revoked_by=standing.revoked_by,
            revoke_reason=standing.revoke_reason,
            active=standing.revoked_at is None and standing.expires_at > now,
            state=standing_state(standing, now),
        )


class StandingPage(BaseModel):
    items: list[StandingView]


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


class ApproveRequest(VoteRequest):
    """An approval; with `arguments` (an editable rule), the call runs with these arguments instead of its own."""

    arguments: Any = Field(
        default=None,
        description='the tool\'s whole new argument object (a value left as shown, e.g. "[redacted]", keeps the '
        "call's own); the edited call must land on this rule's approval or on allow",
    )

    @property
    def edits(self) -> bool:
        """`arguments` was given (even as null, which is refused as not an object)."""
        return "arguments" in self.model_fields_set


class VoteResponse(BaseModel):
    decided: bool
    message: str
    decision: DecisionView


MAX_BULK = 10_000
"""Decisions one bulk vote may name or match; above that the client splits the work."""


class BulkVoteRequest(BaseModel):
    """A bulk vote: the decisions are named (`ids`) or matched by a filter on pending decisions.

    Never "everything" by accident: an empty body is refused; voting on every pending decision
    takes `"all_pending": true` written out.
    """

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, max_length=MAX_BULK, description=f"at most {MAX_BULK:,} ids")
    status: Literal["pending"] | None = Field(default=None, description="implied: only pending decisions are voted on")
    server: str | None = None
    tool: str | None = None
    grant: str | None = None
    all_pending: bool = Field(default=False, description="every pending decision (the oldest first), no filter")
    reason: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _one_target(self) -> BulkVoteRequest:
        filtered = any((self.server, self.tool, self.grant, self.all_pending))
        if self.ids is not None and filtered:
            raise ValueError("give ids or a filter (server, tool, grant, all_pending), not both")
        if not self.ids and not filtered:
            raise ValueError("name the decisions: ids, a filter (server, tool, grant), or all_pending: true")
        return self


class BulkVoteItem(BaseModel):
    id: str
    result: Literal["decided", "recorded", "refused"] = Field(
        description="decided | recorded (the vote counts, the quorum is not reached) | refused (nothing changed)"
    )
    status: str | None = Field(description="the decision's status after this vote; null for an unknown id")
    code: int | None = Field(default=None, description="for a refusal: what the single-decision route answers")
    message: str

    @classmethod
    def of(cls, result: VoteResult) -> BulkVoteItem:
        return cls(
            id=result.decision_id,
            result=result.result,
            status=result.decision.status if result.decision is not None else None,
            code=result.refusal.status_code if result.refusal is not None else None,
            message=result.message,
        )


class BulkVoteResponse(BaseModel):
    matched: int = Field(description="decisions named or matched (duplicates counted once)")
    decided: int
    recorded: int
    refused: int
    more_pending: bool = Field(
        default=False, description=f"a filter matched more than {MAX_BULK:,}: the oldest were voted on; repeat"
    )
    results: list[BulkVoteItem]

    @classmethod
    def of(cls, results: list[VoteResult], *, more_pending: bool = False) -> BulkVoteResponse:
        def count(kind: str) -> int:
            return sum(r.result == kind for r in results)

        return cls(
            matched=len(results),
            decided=count("decided"),
            recorded=count("recorded"),
            refused=count("refused"),
            more_pending=more_pending,
            results=[BulkVoteItem.of(r) for r in results],
        )
