"""The policy file's format (`config/policy.json`) as pydantic models: shape and single values only.

These models accept exactly what the file may say and refuse unknown keys (typo protection),
except the ones documented as ignored (`$schema`, `description`). Checks that need more than one
value (rule keys, ambiguous ties, approver references, shared counters) happen when the policy is
compiled (`service.policy.compiler`), which reports them with the same file/location/message shape.

Compatibility: a PolicyLayer policy loads unchanged. A rule under `tools` without `action` is
`allow`; its `limits` are `{counter, window, max, scope}`; PolicyLayer's top-level `hide` list
(hidden from tools/list and denied) and `all_tools.limits` (limits on every call) are honoured.
PolicyLayer's argument conditions (`require`, `deny_if`) are not implemented by holdgate, so a
non-empty one is refused at load rather than silently ignored; holdgate's own are `cases` (CEL).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from service.policy import channel_names

Action = Literal["allow", "deny", "require_approval"]
Scope = Literal["grant", "global"]
Channel = Annotated[str, AfterValidator(channel_names.check)]
"""A channel's name: a built-in one or a loaded plug-in's (`service.policy.channel_names`)."""

WINDOW_NAMES = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_STRING = re.compile(r"^\s*(\d+)\s*/\s*([a-z0-9.]+)\s*$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

MAX_DURATION_SECONDS = 30 * 86400
"""Longest duration a policy may give anything (approval timeouts, claim and rejoin windows,
reminders, rate-limit windows): 30 days. Far beyond any sensible hold, and far inside what
datetimes and timers can represent, so an absurd value is refused at load instead of failing a
held call (or start-up) later."""
MAX_LIMIT_MAX = 100_000
"""Largest `max` of a rate limit: a sliding limit keeps one row per call in its window, so `max`
bounds the rows one counter key holds."""
MAX_AMOUNT_MAX = 10**15
"""Largest `max` of a limit that adds up an `amount` (a sum, not a count of rows): far beyond any budget, and
inside the integers a double holds exactly (2**53), so sums compare without rounding surprises."""


def parse_duration(value: Any) -> float:
    """`"30s"`, `"15m"`, `"2h"`, `"1d"` or a positive number of seconds -> seconds, at most 30 days."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '15m', '2h', '1d' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"invalid duration {value!r}; write e.g. '30s', '15m', '2h', '1d' or a number of seconds")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError("expected a duration like '30s', '15m', '2h', '1d' or a number of seconds")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be more than 0 seconds (got {value!r})")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"duration must be at most 30d ({MAX_DURATION_SECONDS} seconds), got {value!r}")
    return seconds


STANDING_SCOPES = ("same_args", "tool")
"""What a standing approval may cover (`approval.scopes`): later calls of the same grant with the same tool, server
and arguments (`same_args`), or every call of the tool on that server by that grant (`tool`), narrowest first."""
MAX_STANDING_SECONDS = 7 * 86400
"""Longest a standing approval may last: a week. A standing approval is a hole in the gate; a call that should
pass unasked for longer is what an `allow` rule (with limits and cases) says, in the file, under review."""


def parse_standing_duration(value: Any) -> float:
    """How long a standing approval may last (`approval.scopes.<scope>`): a duration of at most 7 days."""
    seconds = parse_duration(value)
    if seconds > MAX_STANDING_SECONDS:
        raise ValueError(f"a standing approval may last at most 7d ({MAX_STANDING_SECONDS} seconds), got {value!r}")
    return seconds


def parse_window(value: Any) -> int:
    """second | minute | hour | day, a whole positive number of seconds, or a duration string."""
    if isinstance(value, str) and value in WINDOW_NAMES:
        return WINDOW_NAMES[value]
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        if "at most" in str(exc):
            raise ValueError(f"window must be at most 30d ({MAX_DURATION_SECONDS} seconds), got {value!r}") from None
        raise ValueError(
            f"invalid window {value!r}; use second, minute, hour, day or a whole number of seconds"
        ) from None
    if seconds != int(seconds):
        raise ValueError(f"window must be a whole number of seconds (got {value!r})")
    return int(seconds)


Duration = Annotated[float, BeforeValidator(parse_duration)]
StandingDuration = Annotated[float, BeforeValidator(lambda value: parse_standing_duration(value))]
RedactPath = Annotated[str, AfterValidator(lambda path: check_redact_path(path))]
Window = Annotated[int, BeforeValidator(parse_window)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


def _number(value: Any) -> Any:
    """A JSON number, whole or not (a limit's `max`): one error at the field, not one per member of a union."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a valid integer (or a number, for a limit with an amount)")
    return value


class LimitIn(_Model):
    """One sliding-window counter: at most `max` calls in any span of `window`, per grant or across all grants.

    With `amount` (a CEL expression over the call, e.g. `args.amount` or `size(args.recipients)`), each call
    adds that number instead of 1: at most `max` in total in any span of `window`."""

    counter: str = Field(min_length=1, max_length=200)
    window: Window
    amount: str | None = Field(default=None, min_length=1)
    max: Annotated[int | float, BeforeValidator(_number)]
    scope: Scope = "grant"

    @field_validator("max")
    @classmethod
    def _max_bound(cls, value: int | float, info: ValidationInfo) -> int | float:
        if value < 0:
            raise ValueError("Input should be greater than or equal to 0")
        if info.data.get("amount") is None:
            if not isinstance(value, int):
                raise ValueError("a limit that counts calls needs a whole number for max")
            if value > MAX_LIMIT_MAX:
                raise ValueError(
                    f"Input should be less than or equal to {MAX_LIMIT_MAX} (a limit that counts calls keeps one "
                    "row per call in its window)"
                )
        elif not math.isfinite(value) or value > MAX_AMOUNT_MAX:
            raise ValueError(f"the max of a limit with an amount must be a finite number of at most {MAX_AMOUNT_MAX}")
        return value


class RateLimitIn(_Model):
    """Shorthand for one limit whose counter is named `<rule>_rate`, after the rule as verdicts name it:
    `delete_rate` for `tools.delete`, `grants.ci-bot.tools.delete_rate` for a grant's override."""

    max: int = Field(ge=0, le=MAX_LIMIT_MAX)
    window: Window
    scope: Scope = "grant"


def _rate_limit_string(value: Any) -> Any:
    """Also accept PolicyLayer Intercept's `"5/hour"` form."""
    if isinstance(value, str):
        match = _RATE_STRING.match(value)
        if not match:
            raise ValueError(f"invalid rate_limit {value!r}; write {{'max': 30, 'window': 'minute'}} or '30/minute'")
        return {"max": int(match.group(1)), "window": match.group(2)}
    return value


_CONSOLE_ONLY: list[Channel] = ["console"]


class ApprovalIn(_Model):
    """Who may approve, where they are asked, and what happens if nobody answers."""

    approvers: list[str] | None = None
    channels: list[Channel] = Field(default_factory=lambda: _CONSOLE_ONLY.copy(), min_length=1)
    timeout: Duration = 15 * 60
    on_timeout: Literal["deny", "approve"] = "deny"
    quorum: int = Field(default=1, ge=1)
    remind_before: Duration | None = None
    claim_within: Duration = Field(
        default=10 * 60,
        description="An approval that no call collects within this time of being given lapses.",
    )
    rejoin_within: Duration = Field(
        default=2 * 60,
        description="A client that stopped waiting may call again within this time and join the same decision.",
    )
    slack_channel: str | None = Field(
        default=None,
        description="Slack channel (C0123ABC or #name) for the request; without it, approvers get a DM.",
    )
    four_eyes: bool = Field(
        default=False,
        description="Refuse a vote from the person the calling agent acts for (the grant's `acting_for`, or the "
        "OAuth token's acting-for claim): somebody else must approve.",
    )
    scopes: dict[str, StandingDuration] | None = Field(
        default=None,
        description="Standing approvals an approver may give instead of a one-off one: scope -> longest duration "
        "(`same_args`: later identical calls of the same grant; `tool`: every call of the tool by that grant).",
    )

    @field_validator("scopes", mode="before")
    @classmethod
    def _known_scopes(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = [key for key in value if key not in STANDING_SCOPES]
            if unknown:
                raise ValueError(f"unknown scope {unknown[0]!r}; a standing approval's scope is same_args or tool")
        return value


class CaseIn(_Model):
    """One of a rule's `cases`: when the CEL expression `when` is true for a call, this case decides it
    (the first true case of the list; none true: the rule's own keys). `when` sees `args`, `tool`,
    `server`, `grant` and `now` (see `service.policy.conditions`); it is compiled at load."""

    when: str = Field(min_length=1)
    action: Action | None = None
    reason: str | None = None
    approval: ApprovalIn | None = None
    limits: list[LimitIn] = Field(default_factory=list)
    hide: bool = False
    editable: bool = False
    description: str | None = None


class RuleIn(_Model):
    """What the policy says about the tools a key matches."""

    action: Action | None = None
    reason: str | None = None
    hide: bool = False
    limits: list[LimitIn] = Field(default_factory=list)
    rate_limit: Annotated[RateLimitIn | None, BeforeValidator(_rate_limit_string)] = None
    redact: list[RedactPath] = Field(default_factory=list)
    approval: ApprovalIn | None = None
    editable: bool = Field(
        default=False, description="an approver may approve the call with changed arguments (require_approval)"
    )
    cases: list[CaseIn] = Field(default_factory=list)
    description: str | None = None
    require: list[Any] = Field(default_factory=list)
    deny_if: list[Any] = Field(default_factory=list)

    @field_validator("require", "deny_if")
    @classmethod
    def _no_conditions(cls, value: list[Any]) -> list[Any]:
        if value:
            raise ValueError(
                "PolicyLayer's argument conditions are not supported by holdgate; refusing to load rather "
                "than ignore them (write them as `cases` with a CEL `when`, e.g. "
                '[{"when": "args.jobId.startsWith(\'prod-\')", "action": "deny"}])'
            )
        return value


class PersonIn(_Model):
    """A person who can approve: how to reach them and how they prove who they are.

    `slack` and `email` are the file's own keys for those channels; `contacts` names the person's id on any
    other channel (`{"teams": "..."}`), checked by that channel's contact check when the policy is compiled.
    """

    slack: str | None = None
    email: str | None = None
    contacts: dict[str, str] = Field(default_factory=dict)
    token_sha256: str | None = None
    sso: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The person at the identity provider: the value of HOLDGATE_OIDC_PERSON_CLAIM (a subject, "
        "a user name) when it is not their `email`.",
    )
    description: str | None = None

    @field_validator("slack")
    @classmethod
    def _slack(cls, value: str | None) -> str | None:
        if value is not None and not _SLACK_ID.match(value):
            raise ValueError(f"{value!r} is not a Slack user ID (like U0123ABC)")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"{value!r} is not an email address")
        return value

    @field_validator("token_sha256")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.match(value):
            raise ValueError("must be the sha256 of the token as 64 lowercase hex characters")
        return value


class AllToolsIn(_Model):
    """PolicyLayer's `all_tools`: limits that every allowed call also consumes."""

    limits: list[LimitIn] = Field(default_factory=list)


class GrantIn(_Model):
    """Overrides for one grant: its rules win over the global ones, its default over the global default."""

    default: Action | None = None
    default_reason: str | None = None
    tools: dict[str, RuleIn] = Field(default_factory=dict)
    acting_for: str | None = Field(
        default=None,
        description="The declared person this grant's agent acts for: a `four_eyes` rule refuses their vote.",
    )
    description: str | None = None


ToolChangeAction = Literal["require_approval", "deny", "allow"]


class ServerIn(_Model):
    """Settings of one upstream server (a name from servers.json) that are not about one tool."""

    on_tool_change: ToolChangeAction | None = Field(
        default=None,
        description="What calls to a tool whose definition changed since a person accepted it (or that is new on "
        "this server) get until someone accepts it; unset: the top-level on_tool_change.",
    )
    tool_change_approval: ApprovalIn | None = Field(
        default=None,
        description="Who approves calls held for a changed definition on this server; unset: the top level's.",
    )
    description: str | None = None


class PolicyFileIn(_Model):
    """The whole file."""

    schema_: str | None = Field(default=None, alias="$schema")
    description: str | None = None
    version: Literal["1"] = "1"
    default: Action = "deny"
    default_reason: str | None = None
    tools: dict[str, RuleIn] = Field(default_factory=dict)
    hide: list[str] = Field(default_factory=list)
    all_tools: AllToolsIn = Field(default_factory=AllToolsIn)
    redact: list[RedactPath] = Field(default_factory=list)
    list_tools: Literal["callable", "all"] = "callable"
    people: dict[str, PersonIn] = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    grants: dict[str, GrantIn] = Field(default_factory=dict)
    on_tool_change: ToolChangeAction = "require_approval"
    tool_change_approval: ApprovalIn | None = None
    servers: dict[str, ServerIn] = Field(default_factory=dict)


def check_redact_path(path: str) -> str:
    """`prompt`, `auth.token`: dot-separated argument keys, none empty."""
    if not path or any(not part for part in path.split(".")):
        raise ValueError(f"invalid argument path {path!r}; write keys separated by dots, e.g. 'auth.token'")
    return path


def is_valid_name(name: str) -> bool:
    """Names of people and groups: letters, digits, '_', '.', '-' (no ':' so they never look like
    a raw `slack:`/`email:` approver)."""
    return bool(_NAME.match(name))


def is_slack_id(value: str) -> bool:
    return bool(_SLACK_ID.match(value))


def is_email(value: str) -> bool:
    return bool(_EMAIL.match(value))
