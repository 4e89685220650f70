"""What the policy answers about one call: `Verdict`, with its `Limit`s and resolved `ApprovalSpec`.

All frozen: a compiled policy hands out the same objects to every caller, built once at load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from service.policy.conditions import Amount

ActionName = Literal["allow", "deny", "require_approval"]


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `max` calls in any span of `window_seconds` (sliding), counted per grant or globally.

    With `amount` (compiled CEL, `limits[].amount`), a call adds that amount instead of 1: at most `max` in total."""

    counter: str
    window_seconds: int
    max: int | float
    scope: Literal["grant", "global"] = "grant"
    amount: Amount | None = field(default=None, compare=False)

    def describe(self) -> str:
        per = "per grant" if self.scope == "grant" else "across all grants"
        what = f"{self.max:g} of `{self.amount.source}`" if self.amount is not None else f"{self.max}"
        return f"{self.counter}: at most {what} in any {format_seconds(self.window_seconds)}, {per}"


@dataclass(frozen=True, slots=True)
class Approver:
    """One distinct approver and every way they can be reached or recognised.

    `name` is the person's name from `people`, or the raw identity (`slack:U123`, `email:a@b.c`)
    for approvers not declared as people. `contacts` are their ids by channel name (`{"slack":
    ("U123",), "email": ("a@b.c",)}`); what an id means is the channel's business.
    """

    name: str
    contacts: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    token_sha256s: tuple[str, ...] = ()
    sso: str | None = None
    """Who they are at the identity provider (policy `sso`), when that is not their email."""

    def ids(self, channel: str) -> tuple[str, ...]:
        """This approver's ids on `channel` (none: not reachable there)."""
        return tuple(self.contacts.get(channel, ()))

    def describe(self) -> str:
        ways = [f"{channel} {value}" for channel, values in self.contacts.items() for value in values]
        if self.token_sha256s:
            ways.append("API token")
        return f"{self.name} ({', '.join(ways)})" if ways else self.name


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    """How a held call gets decided. No approvers means only the local operator (CLI) can decide."""

    approvers: tuple[Approver, ...]
    channels: tuple[str, ...] = ("console",)
    timeout_seconds: float = 15 * 60
    on_timeout: Literal["deny", "approve"] = "deny"
    quorum: int = 1
    remind_before_seconds: float | None = None
    routing: Mapping[str, Mapping[str, str]] = field(default_factory=dict, hash=False)
    """Where each channel posts the request, by channel name (`{"slack": {"channel": "C0123ABC"}}` for the
    rule's `slack_channel`); a channel not named here uses its own default."""
    claim_within_seconds: float = 10 * 60
    """An approval that no call collects within this time of being given lapses (`approval.claim_within`)."""
    rejoin_within_seconds: float = 2 * 60
    """How long a decision whose caller stopped waiting stays open for the same call to join it
    again (`approval.rejoin_within`)."""
    four_eyes: bool = False
    """Refuse a vote from the person the calling agent acts for (`approval.four_eyes`)."""
    groups: tuple[str, ...] = ()
    """The groups the approvers name (`group:ops` -> `ops`): members at the identity provider count too, when
    holdgate takes groups from it (HOLDGATE_OIDC_GROUPS_CLAIM)."""
    scopes: Mapping[str, float] = field(default_factory=dict, hash=False)
    """The standing approvals an approver may give instead of a one-off one: scope (`same_args`, `tool`) ->
    longest duration in seconds (`approval.scopes`); empty: one-off approvals only."""
    editable: bool = False
    """An approver may approve the call with changed arguments (the rule's or case's `editable`)."""

    def describe(self) -> str:
        who = ", ".join(a.describe() for a in self.approvers) or "the local operator only (no people declared)"
        text = (
            f"approvers: {who}; quorum {self.quorum}; channels {', '.join(self.channels)}; "
            f"timeout {format_seconds(self.timeout_seconds)} (then {self.on_timeout})"
        )
        if self.remind_before_seconds is not None:
            text += f"; reminder {format_seconds(self.remind_before_seconds)} before the timeout"
        if self.four_eyes:
            text += "; four eyes (not the person the agent acts for)"
        if self.scopes:
            standing = ", ".join(f"{scope} up to {format_seconds(s)}" for scope, s in self.scopes.items())
            text += f"; standing approvals: {standing}"
        if self.editable:
            text += "; editable (an approver may change the arguments before release)"
        return text


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's answer for (grant, server, tool).

    `rule` is the key that decided (`cancel-async-job`, `everything/*`), `grants.<g>.tools.<key>`
    for a per-grant rule, `hide[<i>]` for PolicyLayer's hide list, or `default` /
    `grants.<g>.default`. `redact` holds the global and the rule's argument paths.
    """

    action: ActionName
    rule: str
    reason: str | None = None
    limits: tuple[Limit, ...] = ()
    hide: bool = False
    redact: tuple[str, ...] = ()
    approval: ApprovalSpec | None = None
    tool_change: ToolChangeNote | None = None
    """Set when the tool's definition differs from the one a person accepted (`with_tool_change`)."""


@dataclass(frozen=True, slots=True)
class ToolChangeNote:
    """The tool a call names is not as a person accepted it: changed since, or new on a known server."""

    kind: Literal["changed", "new"]
    accepted_sha256: str | None
    current_sha256: str
    diff: str
    """A unified diff of the accepted and the current definition, bounded for messages."""

    def describe(self, server: str, tool: str) -> str:
        if self.kind == "new":
            return f"tool '{tool}' is new on server '{server}' and no person has accepted its definition yet"
        return (
            f"the definition of tool '{tool}' on server '{server}' changed since a person accepted it "
            f"(sha256 {(self.accepted_sha256 or '')[:12]} -> {self.current_sha256[:12]})"
        )


@dataclass(frozen=True, slots=True)
class ToolChangeRule:
    """What the policy does with a call to a changed or new tool (`on_tool_change`), and who approves it."""

    action: ActionName
    label: str
    """Where it is set: `on_tool_change` or `servers.<name>.on_tool_change` (the audit's rule)."""
    approval: ApprovalSpec


_STRICTNESS: dict[str, int] = {"allow": 0, "require_approval": 1, "deny": 2}


def with_tool_change(verdict: Verdict, rule: ToolChangeRule, note: ToolChangeNote, server: str, tool: str) -> Verdict:
    """The stricter of the rule's verdict and `on_tool_change` (deny > require_approval > allow), with the note.

    A rule that denies still denies, with its own reason; a rule that requires approval keeps its approvers and
    gains the note (its request shows the diff); a rule that allows gets `on_tool_change`'s action, named by it,
    with its limits still counted.
    """
    if _STRICTNESS[verdict.action] >= _STRICTNESS[rule.action]:
        if verdict.action == "require_approval":
            return replace(verdict, tool_change=note)
        return verdict
    why = note.describe(server, tool)
    accept = f"holdgate tools accept {server} {tool}"
    if rule.action == "deny":
        reason = f"{why}; a person must accept it first ({accept})"
        return replace(
            verdict, action="deny", rule=rule.label, reason=reason, limits=(), approval=None, tool_change=note
        )
    reason = f"{why}; approve this call, or accept the definition ({accept}) to let calls through"
    return replace(
        verdict, action="require_approval", rule=rule.label, reason=reason, approval=rule.approval, tool_change=note
    )


def format_seconds(seconds: float) -> str:
    """900 -> '15m', 90 -> '90s', 86400 -> '1d'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
