"""Turn `config/policy.json` into a `Policy`: parse, validate across keys, precompute every verdict.

Owns the checks that need more than one value, each reported as a ConfigError at its place:
  - rule keys parse, and no two keys of one layer are an ambiguous tie (equal specificity, and
    some (server, tool) matches both);
  - approvers name declared people or groups (or raw `<channel>:<id>` identities such as `slack:U0123ABC`
    or `email:a@b.c`, each id checked by its channel's contact check), quorum is
    reachable, reminders come before the timeout, `approval` only sits on require_approval rules;
  - a counter name means one window and one scope wherever it is used, and a rule never counts
    the same counter twice.
Semantics chosen here: a rule with an `approval` block and no `action` requires approval (fail
closed rather than PolicyLayer's "listed means allow"); a deny rule with limits is refused as
meaningless; `require_approval` without a block asks every declared person, quorum 1, 15m, deny.
A rule's `cases` are compiled here too: each `when` is parsed and type-checked (a bad one is
reported at `tools.<key>.cases[<i>].when` with the parser's message), each case is checked like a
rule and must name its action (no "listed means allow" for a condition), and cannot `hide`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import pydantic

from service.configfile import (
    WHOLE_FILE,
    ConfigError,
    format_location,
    parse_json,
    read_config_bytes,
    validation_error_to_config_error,
)
from service.policy import channel_names
from service.policy.conditions import ConditionSyntaxError, compile_amount, compile_condition
from service.policy.contacts import check_contact, contact_channels, same_contact
from service.policy.engine import DEFAULT_CACHE_SIZE, CompiledCase, CompiledRule, GrantLayer, Policy, RuleSet
from service.policy.patterns import KeyPattern, PatternError, overlap, parse_key
from service.policy.rules import (
    ApprovalIn,
    CaseIn,
    LimitIn,
    PersonIn,
    PolicyFileIn,
    RuleIn,
    is_valid_name,
)
from service.policy.verdict import ApprovalSpec, Approver, Limit, ToolChangeRule, Verdict

Loc = tuple[str | int, ...]
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A servers.json name (`service.gateway.servers.SERVER_NAME`; the policy does not import the gateway)."""
MAX_COUNTER_LENGTH = 200
"""Longest counter name (`rate_counters.counter` is a VARCHAR(200))."""


def load_policy(path: Path | str, *, cache_size: int = DEFAULT_CACHE_SIZE) -> Policy:
    """Read, validate and compile a policy file; every problem is a ConfigError."""
    path = Path(path)
    data = read_config_bytes(path)
    raw = parse_json(path, data)
    if not isinstance(raw, dict):
        raise ConfigError(path, WHOLE_FILE, "expected a JSON object with 'version', 'default' and 'tools'")
    try:
        file_in = PolicyFileIn.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise validation_error_to_config_error(path, exc, model=PolicyFileIn) from None
    version = hashlib.sha256(data).hexdigest()[:12]
    return _Compiler(path, file_in).compile(version=version, cache_size=cache_size)


class _Compiler:
    """One compilation; holds the file and the lookups that rules refer to."""

    def __init__(self, path: Path, file_in: PolicyFileIn) -> None:
        self.path = path
        self.file = file_in
        self.counters: dict[str, tuple[int, str, bool, str]] = {}  # name -> window, scope, adds amounts, location
        self.people = self._people()
        self.groups_checked: dict[str, tuple[Approver, ...]] = {}
        self.all_tools_limits = tuple(
            self._limit(li, ("all_tools", "limits", i)) for i, li in enumerate(file_in.all_tools.limits)
        )
        self.global_redact = tuple(dict.fromkeys(file_in.redact))

    def error(self, loc: Loc, message: str) -> ConfigError:
        return ConfigError(self.path, format_location(loc), message)

    def compile(self, *, version: str, cache_size: int) -> Policy:
        for name in self.file.groups:
            self._group(name, ())
        self._check_counter_names(self.all_tools_limits, ("all_tools", "limits"))
        rules = self._layer(self.file.tools, ("tools",), label=lambda key: key)
        grants = {
            grant: GrantLayer(
                rules=self._layer(
                    grant_in.tools,
                    ("grants", grant, "tools"),
                    label=lambda key, g=grant: f"grants.{g}.tools.{key}",
                ),
                default=self._default_verdict(grant_in.default, grant_in.default_reason, f"grants.{grant}.default")
                if grant_in.default is not None
                else None,
            )
            for grant, grant_in in self.file.grants.items()
        }
        default = self._default_verdict(self.file.default, self.file.default_reason, "default")
        rule_count = len(self.file.tools) + sum(len(g.tools) for g in self.file.grants.values())
        acting_for = {}
        for grant, grant_in in self.file.grants.items():
            if grant_in.acting_for is None:
                continue
            if grant_in.acting_for not in self.people:
                declared = ", ".join(self.people) or "none"
                raise self.error(
                    ("grants", grant, "acting_for"),
                    f"unknown person {grant_in.acting_for!r}: a grant acts for a person declared in people "
                    f"(declared: {declared})",
                )
            acting_for[grant] = grant_in.acting_for
        return Policy(
            path=self.path,
            version=version,
            default=default,
            rules=rules,
            grants=grants,
            hide=self._hide(),
            list_tools=self.file.list_tools,
            rule_count=rule_count,
            people=self.people,
            acting_for=acting_for,
            group_names=tuple(self.file.groups),
            cache_size=cache_size,
            tool_change=self._tool_change(),
            server_tool_change={
                name: self._tool_change(name)
                for name, server_in in self.file.servers.items()
                if server_in.on_tool_change is not None or server_in.tool_change_approval is not None
            },
        )

    def _tool_change(self, server: str | None = None) -> ToolChangeRule:
        """`on_tool_change` (and its approval) at the top level, or for one server (unset keys: the top level's)."""
        action = self.file.on_tool_change
        approval_in = self.file.tool_change_approval
        label = "on_tool_change"
        where: Loc = ("tool_change_approval",)
        if server is not None:
            if not _SERVER_NAME.match(server):
                raise self.error(
                    ("servers", server), "a server name is 1-64 letters, digits, '_', '.' or '-' (as in servers.json)"
                )
            server_in = self.file.servers[server]
            if server_in.on_tool_change is not None:
                action, label = server_in.on_tool_change, f"servers.{server}.on_tool_change"
            if server_in.tool_change_approval is not None:
                approval_in, where = server_in.tool_change_approval, ("servers", server, "tool_change_approval")
        return ToolChangeRule(action=action, label=label, approval=self._approval(approval_in, where))

    # -- rules --------------------------------------------------------------------------------------

    def _layer(self, tools: dict[str, RuleIn], loc: Loc, *, label) -> RuleSet:
        compiled = []
        for key, rule_in in tools.items():
            where = (*loc, key)
            pattern = self._pattern(key, where)
            verdict = self._verdict(label(key), key, rule_in, where)
            cases = tuple(
                self._case(f"{label(key)}.cases[{i}]", key, rule_in, case_in, (*where, "cases", i))
                for i, case_in in enumerate(rule_in.cases)
            )
            compiled.append(
                CompiledRule(
                    pattern, verdict, ".".join(str(p) for p in loc[:-1]) or "tools", format_location(where), cases
                )
            )
        self._check_ties(compiled, loc)
        return RuleSet(compiled)

    def _pattern(self, key: str, where: Loc) -> KeyPattern:
        try:
            return parse_key(key)
        except PatternError as exc:
            raise self.error(where, str(exc)) from None

    def _verdict(self, label: str, key: str, rule_in: RuleIn, where: Loc) -> Verdict:
        action = rule_in.action or ("require_approval" if rule_in.approval is not None else "allow")
        if rule_in.approval is not None and action != "require_approval":
            raise self.error(
                (*where, "approval"),
                f"an approval block only applies to action 'require_approval', but this rule's action is '{action}'",
            )
        limits = [self._limit(li, (*where, "limits", i)) for i, li in enumerate(rule_in.limits)]
        if rule_in.rate_limit is not None:
            rl = rule_in.rate_limit
            counter = f"{label}_rate"  # named after the rule: a grant's override never shares the global counter
            if len(counter) > MAX_COUNTER_LENGTH:
                raise self.error(
                    (*where, "rate_limit"),
                    f"the rate_limit shorthand names its counter after the rule ('{counter[:24]}...', "
                    f"{len(counter)} characters), but a counter name has at most {MAX_COUNTER_LENGTH} characters; "
                    "use limits with a shorter counter name instead",
                )
            shorthand = LimitIn(counter=counter, window=rl.window, max=rl.max, scope=rl.scope)
            limits.append(self._limit(shorthand, (*where, "rate_limit")))
        if action == "deny" and limits:
            raise self.error(
                (*where, "limits" if rule_in.limits else "rate_limit"), "limits have no effect on a deny rule"
            )
        if action != "deny":
            limits.extend(self.all_tools_limits)
        self._check_counter_names(limits, where)
        approval = None
        if rule_in.editable and action != "require_approval":
            raise self.error(
                (*where, "editable"),
                f"editable only applies to action 'require_approval' (an approver edits a held call), "
                f"but this {'case' if 'cases' in where else 'rule'}'s action is '{action}'",
            )
        if action == "require_approval":
            approval = self._approval(rule_in.approval, (*where, "approval"), editable=rule_in.editable)
            if approval.editable and approval.quorum > 1:
                raise self.error(
                    (*where, "editable"),
                    f"an editable approval needs quorum 1 (this one has quorum {approval.quorum}): with several "
                    "approvers, each would have to approve the same edited call",
                )
        return Verdict(
            action=action,
            rule=label,
            reason=rule_in.reason,
            limits=tuple(limits),
            hide=rule_in.hide,
            redact=tuple(dict.fromkeys((*self.global_redact, *rule_in.redact))),
            approval=approval,
        )

    def _case(self, label: str, key: str, rule_in: RuleIn, case_in: CaseIn, where: Loc) -> CompiledCase:
        """A case decides like a rule of its own (same checks, the rule's redaction), when its CEL is true."""
        try:
            condition = compile_condition(case_in.when)
        except ConditionSyntaxError as exc:
            raise self.error((*where, "when"), f"invalid CEL expression: {exc}") from None
        if case_in.action is None and case_in.approval is None:
            raise self.error(where, "a case needs an action: allow, deny or require_approval")
        if case_in.hide:
            raise self.error(
                (*where, "hide"),
                "a case cannot hide a tool: tools/list has no arguments to evaluate `when` with; "
                "put hide on the rule itself",
            )
        as_rule = rule_in.model_copy(  # the rule's redaction, the case's decision (model_construct is 20x slower)
            update={
                "action": case_in.action,
                "reason": case_in.reason,
                "approval": case_in.approval,
                "limits": case_in.limits,
                "editable": case_in.editable,
                "rate_limit": None,
                "hide": False,
                "cases": [],
            }
        )
        return CompiledCase(condition, self._verdict(label, key, as_rule, where), format_location(where))

    def _default_verdict(self, action: str, reason: str | None, label: str) -> Verdict:
        approval = self._approval(None, ()) if action == "require_approval" else None
        return Verdict(
            action=action,  # type: ignore[arg-type]
            rule=label,
            reason=reason,
            limits=self.all_tools_limits if action != "deny" else (),
            redact=self.global_redact,
            approval=approval,
        )

    def _hide(self) -> RuleSet:
        rules = []
        for i, entry in enumerate(self.file.hide):
            where = ("hide", i)
            pattern = self._pattern(entry, where)
            verdict = Verdict(
                action="deny", rule=f"hide[{i}]", reason=f"hidden by policy (hide entry {entry!r})", hide=True
            )
            rules.append(CompiledRule(pattern, verdict, "hide", format_location(where)))
        return RuleSet(rules)

    def _check_ties(self, rules: Sequence[CompiledRule], loc: Loc) -> None:
        """Refuse two keys of equal specificity that can match the same call (see patterns)."""
        groups: dict[tuple, list[CompiledRule]] = {}
        for rule in rules:
            groups.setdefault(rule.pattern.specificity, []).append(rule)
        for spec, members in groups.items():
            server_exact, tool_exact = spec[0], spec[1]
            if server_exact and tool_exact:
                continue  # distinct exact keys never match the same call
            if tool_exact:
                buckets = _bucket(members, lambda r: r.pattern.tool)
            elif server_exact:
                buckets = _bucket(members, lambda r: r.pattern.server)
            else:
                buckets = [members]
            for bucket in buckets:
                self._check_bucket(bucket, loc)

    def _check_bucket(self, bucket: list[CompiledRule], loc: Loc) -> None:
        for i, later in enumerate(bucket):
            for earlier in bucket[:i]:
                found = overlap(earlier.pattern, later.pattern)
                if found is False:
                    continue
                example = (
                    f"server {found[0]!r}, tool {found[1]!r}"
                    if isinstance(found, tuple)
                    else "the same server and tool"
                )
                raise self.error(
                    (*loc, later.key),
                    f"ambiguous rules {earlier.key!r} and {later.key!r}: both can match {example} and "
                    "neither is more specific (same exactness and the same number of literal characters); "
                    "make one of them more specific or add an exact rule for the overlap",
                )

    # -- limits -------------------------------------------------------------------------------------

    def _limit(self, limit_in: LimitIn, where: Loc) -> Limit:
        amount = None
        if limit_in.amount is not None:
            try:
                amount = compile_amount(limit_in.amount)
            except ConditionSyntaxError as exc:
                raise self.error((*where, "amount"), f"invalid CEL expression: {exc}") from None
        limit = Limit(limit_in.counter, limit_in.window, limit_in.max, limit_in.scope, amount)
        adds = amount is not None
        seen = self.counters.get(limit.counter)
        location = format_location(where)
        if seen is None:
            self.counters[limit.counter] = (limit.window_seconds, limit.scope, adds, location)
        elif seen[:2] != (limit.window_seconds, limit.scope):
            raise self.error(
                where,
                f"counter {limit.counter!r} is used with window {limit.window_seconds}s, scope {limit.scope} here "
                f"but with window {seen[0]}s, scope {seen[1]} at {seen[3]}; a counter must mean one thing "
                "(give this limit its own counter name)",
            )
        elif seen[2] != adds:
            counts, sums = ("adds up an amount", "counts calls") if adds else ("counts calls", "adds up an amount")
            raise self.error(
                where,
                f"counter {limit.counter!r} {counts} here but {sums} at {seen[3]}; a counter must mean one thing "
                "(give this limit its own counter name)",
            )
        return limit

    def _check_counter_names(self, limits: Sequence[Limit], where: Loc) -> None:
        names = [limit.counter for limit in limits]
        for name in names:
            if names.count(name) > 1:
                raise self.error(
                    where,
                    f"counter {name!r} would be counted twice for one call (it appears in this rule's limits "
                    "more than once, or also in rate_limit or all_tools.limits)",
                )

    # -- approvers ----------------------------------------------------------------------------------

    def _people(self) -> dict[str, Approver]:
        people = {}
        for name, person in self.file.people.items():
            if not is_valid_name(name):
                raise self.error(("people", name), "a person's name may use only letters, digits, '_', '.', '-'")
            if name == channel_names.CLIENT:
                raise self.error(
                    ("people", name),
                    "'client' is reserved: as an approver it names the person at the calling MCP client; "
                    "give this person another name",
                )
            for channel, value in person.contacts.items():
                problem = check_contact(channel, value)
                if problem is not None:
                    raise self.error(("people", name, "contacts", channel), problem)
            people[name] = _person(name, person)
        return people

    def _group(self, name: str, stack: tuple[str, ...]) -> tuple[Approver, ...]:
        if name in self.groups_checked:
            return self.groups_checked[name]
        if not is_valid_name(name):
            raise self.error(("groups", name), "a group's name may use only letters, digits, '_', '.', '-'")
        if name in stack:
            cycle = " -> ".join((*stack[stack.index(name) :], name))
            raise self.error(("groups", name), f"groups include each other in a cycle: {cycle}")
        members: list[Approver] = []
        for i, entry in enumerate(self.file.groups[name]):
            members.extend(self._approver(entry, ("groups", name, i), (*stack, name)))
        result = _distinct(members)
        self.groups_checked[name] = result
        return result

    def _approver(self, entry: str, where: Loc, stack: tuple[str, ...] = ()) -> tuple[Approver, ...]:
        if entry == channel_names.CLIENT:
            raise self.error(
                where,
                "the approver 'client' (the person at the calling MCP client) may be listed only in a rule's own "
                "approval.approvers, not in a group",
            )
        kind, sep, value = entry.partition(":")
        if not sep:
            if entry in self.people:
                return (self.people[entry],)
            declared = ", ".join(self.people) or "none"
            raise self.error(
                where,
                f"unknown approver {entry!r}: not declared in people (declared: {declared}); "
                "use a person's name, group:<name>, slack:<USERID> or email:<address>",
            )
        if kind == "group":
            if value not in self.file.groups:
                declared = ", ".join(self.file.groups) or "none"
                raise self.error(where, f"unknown group {value!r}: not declared in groups (declared: {declared})")
            return self._group(value, stack)
        channels = contact_channels()
        if kind in channels:
            problem = check_contact(kind, value)
            if problem is not None:
                raise self.error(where, problem)
            known = [p for p in self.people.values() if any(same_contact(kind, value, i) for i in p.ids(kind))]
            return (known[0],) if known else (Approver(name=entry, contacts={kind: (value,)}),)
        kinds = ["group:", *(f"{channel}:" for channel in channels)]
        raise self.error(
            where,
            f"unknown approver kind {kind!r} in {entry!r}; use a person's name, {', '.join(kinds[:-1])} or {kinds[-1]}",
        )

    def _approval(self, approval_in: ApprovalIn | None, where: Loc, *, editable: bool = False) -> ApprovalSpec:
        if approval_in is None:
            return ApprovalSpec(approvers=tuple(self.people.values()), editable=editable)
        groups: tuple[str, ...] = ()
        if editable and approval_in.scopes:
            raise self.error(
                (*where, "scopes"),
                "an editable rule gives one-off approvals only: `editable` and standing `scopes` do not combine "
                "(an edit is for one call)",
            )
        if approval_in.approvers is None:
            approvers = tuple(self.people.values())
        else:
            found: list[Approver] = []
            for i, entry in enumerate(approval_in.approvers):
                if entry == channel_names.CLIENT:
                    self._check_client_approver(approval_in, (*where, "approvers", i), (*where, "four_eyes"))
                    found.append(Approver(name=channel_names.CLIENT))
                    continue
                found.extend(self._approver(entry, (*where, "approvers", i)))
            approvers = _distinct(found)
            groups = self._groups_named(approval_in.approvers)
        reachable = len(approvers) or 1  # nobody declared: the local operator alone decides
        provider_group = any(not self.file.groups[name] for name in groups)
        if approval_in.quorum > reachable and not provider_group:  # an empty group's members are the IdP's
            who = f"{len(approvers)} distinct approver(s)" if approvers else "only the local operator"
            raise self.error((*where, "quorum"), f"quorum {approval_in.quorum} can never be reached: there are {who}")
        remind = approval_in.remind_before
        if remind is not None and remind >= approval_in.timeout:
            raise self.error(
                (*where, "remind_before"),
                f"remind_before ({remind:g}s) must be shorter than the timeout ({approval_in.timeout:g}s)",
            )
        return ApprovalSpec(
            approvers=approvers,
            channels=tuple(dict.fromkeys(approval_in.channels)),
            timeout_seconds=float(approval_in.timeout),
            on_timeout=approval_in.on_timeout,
            quorum=approval_in.quorum,
            remind_before_seconds=remind,
            routing={"slack": {"channel": approval_in.slack_channel}} if approval_in.slack_channel else {},
            claim_within_seconds=float(approval_in.claim_within),
            rejoin_within_seconds=float(approval_in.rejoin_within),
            four_eyes=approval_in.four_eyes,
            groups=groups,
            scopes={scope: float(seconds) for scope, seconds in (approval_in.scopes or {}).items()},
            editable=editable,
        )

    def _check_client_approver(self, approval_in: ApprovalIn, where: Loc, four_eyes_at: Loc) -> None:
        """The approver `client`: the person at the calling MCP client may approve their own agent's call (the
        elicitation's form mode, `service.gateway.client_approval`). It needs the `client` channel (it is asked
        nowhere else), and it contradicts `four_eyes` (that person is, as far as holdgate can tell, the one the agent
        acts for): both are refused here rather than leaving a vote that can never count."""
        if channel_names.CLIENT not in approval_in.channels:
            raise self.error(
                where,
                "the approver 'client' is asked only through the channel 'client': add 'client' to approval.channels",
            )
        if approval_in.four_eyes:
            raise self.error(
                four_eyes_at,
                "four_eyes and the approver 'client' contradict each other: the person at the client is the one the "
                "agent acts for; drop one of them",
            )

    def _groups_named(self, entries: Sequence[str]) -> tuple[str, ...]:
        """The groups these approver entries name, with the groups those include (checked by `_approver`)."""
        names: dict[str, None] = {}
        pending = [entry for entry in entries if entry.startswith("group:")]
        while pending:
            name = pending.pop().partition(":")[2]
            if name not in names:
                names[name] = None
                pending.extend(entry for entry in self.file.groups.get(name, ()) if entry.startswith("group:"))
        return tuple(sorted(names))


def _person(name: str, person: PersonIn) -> Approver:
    """The file's own keys (`slack`, `email`) and its generic `contacts`, as contacts by channel."""
    contacts: dict[str, tuple[str, ...]] = {}
    for channel, value in [("slack", person.slack), ("email", person.email), *person.contacts.items()]:
        if value:
            contacts[channel] = (*contacts.get(channel, ()), value)
    return Approver(
        name=name,
        contacts=contacts,
        token_sha256s=(person.token_sha256,) if person.token_sha256 else (),
        sso=person.sso,
    )


def _distinct(approvers: Sequence[Approver]) -> tuple[Approver, ...]:
    return tuple({approver.name: approver for approver in approvers}.values())


def _bucket(rules: Sequence[CompiledRule], key) -> list[list[CompiledRule]]:
    buckets: dict[str, list[CompiledRule]] = {}
    for rule in rules:
        buckets.setdefault(key(rule), []).append(rule)
    return [bucket for bucket in buckets.values() if len(bucket) > 1]
