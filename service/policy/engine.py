"""The compiled policy: `Policy.evaluate(grant, server, tool) -> Verdict`, pure and fast, no I/O.

Order of evaluation for one call:
  1. PolicyLayer's top-level `hide` list: a match is denied (and hidden), whatever the rules say;
  2. the grant's own rules (`grants.<grant>.tools`), most specific match wins;
  3. the global rules (`tools`), most specific match wins;
  4. the grant's `default`, then the global `default`.
"Most specific" is defined in `service.policy.patterns`. Everything is built once at load
(`service.policy.compiler`); each verdict is a shared frozen object, and answers are cached per
(grant, server, tool) in a bounded dict — the policy is immutable, so the cache never goes stale.
A rule with `cases` reads the call's arguments: the cache then holds the rule, never a verdict, and
its cases (CEL, compiled at load) are evaluated on every call; the first true one decides, none
true leaves the rule's own verdict, and a case that cannot be evaluated denies the call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.policy.conditions import CallVariables, Condition, ConditionFailed, call_variables
from service.policy.patterns import ANY, STAR, GlobSet, KeyPattern, key_regex, server_regex, tool_regex
from service.policy.verdict import ApprovalSpec, Approver, ToolChangeRule, Verdict

DEFAULT_CACHE_SIZE = 100_000
MAX_NAME_LENGTH = 256
"""Longer server or tool names are denied outright (MCP tool names are at most 128 characters)."""

NAME_TOO_LONG = Verdict(
    action="deny",
    rule="name-length",
    reason=f"server or tool name longer than {MAX_NAME_LENGTH} characters",
)


@dataclass(frozen=True, slots=True)
class CompiledCase:
    """One of a rule's `cases`: the verdict it gives when its condition is true for a call."""

    condition: Condition
    verdict: Verdict
    location: str
    """Where it sits in the file: `tools.cancel-async-job.cases[0]`."""


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    """How a call fared against one case (for `explain`): True, False, or why it could not be known."""

    case: CompiledCase
    outcome: bool | ConditionFailed


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule key with the verdict it gives; `location` is where it sits in the file.

    `verdict` is the rule's own; with `cases`, it applies only to calls that no case matches."""

    pattern: KeyPattern
    verdict: Verdict
    layer: str
    location: str
    cases: tuple[CompiledCase, ...] = ()

    @property
    def key(self) -> str:
        return self.pattern.key

    def decide(
        self, arguments: Mapping[str, Any], grant: str, server: str, tool: str, now: float
    ) -> tuple[Verdict, list[CaseOutcome]]:
        """The verdict for one call of a rule with cases, and each case's outcome up to the one that decided."""
        variables = call_variables(arguments, tool=tool, server=server, grant=grant, now=now)
        if isinstance(variables, ConditionFailed):
            return self.failed(self.verdict.rule, variables), []
        return self._first_true(variables)

    def _first_true(self, variables: CallVariables) -> tuple[Verdict, list[CaseOutcome]]:
        seen: list[CaseOutcome] = []
        for case in self.cases:
            outcome = case.condition.evaluate(variables)
            seen.append(CaseOutcome(case, outcome))
            if outcome is True:
                return case.verdict, seen
            if outcome is not False:
                return self.failed(case.verdict.rule, outcome), seen
        return self.verdict, seen

    def failed(self, label: str, failure: ConditionFailed) -> Verdict:
        """Fail closed: deny, saying which condition and why (the reason reaches the agent and the audit).

        A case that cannot be decided does not fall through to the next: what it would have decided
        is unknown, so nothing after it can be trusted."""
        return Verdict(
            action="deny",
            rule=label,
            reason=f"{failure.reason}, so the call is denied",
            hide=self.verdict.hide,
            redact=self.verdict.redact,
        )


class RuleSet:
    """The rules of one layer, indexed so that finding the most specific match is a few lookups.

    The four classes of the specificity order (server exact?, tool exact?) are searched in order;
    the first class with a match holds the winner: exact pairs in a dict, tool globs per exact
    server in a GlobSet, server globs per exact tool in a short sorted list, and glob/glob keys in
    a GlobSet over `server NUL tool`.
    """

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)
        self._exact: dict[tuple[str, str], CompiledRule] = {}
        per_server: dict[str, list] = {}
        per_tool: dict[str, list[tuple[tuple, re.Pattern[str], CompiledRule]]] = {}
        both: list = []
        for rule in self.rules:
            p = rule.pattern
            first = _first_literal(p.tool_tokens)
            if p.server_exact and p.tool_exact:
                self._exact[(p.server, p.tool)] = rule
            elif p.server_exact:
                per_server.setdefault(p.server, []).append((tool_regex(p), first, p.specificity, rule))
            elif p.tool_exact:
                regex = re.compile(server_regex(p), re.DOTALL)
                per_tool.setdefault(p.tool, []).append((p.specificity, regex, rule))
            else:
                both.append((key_regex(p), first, p.specificity, rule))
        self._per_server = {server: GlobSet(entries) for server, entries in per_server.items()}
        self._per_tool = {
            tool: [(regex, rule) for _, regex, rule in sorted(items, key=lambda i: i[0], reverse=True)]
            for tool, items in per_tool.items()
        }
        self._both: GlobSet[CompiledRule] | None = GlobSet(both) if both else None

    def best(self, server: str, tool: str) -> CompiledRule | None:
        """The most specific rule matching (server, tool), or None."""
        rule = self._exact.get((server, tool))
        if rule is not None:
            return rule
        first = tool[:1]
        globs = self._per_server.get(server)
        if globs is not None:
            rule = globs.best(tool, first)
            if rule is not None:
                return rule
        candidates = self._per_tool.get(tool)
        if candidates is not None:
            for regex, rule in candidates:
                if regex.fullmatch(server):
                    return rule
        if self._both is not None:
            return self._both.best(f"{server}\x00{tool}", first)
        return None

    def matching(self, server: str, tool: str) -> list[CompiledRule]:
        """Every rule matching (server, tool), most specific first (slow; for explanations)."""
        found = [rule for rule in self.rules if rule.pattern.matches(server, tool)]
        return sorted(found, key=lambda rule: rule.pattern.specificity, reverse=True)

    def __len__(self) -> int:
        return len(self.rules)


def _first_literal(tokens: Sequence) -> str | None:
    first = tokens[0] if tokens else None
    if isinstance(first, str) and first not in (STAR, ANY):
        return first
    return None


@dataclass(frozen=True, slots=True)
class GrantLayer:
    """A grant's overrides: its rules (checked before the global ones) and its default."""

    rules: RuleSet
    default: Verdict | None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A matching rule or default, in the order the engine considers them (for `explain`)."""

    layer: str
    rule: CompiledRule | None
    verdict: Verdict


class Policy:
    """A loaded policy file, immutable. Build with `service.policy.load_policy`."""

    def __init__(
        self,
        *,
        path: Path,
        version: str,
        default: Verdict,
        rules: RuleSet,
        grants: dict[str, GrantLayer],
        hide: RuleSet,
        list_tools: Literal["callable", "all"],
        rule_count: int,
        people: dict[str, Approver] | None = None,
        acting_for: dict[str, str] | None = None,
        group_names: tuple[str, ...] = (),
        cache_size: int = DEFAULT_CACHE_SIZE,
        tool_change: ToolChangeRule | None = None,
        server_tool_change: dict[str, ToolChangeRule] | None = None,
    ) -> None:
        self.path = path
        self.version = version
        self.default = default
        self.rules = rules
        self.grants = grants
        self.hide = hide
        self.list_tools = list_tools
        self.rule_count = rule_count
        self.people: dict[str, Approver] = dict(people or {})
        self._people_by_token = {digest: person for person in self.people.values() for digest in person.token_sha256s}
        self._people_by_sso = {person.sso: person.name for person in self.people.values() if person.sso}
        self._people_by_email = {
            address.lower(): person.name for person in self.people.values() for address in person.ids("email")
        }
        self.acting_for: dict[str, str] = dict(acting_for or {})
        """grant -> the declared person its agent acts for (`grants.<grant>.acting_for`)."""
        self.group_names = group_names
        """The groups the policy declares (`groups`)."""
        self._cache: dict[tuple[str, str, str], Verdict | CompiledRule] = {}
        self._cache_size = cache_size
        self.tool_change = tool_change or ToolChangeRule(
            "require_approval", "on_tool_change", ApprovalSpec(approvers=tuple(self.people.values()))
        )
        self.server_tool_change: dict[str, ToolChangeRule] = dict(server_tool_change or {})

    def __repr__(self) -> str:
        return f"Policy(path={str(self.path)!r}, version={self.version!r}, rules={self.rule_count})"

    def evaluate(
        self,
        grant: str,
        server: str,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> Verdict:
        """The verdict for a call of `tool` on `server` by `grant` with these `arguments`.

        A call passes its arguments (`{}` when it has none) and the gateway's clock as `now`: a rule
        with `cases` evaluates them. `arguments=None` asks about the tool, not a call (tools/list, the
        dashboard's table): a rule with cases then answers with its own keys.
        """
        found = self._lookup(grant, server, tool)
        if isinstance(found, Verdict):
            return found
        if arguments is None:
            return found.verdict
        return found.decide(arguments, grant, server, tool, time.time() if now is None else now)[0]

    def decider(self, grant: str, server: str, tool: str) -> Verdict | CompiledRule:
        """What decides a call of `tool` on `server` by `grant`: its verdict, or the rule whose cases must
        see the call's arguments (`service.policy.partial` evaluates those with arguments partly unknown)."""
        return self._lookup(grant, server, tool)

    def _lookup(self, grant: str, server: str, tool: str) -> Verdict | CompiledRule:
        """The deciding verdict, or the deciding rule when its cases must see the call (never a cached verdict)."""
        key = (grant, server, tool)
        found = self._cache.get(key)
        if found is not None:
            return found
        if len(server) > MAX_NAME_LENGTH or len(tool) > MAX_NAME_LENGTH:
            return NAME_TOO_LONG
        found = self._decide(grant, server, tool)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # cheaper than LRU bookkeeping; refills from the hot names
            self._cache[key] = found
        return found

    def on_tool_change(self, server: str) -> ToolChangeRule:
        """What calls to a changed or new tool of `server` get: its `servers.<name>` setting, else the top level's."""
        return self.server_tool_change.get(server, self.tool_change)

    def person_for_token_sha256(self, digest: str) -> str | None:
        """The declared person whose API token hashes to `digest` (the REST API's and dashboard's login)."""
        person = self._people_by_token.get(digest)
        return person.name if person is not None else None

    def person_for_identity(self, value: str) -> str | None:
        """The declared person an identity provider's claim value names: their `sso`, else (an address) their `email`.

        What OIDC sign-in and an OAuth token's acting-for claim resolve through; None when nobody matches.
        """
        if not value:
            return None
        found = self._people_by_sso.get(value)
        if found is None and "@" in value:
            found = self._people_by_email.get(value.lower())
        return found

    def visible(self, grant: str, server: str, tool: str) -> bool:
        """Whether tools/list shows this tool to this grant (`list_tools`: callable | all).

        A rule with cases is callable if its own action or any case's is not deny: some calls go through."""
        found = self._lookup(grant, server, tool)
        verdict = found if isinstance(found, Verdict) else found.verdict
        if verdict.hide:
            return False
        if self.list_tools == "all" or verdict.action != "deny":
            return True
        return isinstance(found, CompiledRule) and any(case.verdict.action != "deny" for case in found.cases)

    def may_hold(self, grant: str, server: str, tool: str) -> bool:
        """Whether some call of this tool by this grant waits for a person (the rule's action, or any case's):
        such a tool is listed with task support."""
        found = self._lookup(grant, server, tool)
        verdict = found if isinstance(found, Verdict) else found.verdict
        if verdict.action == "require_approval":
            return True
        return isinstance(found, CompiledRule) and any(
            case.verdict.action == "require_approval" for case in found.cases
        )

    def _decide(self, grant: str, server: str, tool: str) -> Verdict | CompiledRule:
        hidden = self.hide.best(server, tool)
        if hidden is not None:
            return hidden.verdict
        layer = self.grants.get(grant)
        if layer is not None:
            rule = layer.rules.best(server, tool)
            if rule is not None:
                return rule if rule.cases else rule.verdict
        rule = self.rules.best(server, tool)
        if rule is not None:
            return rule if rule.cases else rule.verdict
        if layer is not None and layer.default is not None:
            return layer.default
        return self.default

    def candidates(self, grant: str, server: str, tool: str) -> Iterator[Candidate]:
        """Everything that matches, in decision order: the first one decides."""
        for rule in self.hide.matching(server, tool):
            yield Candidate("hide", rule, rule.verdict)
        layer = self.grants.get(grant)
        if layer is not None:
            for rule in layer.rules.matching(server, tool):
                yield Candidate(f"grants.{grant}", rule, rule.verdict)
        for rule in self.rules.matching(server, tool):
            yield Candidate("tools", rule, rule.verdict)
        if layer is not None and layer.default is not None:
            yield Candidate(f"grants.{grant}", None, layer.default)
        yield Candidate("default", None, self.default)
