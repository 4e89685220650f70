"""Deciding a call whose arguments are partly unknown: the audit's record of it, for a replay.

The audit keeps each call's arguments with secrets replaced by `[redacted]` (`redaction.py`). A
candidate policy replayed on that history (`service.audit.replay`) must never guess what a redacted
value was: `decide` answers the candidate's `Verdict` when it does not depend on an unknown value,
and `Undecided` (saying which case and which argument) when it may.

How, soundly:
  1. a rule without `cases` (or a verdict found without one) never reads arguments: decided;
  2. for each case in order, `service.policy.reads` says which argument paths its condition reads. A
     condition that reads no unknown path is evaluated on the recorded arguments (what it reads is
     exactly what the gateway saw);
  3. a condition that reads an unknown path *through* it (`args.auth.token == 'x'` with `auth.token`
     redacted) is evaluated with the unknown keys removed: every read of them is then an error, and
     CEL's `&&`, `||` and `?:` absorb an error only when the other side decides alone (`false && e`),
     so a true or false answer holds whatever the value was; an error means "it depends": undecidable;
  4. anything else that touches an unknown value (the map holding it used whole: `size(args.auth)`,
     `args.auth.exists(...)`, `args.?token`) is undecidable.

A redacted value is taken to be a value a condition can read (a string, a number, ...): the audit cannot
say whether a secret was NaN. Values the audit had to rewrite to store them (`[number: NaN]`, a lone
surrogate spelt `\\udXXX`) make every rule with cases deny the call live (fail closed); since the same
text could have been sent as is, both readings are tried and the call is decided only if they agree.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from service.policy.conditions import CallVariables, ConditionFailed, call_variables
from service.policy.engine import CompiledCase, CompiledRule, Policy
from service.policy.reads import Access, Path, argument_reads, is_prefix, overlaps
from service.policy.redaction import REDACTED, TOO_DEEP
from service.policy.verdict import Verdict

_NUMBER_MARKERS = {"[number: NaN]": math.nan, "[number: Infinity]": math.inf, "[number: -Infinity]": -math.inf}
_SPELT_SURROGATE = re.compile(r"\\ud[89a-f][0-9a-f]{2}")
ARGUMENTS_UNCHECKABLE = "the call's arguments cannot be checked by a condition"
"""How the reason of a call denied because its arguments could not go to CEL begins (`conditions.py`)."""


@dataclass(frozen=True, slots=True)
class Undecided:
    """The candidate's answer depends on a value the audit does not have."""

    rule: str
    """The deciding rule's label (as a `Verdict.rule` would name it)."""
    location: str
    """The case whose condition could not be decided (`tools.x.cases[1]`)."""
    reason: str
    possible: tuple[Verdict, ...] = ()
    """Every verdict the call could have had from that case on (for the limits a replay must treat as unknown)."""


@dataclass(frozen=True, slots=True)
class RecordedArguments:
    """A call's arguments as the audit recorded them, with what is unknown about them."""

    values: dict[str, Any]
    unknown: tuple[Path, ...] = ()
    """Paths whose values were redacted (the keys are there, the values are not)."""
    all_unknown: bool = False
    """Nothing is known of the arguments (an unrecordable record, or text that no longer parses)."""
    too_deep: bool = False
    """The call's arguments were nested too deeply to record: any condition denied it live."""
    respelt: bool = False
    """Some value is a storage spelling (`[number: NaN]`, `\\udXXX`) that may stand for something CEL refuses."""
    _removed: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, text: str | None, *, unrecordable: bool = False) -> RecordedArguments:
        """From the audit's `arguments` column (`unrecordable`: a minimal record, whose arguments were not kept)."""
        if unrecordable or text is None:
            return cls({}, all_unknown=True)
        plain = REDACTED not in text and "[number: " not in text and "\\ud" not in text
        try:
            values = json.loads(text)
        except RecursionError:  # nested far deeper than any condition reads (64 levels): denied live by any case
            return cls({}, too_deep=True)
        except ValueError:
            return cls({}, all_unknown=True)
        if not isinstance(values, dict):
            return cls({}, all_unknown=True)
        if values.get(TOO_DEEP) is True and len(values) == 1:
            return cls(values, too_deep=True)
        if plain:  # the common case: nothing redacted or respelt anywhere in the text
            return cls(values)
        unknown: list[Path] = []
        try:
            respelt = _scan(values, (), unknown, 0)
        except RecursionError:  # far deeper than any condition reads (64 levels): denied live by any case
            return cls(values, too_deep=True)
        return cls(values, tuple(unknown), respelt=respelt)

    @property
    def fully_known(self) -> bool:
        return not (self.unknown or self.all_unknown or self.too_deep or self.respelt)

    def without_unknown(self) -> dict[str, Any]:
        """A copy with every unknown key taken out (reading one is then an error)."""
        if self._removed is None:
            removed = copy.deepcopy(self.values)
            for path in self.unknown:
                node: Any = removed
                for step in path[:-1]:
                    node = node[step]
                node.pop(path[-1], None)
            object.__setattr__(self, "_removed", removed)
        assert self._removed is not None
        return self._removed

    def as_refused(self) -> dict[str, Any]:
        """The reading in which each storage spelling stands for the value CEL refuses (NaN, a lone surrogate)."""
        return _unspell(self.values)


def decide(
    policy: Policy,
    grant: str,
    server: str,
    tool: str,
    arguments: RecordedArguments,
    *,
    now: float,
    recorded_reason: str | None = None,
) -> Verdict | Undecided:
    """The verdict `policy` gives the recorded call, or `Undecided` when it depends on what the audit lacks.

    `recorded_reason` is the reason the audit kept: one saying the arguments could not go to CEL tells
    that the live call held such a value, whatever was redacted."""
    found = policy.decider(grant, server, tool)
    if isinstance(found, Verdict):
        return found
    return decide_rule(found, grant, server, tool, arguments, now=now, recorded_reason=recorded_reason)


def decide_rule(
    rule: CompiledRule,
    grant: str,
    server: str,
    tool: str,
    arguments: RecordedArguments,
    *,
    now: float,
    recorded_reason: str | None = None,
) -> Verdict | Undecided:
    """`decide` once the policy found that `rule`, a rule with cases, decides the call."""
    if arguments.too_deep or (recorded_reason or "").startswith(ARGUMENTS_UNCHECKABLE):
        reason = "nested too deeply to record" if arguments.too_deep else "as recorded"
        return rule.failed(rule.verdict.rule, ConditionFailed(f"{ARGUMENTS_UNCHECKABLE} ({reason})"))
    if arguments.fully_known:
        return rule.decide(arguments.values, grant, server, tool, now)[0]
    answer = _decide_partly_known(rule, arguments, grant, server, tool, now)
    if not arguments.respelt or isinstance(answer, Undecided):
        return answer
    refused = rule.decide(arguments.as_refused(), grant, server, tool, now)[0]
    if (refused.action, refused.rule, refused.limits) == (answer.action, answer.rule, answer.limits):
        return answer  # the same action by the same rule either way (the reasons' wording may differ)
    return Undecided(
        rule.verdict.rule,
        rule.location,
        "an argument the audit stored as `[number: …]` or `\\udXXX` may have been NaN, an infinite number or a lone "
        "surrogate (which every condition refuses) or that very text",
        possible=(answer, refused),
    )


def _decide_partly_known(
    rule: CompiledRule, arguments: RecordedArguments, grant: str, server: str, tool: str, now: float
) -> Verdict | Undecided:
    recorded = call_variables(arguments.values, tool=tool, server=server, grant=grant, now=now)
    if isinstance(recorded, ConditionFailed):  # a known value CEL refuses: denied live whatever was redacted
        return rule.failed(rule.verdict.rule, recorded)
    removed: CallVariables | ConditionFailed | None = None
    for index, case in enumerate(rule.cases):
        reads = argument_reads(case.condition)
        unknown = _unknown_reads(reads, arguments)
        if not unknown:
            outcome = case.condition.evaluate(recorded)
        elif arguments.all_unknown or not _errors_on_unknown(reads, arguments.unknown):
            return _undecided(rule, index, case, unknown)
        else:
            if removed is None:
                removed = call_variables(arguments.without_unknown(), tool=tool, server=server, grant=grant, now=now)
            if isinstance(removed, ConditionFailed):
                return _undecided(rule, index, case, unknown)
            outcome = case.condition.evaluate(removed)
            if not isinstance(outcome, bool):
                return _undecided(rule, index, case, unknown)
        if outcome is True:
            return case.verdict
        if outcome is not False:
            return rule.failed(case.verdict.rule, outcome)
    return rule.verdict


def _unknown_reads(reads: tuple[Access, ...], arguments: RecordedArguments) -> list[str]:
    """The unknown argument paths (as `args.a.b`) the condition's outcome may depend on."""
    if arguments.all_unknown:
        return ["args"] if reads else []
    hits: list[str] = []
    for path in arguments.unknown:
        for access in reads:
            if access.kind == "value" and overlaps(access.path, path):
                hits.append(_spell(path))
                break
            if access.kind == "presence" and is_prefix(path, access.path[:-1]):
                hits.append(_spell(path))
                break
    return hits


def _errors_on_unknown(reads: tuple[Access, ...], unknown: tuple[Path, ...]) -> bool:
    """Whether, with the unknown keys removed, every read that touches one fails instead of seeing a changed map."""
    for access in reads:
        for path in unknown:
            if access.kind == "value":
                if overlaps(access.path, path) and not is_prefix(path, access.path):
                    return False  # the map holding the unknown is read whole: removing the key changes it silently
            elif len(access.path) == len(path) and overlaps(access.path, path):
                return False  # has() of the unknown key itself: true, but false once removed
    return True


def _undecided(rule: CompiledRule, index: int, case: CompiledCase, unknown: list[str]) -> Undecided:
    which = ", ".join(unknown)
    possible = (*(later.verdict for later in rule.cases[index:]), rule.verdict)
    return Undecided(
        rule.verdict.rule,
        case.location,
        f"condition `{case.condition.source}` reads {which}, which the audit does not keep (redacted)",
        possible=possible,
    )


def _spell(path: Path) -> str:
    text = "args"
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if str(step).isidentifier() else f"[{step!r}]"
    return text


def _scan(value: Any, path: Path, unknown: list[Path], depth: int) -> bool:
    """Collect the redacted paths under `value`; True if a storage spelling is found."""
    respelt = False
    if isinstance(value, dict):
        for key, item in value.items():
            if item == REDACTED:
                unknown.append((*path, key))
            else:
                respelt |= _scan(item, (*path, key), unknown, depth + 1)
            if isinstance(key, str) and _SPELT_SURROGATE.search(key):
                respelt = True
    elif isinstance(value, list):
        for index, item in enumerate(value):
            respelt |= _scan(item, (*path, index), unknown, depth + 1)
    elif isinstance(value, str):
        return value in _NUMBER_MARKERS or _SPELT_SURROGATE.search(value) is not None
    return respelt


def _unspell(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unspell(key): _unspell(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unspell(item) for item in value]
    if isinstance(value, str):
        if value in _NUMBER_MARKERS:
            return _NUMBER_MARKERS[value]
        if _SPELT_SURROGATE.search(value):
            return _SPELT_SURROGATE.sub(lambda m: chr(int(m.group(0)[2:], 16)), value)
    return value
