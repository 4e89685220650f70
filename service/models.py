"""Every database table, in one module so that no two domains import each other for a model.

Times are stored as timezone-aware UTC (SQLModel is pinned so that this holds on SQLite too).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint, false
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC now; the default clock of the service."""
    return datetime.now(UTC)


class Grant(SQLModel, table=True):
    """An agent's credential: a name and the sha256 of its bearer token (the token itself is never kept)."""

    __tablename__ = "grants"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    token_sha256: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class AuditEvent(SQLModel, table=True):
    """One tools/call as it passed the gateway: who, what, which rule, and how it ended."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_ts", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    grant: str = Field(max_length=200, index=True)
    server: str = Field(max_length=200, index=True)
    tool: str = Field(max_length=200, index=True)
    arguments: str = Field(sa_column=Column(Text, nullable=False), description="redacted JSON")
    args_sha256: str = Field(max_length=64)
    verdict: str = Field(max_length=32, index=True)
    rule: str | None = Field(default=None, max_length=300)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    outcome: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, sa_column=Column(Text))
    duration_ms: float | None = None
    decision_id: str | None = Field(default=None, max_length=64, index=True)
    standing_id: str | None = Field(
        default=None, max_length=64, index=True, description="the standing approval that let the call through"
    )
    prev_hash: str | None = Field(default=None, max_length=64, description="the previous record's hash")
    hash: str | None = Field(
        default=None, max_length=64, description="sha256 over this record's fields and prev_hash (service.audit.chain)"
    )
    shadow_verdict: str | None = Field(
        default=None,
        max_length=32,
        index=True,
        description="the shadow policy's action where it differs from the enforced one (service.policy.shadow)",
    )
    shadow_rule: str | None = Field(default=None, max_length=300, description="the shadow policy's deciding rule")


class AuditChainHead(SQLModel, table=True):
    """Where the audit hash chain stands: one row, locked by every append and every prune.

    `last_*` is the newest record (so a deleted tail is caught); `anchor_*` is the last record
    removed by retention (the first kept record must link to it), or the genesis hash.
    """

    __tablename__ = "audit_chain"

    name: str = Field(primary_key=True, max_length=32)
    last_id: int | None = None
    last_hash: str = Field(max_length=64)
    anchor_id: int | None = None
    anchor_hash: str = Field(max_length=64)
    pruned_rows: int = 0
    pruned_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ServiceKey(SQLModel, table=True):
    """A key the service made itself, once, shared by every replica and kept across restarts.

    `args_digest` keys the arguments digest when `HOLDGATE_SECRET_KEY` is not set (`service.audit.keys`).
    """

    __tablename__ = "service_keys"

    name: str = Field(primary_key=True, max_length=32)
    secret: str = Field(max_length=128, description="hex")
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class RateCounter(SQLModel, table=True):
    """One sliding-window limit for one scope key (a grant, or `*` for a global limit).

    The times of its last `size` (the limit's `max`) calls sit in a ring in `rate_counter_calls`;
    `next_slot` is the slot holding the oldest of them, the one the next call replaces. The row is also
    the lock that serialises the key's callers (see `service.policy.limits`). `last_at` is the newest
    call's time (pruning keys idle for longer than their window).
    """

    __tablename__ = "rate_counters"

    counter: str = Field(primary_key=True, max_length=200)
    scope_key: str = Field(primary_key=True, max_length=200)
    window_seconds: int
    size: int
    next_slot: int = 0
    last_at: float


class RateCounterCall(SQLModel, table=True):
    """The time (unix seconds) of one call counted by a sliding-window limit: slot `slot` of its key's ring.

    `window_seconds` rides along so that the conditional upsert taking the slot can compare the old time
    with `now - window` from the new row alone (one fixed statement for all of a call's limits)."""

    __tablename__ = "rate_counter_calls"

    counter: str = Field(primary_key=True, max_length=200)
    scope_key: str = Field(primary_key=True, max_length=200)
    slot: int = Field(primary_key=True)
    at: float
    window_seconds: int


class RateAmount(SQLModel, table=True):
    """One call's amount counted by a limit that adds up an amount (`limits[].amount`): when, and how much.

    A key's rows are the calls still inside its window (older ones are deleted as calls come); the key's
    `rate_counters` row is the lock that serialises its callers, as for the limits that count calls."""

    __tablename__ = "rate_amounts"
    __table_args__ = (Index("ix_rate_amounts_key_at", "counter", "scope_key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    counter: str = Field(max_length=200)
    scope_key: str = Field(max_length=200)
    at: float
    amount: float


class Decision(SQLModel, table=True):
    """A held call waiting for (or past) a person's decision; the database is its source of truth.

    Times are unix seconds (floats), so the injected clock, the timers and the compare-and-set
    `expires_at <= now` agree on SQLite and PostgreSQL alike. `status` leaves `pending` once (see
    `service.approvals.states`, `ApprovalService.transition`); `claimed_at` marks the one call that took
    the decision's ending (the release, for an approved decision).
    """

    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_status_expires", "status", "expires_at"),
        Index("ix_decisions_call", "grant", "server", "tool", "args_sha256"),
        Index("ix_decisions_created", "created_at"),
        Index("ix_decisions_collect_by", "status", "collect_by"),  # endings nobody collected in time (lapse)
        Index("ix_decisions_lease", "status", "lease_until"),  # reconciliation of expired claims (leases)
    )

    id: str = Field(primary_key=True, max_length=64)
    server: str = Field(max_length=200)
    tool: str = Field(max_length=200)
    grant: str = Field(max_length=200)
    arguments: str = Field(sa_column=Column(Text, nullable=False), description="redacted JSON, for display")
    args_sha256: str = Field(max_length=64)
    policy_version: str = Field(max_length=64)
    rule: str = Field(max_length=300)
    reason: str | None = Field(default=None, sa_column=Column(Text), description="the rule's reason")
    approvers: str = Field(sa_column=Column(Text, nullable=False), description="JSON list of approvers")
    channels: str = Field(max_length=500, description="comma-separated channel names")
    routing: str = Field(
        default="{}",
        sa_column=Column(Text, nullable=False, server_default="{}"),
        description="JSON: where each channel posts the request, from the rule, by channel name "
        '({"slack": {"channel": "C0123ABC"}} for approval.slack_channel)',
    )
    quorum: int = 1
    on_timeout: str = Field(default="deny", max_length=16)
    created_at: float
    expires_at: float
    remind_at: float | None = None
    reminded_at: float | None = None
    status: str = Field(default="pending", max_length=16)
    decided_at: float | None = None
    decided_by: str | None = Field(default=None, max_length=200)
    decided_via: str | None = Field(default=None, max_length=32)
    decision_reason: str | None = Field(default=None, sa_column=Column(Text))
    claimed_at: float | None = None
    outcome: str | None = Field(default=None, max_length=32)
    outcome_detail: str | None = Field(default=None, sa_column=Column(Text))
    duration_ms: float | None = None
    # Waits that are withdrawn and approvals that lapse (service.gateway.hold): how long, per the rule, an ending
    # waits to be collected (`claim_within`) and a withdrawn wait to be rejoined (`rejoin_within`); the deadline of
    # each (`collect_by` from the ending, renewed when a crash gave the claim back; `rejoin_by` from a client's
    # cancel); when the last waiting call went away.
    claim_within_s: float = 600.0
    rejoin_within_s: float = 120.0
    collect_by: float | None = None
    withdrawn_at: float | None = None
    rejoin_by: float | None = None
    # The release as a lease (service.approvals.leases): which process holds the claim of an approved call and until
    # when, the moment its call left for the upstream ("sending"), and what the run returned, for a retry that lost it.
    claim_holder: str | None = Field(default=None, max_length=64)
    lease_until: float | None = None
    sending_at: float | None = None
    outcome_at: float | None = None
    result: str | None = Field(default=None, sa_column=Column(Text), description="the run's result JSON, bounded")
    previous_attempt: str | None = Field(default=None, max_length=64, description="an earlier run that may have run")
    # Who the calling agent acts for (the grant's `acting_for`, an OAuth token's claim, or a person named like the
    # grant), and whether that person's vote is refused (`four_eyes`, always for the name match); the groups the
    # rule's approvers name, whose members at the identity provider may vote too.
    acting_for: str | None = Field(default=None, max_length=200)
    four_eyes: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    approver_groups: str = Field(
        default="[]",
        sa_column=Column(Text, nullable=False, server_default="[]"),
        description="JSON list of group names (`group:ops` -> ops)",
    )
    tool_change: str | None = Field(
        default=None,
        sa_column=Column(Text),
        description="JSON: the tool's definition changed (or is new) since a person accepted it "
        "({kind, accepted_sha256, current_sha256, diff}, the diff bounded); None for a tool as accepted",
    )
    scopes: str = Field(
        default="{}",
        sa_column=Column(Text, nullable=False, server_default="{}"),
        description='JSON: the standing approvals the rule lets an approver give ({"tool": 1800.0}: scope -> seconds)',
    )
    standing_id: str | None = Field(default=None, max_length=64, description="the standing approval its quorum gave")
    traceparent: str | None = Field(
        default=None,
        max_length=55,
        description="W3C traceparent of the span that opened it (tracing on only): its changes join that trace",
    )
    # Edit before release (service.approvals.edits): whether the rule lets an approver change the arguments, and the
    # approval's edit: the arguments to run (whole, for the releasing process; erased once the run is recorded), the
    # same redacted for display, and the changes (redacted), written in the compare-and-set that approves.
    editable: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    edited_arguments: str | None = Field(
        default=None, sa_column=Column(Text), description="the arguments the approver gave, whole, until the run"
    )
    edited_shown: str | None = Field(default=None, sa_column=Column(Text), description="redacted JSON, for display")
    edit_diff: str | None = Field(default=None, sa_column=Column(Text), description="JSON list of changes, redacted")


class Vote(SQLModel, table=True):
    """One person's approve/deny on a decision; a person counts once, whichever channel they used."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("decision_id", "approver"),)

    id: int | None = Field(default=None, primary_key=True)
    decision_id: str = Field(foreign_key="decisions.id", max_length=64, index=True)
    approver: str = Field(max_length=200)
    value: str = Field(max_length=16)
    via: str = Field(max_length=32)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    at: float
    scope: str | None = Field(
        default=None, max_length=16, description="a standing approval asked for: same_args | tool"
    )
    scope_seconds: float | None = Field(default=None, description="for how long the standing approval was asked")


class StandingApproval(SQLModel, table=True):
    """An approval that covers later calls of one grant for a while (`service.approvals.standing`).

    `scope` `same_args`: calls of `tool` on `server` whose arguments have the keyed digest `args_sha256`;
    `tool`: every call of `tool` on `server` (`args_sha256` is then the first call's, kept for display). Made by
    the quorum of `decision_id`; covers calls while `expires_at` is ahead and `revoked_at` is not set. `ended_at`
    is when its end (revoke or expiry) was audited, once.
    """

    __tablename__ = "standing_approvals"
    __table_args__ = (
        Index("ix_standing_call", "grant", "server", "tool", "expires_at"),  # the call path's one lookup
        Index("ix_standing_unended", "ended_at", "expires_at"),  # the sweep that audits expiries
    )

    id: str = Field(primary_key=True, max_length=64)
    scope: str = Field(max_length=16)
    grant: str = Field(max_length=200)
    server: str = Field(max_length=200)
    tool: str = Field(max_length=200)
    args_sha256: str = Field(max_length=64)
    arguments: str = Field(sa_column=Column(Text, nullable=False), description="redacted JSON, for display")
    rule: str = Field(max_length=300)
    decision_id: str = Field(foreign_key="decisions.id", max_length=64, index=True)
    approved_by: str = Field(max_length=200)
    approved_via: str = Field(max_length=32)
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    revoked_by: str | None = Field(default=None, max_length=200)
    revoke_reason: str | None = Field(default=None, sa_column=Column(Text))
    ended_at: float | None = None


class OutboxMessage(SQLModel, table=True):
    """A notification a channel still has to deliver (request, update, reminder), retried until sent.

    Written in the same transaction as the decision change it announces, so none is lost; a worker
    claims due rows with a lease (`leased_until`), which keeps replicas from sending one twice.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "sent_at", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    decision_id: str = Field(foreign_key="decisions.id", max_length=64, index=True)
    channel: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    created_at: float
    next_attempt_at: float
    attempts: int = 0
    leased_until: float | None = None
    sent_at: float | None = None
    failed_at: float | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    channel_ref: str | None = Field(default=None, sa_column=Column(Text), description="e.g. Slack channel+ts")


class DashboardSignOut(SQLModel, table=True):
    """A dashboard session signed out before its cookie expired: refused on every replica until `expires_at`."""

    __tablename__ = "dashboard_signouts"

    session_id: str = Field(primary_key=True, max_length=64)
    expires_at: float = Field(index=True, description="unix seconds; the row can go once the cookie has expired")


class DashboardSignInFailure(SQLModel, table=True):
    """A refused dashboard sign-in, under each key it counts against (client address, token prefix)."""

    __tablename__ = "dashboard_signin_failures"
    __table_args__ = (Index("ix_dashboard_signin_failures_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=100, description="'address:<ip>' or 'token:<sha256 of the token's prefix>'")
    at: float = Field(index=True)


class ToolServer(SQLModel, table=True):
    """An upstream server whose tools holdgate has recorded: its first complete tools/list was trusted as accepted.

    The row is the "first sight" marker (`service.tooldefs`): inserted once, in the transaction that records the
    server's first tools, so two replicas starting at once cannot both take their listing as the first one.
    """

    __tablename__ = "tool_servers"

    server: str = Field(primary_key=True, max_length=200)
    first_seen_at: float


class ToolDefinition(SQLModel, table=True):
    """One upstream tool's definition: the one a person accepted and the one the upstream presents now.

    Definitions are canonical JSON of {name, title, description, inputSchema, outputSchema, annotations}; a hash is
    sha256 of it. `accepted_sha256 == current_sha256`: as accepted; `accepted_sha256` None: a tool that appeared
    after its server was first seen (new); otherwise changed. Shared by every replica (`service.tooldefs`).
    """

    __tablename__ = "tool_definitions"

    server: str = Field(primary_key=True, max_length=200)
    tool: str = Field(primary_key=True, max_length=200)
    accepted_sha256: str | None = Field(default=None, max_length=64)
    accepted_definition: str | None = Field(default=None, sa_column=Column(Text))
    accepted_at: float | None = None
    accepted_by: str | None = Field(default=None, max_length=200)
    accepted_via: str | None = Field(default=None, max_length=32)
    current_sha256: str = Field(max_length=64)
    current_definition: str = Field(sa_column=Column(Text, nullable=False))
    first_seen_at: float
    changed_at: float = Field(description="when the upstream first presented the current definition")


class HeldTask(SQLModel, table=True):
    """An MCP task (2025-11-25 tasks, or the 2026-07-28 tasks extension) backed by a held call's decision.

    The decision says whether the call may run; this row says what the client asking about the task is told,
    and keeps what it needs to run the call from any replica (the call's arguments, until the task ends) and
    what the run returned (`result`). `status` is the task's own: `working` (waiting on the decision),
    `running` (its approved call was claimed and is being sent; shown as `working`), then `completed`,
    `failed` or `cancelled`, each reached once by compare-and-set (`service.gateway.task_store`).
    """

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_grant_created", "grant", "created_at"),
        Index("ix_tasks_status", "status"),
    )

    id: str = Field(primary_key=True, max_length=64)
    decision_id: str = Field(max_length=64, index=True)
    era: str = Field(max_length=16, description="the protocol revision the task was made in (its wire shapes)")
    grant: str = Field(max_length=200)
    server: str = Field(max_length=200)
    tool: str = Field(max_length=200)
    arguments: str | None = Field(
        default=None,
        sa_column=Column(Text),
        description="the call's own arguments as JSON (`null` JSON: none were sent), kept to run the call once "
        "approved and cleared when the task ends",
    )
    status: str = Field(default="working", max_length=16)
    status_message: str | None = Field(default=None, sa_column=Column(Text))
    result: str | None = Field(
        default=None,
        sa_column=Column(Text),
        description="JSON: the CallToolResult the call would have returned, or a JSON-RPC error object",
    )
    result_is_error: bool = False
    """`result` is a JSON-RPC error object (the call failed at the protocol level), not a tool result."""
    created_at: float
    updated_at: float
    ttl_ms: int | None = None
    poll_interval_ms: int = 5000
    upstream_task_id: str | None = Field(
        default=None,
        max_length=200,
        description="a task the upstream itself made (passed through, `service.gateway.task_passthrough`): its id "
        "there; None for a held call's task",
    )
    origin: str | None = Field(
        default=None,
        max_length=64,
        description="the upstream connection a passed-through task was made on (its tasks live there)",
    )


class SpentRequestState(SQLModel, table=True):
    """A sealed `requestState` (2026-07-28 multi round-trip) that came back once: its id, kept until it expires.

    The `client` approval channel's state is single use (the specification's MUST): the retry that spends it inserts
    its id here, and a second retry with the same state finds it taken (`service.gateway.sealed_state`). Rows past
    `expires_at` are useless (the seal refuses the state by then) and are deleted as new ones come.
    """

    __tablename__ = "spent_request_states"

    id: str = Field(primary_key=True, max_length=64)
    expires_at: float = Field(index=True)
