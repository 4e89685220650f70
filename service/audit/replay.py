"""Replay a candidate policy on the audited calls: what would it have changed?

`replay(session, candidate, flt)` streams the audit's call records in time order (in batches, never the
whole history in memory), asks the candidate for each call's verdict with the arguments as recorded
(`service.policy.partial.decide`: a verdict that depends on a redacted value is *undecidable*, never
guessed), replays the candidate's rate limits in the same order with the recorded times as the clock
(`service.policy.limits.MemoryWindows`, the limits' own logic in memory), and returns a `ReplayReport`:
counts by (recorded verdict -> candidate verdict) and by rule, a few example calls of each change, the
undecidable calls and why, and the refusals the candidate's limits would have caused. The CLI
(`holdgate policy replay`) and the dashboard's Rules page show the same report.

What counts as the recorded verdict (`recorded_action`): the action the call met live, from its audit
record: `allow` (allowed), `deny` (denied by the policy), `require_approval` (held, whatever a person or
the timeout then decided), `rate_limited`. Records that are not tools/calls of an agent are left out:
decision events (an approval that lapsed; they have no duration) and calls refused at the edge before
any policy (a tool name holdgate cannot store; counted as `skipped`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit.service import UNRECORDABLE
from service.models import AuditEvent
from service.policy import Policy, Verdict, load_policy
from service.policy.limits import MemoryWindows, scope_key
from service.policy.partial import RecordedArguments, Undecided, decide_rule

EDGE_REFUSAL = "refused at the edge: "
"""How the reason of a call refused before any policy begins (`service.gateway.proxy`)."""
ACTIONS = ("allow", "require_approval", "rate_limited", "deny")
UNDECIDABLE = "undecidable"
EXAMPLES = 3
"""Example calls kept for each change (and each undecidable rule)."""
BATCH = 5000
CANDIDATE_CACHE_SIZE = 500_000
"""Verdicts the candidate keeps per (grant, server, tool): a history holds far more distinct names than live
traffic does in a while, and the default cache (100,000), cleared whenever full, would miss on every row."""


def load_candidate(path: Path) -> Policy:
    """The candidate policy file, compiled as the service would (ConfigError naming the file and the place)."""
    return load_policy(path, cache_size=CANDIDATE_CACHE_SIZE)


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which audited calls to replay: `since <= ts < until`, optionally one grant or server."""

    since: datetime | None = None
    until: datetime | None = None
    grant: str | None = None
    server: str | None = None


@dataclass(frozen=True, slots=True)
class ExampleCall:
    """One replayed call, as shown beside a change: the record and both verdicts."""

    id: int
    ts: datetime
    grant: str
    server: str
    tool: str
    arguments: Any
    recorded: str
    recorded_rule: str | None
    candidate: str
    candidate_rule: str
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts.isoformat(),
            "grant": self.grant,
            "server": self.server,
            "tool": self.tool,
            "arguments": self.arguments,
            "recorded": self.recorded,
            "recorded_rule": self.recorded_rule,
            "candidate": self.candidate,
            "candidate_rule": self.candidate_rule,
            "reason": self.reason,
        }


@dataclass
class LimitRefusals:
    """The calls one counter of the candidate would have refused."""

    counter: str
    refused: int = 0
    first: datetime | None = None
    last: datetime | None = None
    examples: list[ExampleCall] = field(default_factory=list)


@dataclass
class ReplayReport:
    """What the candidate would have changed on the replayed calls (`to_dict` is the `--json` document)."""

    candidate_path: str
    candidate_version: str
    filter: ReplayFilter
    replayed: int = 0
    skipped: int = 0
    """Calls refused at the edge, before any policy: the candidate would not see them either."""
    first: datetime | None = None
    last: datetime | None = None
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(recorded, candidate) -> calls, unchanged pairs included."""
    by_rule: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(candidate rule, recorded, candidate) -> calls, changes only."""
    examples: dict[tuple[str, str], list[ExampleCall]] = field(default_factory=dict)
    undecidable: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(rule, case location, reason) -> calls."""
    undecidable_examples: dict[tuple[str, str, str], list[ExampleCall]] = field(default_factory=dict)
    limits: dict[str, LimitRefusals] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(count for (before, after), count in self.transitions.items() if before != after)

    def to_dict(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "candidate": {"path": self.candidate_path, "version": self.candidate_version},
            "filter": {
                "since": when(self.filter.since),
                "until": when(self.filter.until),
                "grant": self.filter.grant,
                "server": self.filter.server,
            },
            "replayed": self.replayed,
            "skipped_edge_refusals": self.skipped,
            "first_call": when(self.first),
            "last_call": when(self.last),
            "changed": self.changed,
            "undecidable": sum(self.undecidable.values()),
            "transitions": [
                {
                    "recorded": before,
                    "candidate": after,
                    "calls": count,
                    "examples": [e.to_dict() for e in self.examples.get((before, after), [])],
                }
                for (before, after), count in sorted(self.transitions.items(), key=lambda item: (-item[1], item[0]))
            ],
            "changes_by_rule": [
                {"rule": rule, "recorded": before, "candidate": after, "calls": count}
                for (rule, before, after), count in sorted(self.by_rule.items(), key=lambda item: (-item[1], item[0]))
            ],
            "undecidable_calls": [
                {
                    "rule": rule,
                    "case": location,
                    "reason": reason,
                    "calls": count,
                    "examples": [e.to_dict() for e in self.undecidable_examples.get((rule, location, reason), [])],
                }
                for (rule, location, reason), count in sorted(
                    self.undecidable.items(), key=lambda item: (-item[1], item[0])
                )
            ],
            "rate_limit_refusals": [
                {
                    "counter": refusals.counter,
                    "calls": refusals.refused,
                    "first": when(refusals.first),
                    "last": when(refusals.last),
                    "examples": [e.to_dict() for e in refusals.examples],
                }
                for refusals in sorted(self.limits.values(), key=lambda r: (-r.refused, r.counter))
            ],
        }


def recorded_action(verdict: str, decision_id: str | None, reason: str | None) -> str:
    """The action a call met live, from its audit record (see the module docstring)."""
    if verdict == "allowed":
        return "allow"
    if verdict == "rate_limited":
        return "rate_limited"
    if verdict == "denied" and decision_id is None and reason != "approvals unavailable":
        return "deny"
    return "require_approval"


_COLUMNS = (
    col(AuditEvent.id),
    col(AuditEvent.ts),
    col(AuditEvent.grant),
    col(AuditEvent.server),
    col(AuditEvent.tool),
    col(AuditEvent.arguments),
    col(AuditEvent.verdict),
    col(AuditEvent.rule),
    col(AuditEvent.reason),
    col(AuditEvent.decision_id),
    col(AuditEvent.detail),
)


class RecordedCall(NamedTuple):
    """The columns of an audit record a replay reads (a plain tuple: a million of them go by)."""

    id: int
    ts: datetime
    grant: str
    server: str
    tool: str
    arguments: str
    verdict: str
    rule: str | None
    reason: str | None
    decision_id: str | None
    detail: str | None


async def recorded_calls(
    session: AsyncSession, flt: ReplayFilter, *, batch: int = BATCH
) -> AsyncIterator[RecordedCall]:
    """The call records matching `flt`, oldest first (by time, then id), fetched `batch` rows at a time."""
    query = select(*_COLUMNS).where(col(AuditEvent.duration_ms).is_not(None))
    if flt.since is not None:
        query = query.where(col(AuditEvent.ts) >= flt.since)
    if flt.until is not None:
        query = query.where(col(AuditEvent.ts) < flt.until)
    if flt.grant is not None:
        query = query.where(col(AuditEvent.grant) == flt.grant)
    if flt.server is not None:
        query = query.where(col(AuditEvent.server) == flt.server)
    query = query.order_by(col(AuditEvent.ts), col(AuditEvent.id)).execution_options(yield_per=batch)
    result = await session.stream(query)
    make = RecordedCall._make
    async for partition in result.partitions(batch):
        for row in partition:
            yield make(row)


class Replayer:
    """Replays calls one at a time, in time order, into a `ReplayReport` (the limits remember what came before)."""

    def __init__(self, candidate: Policy, flt: ReplayFilter, *, examples: int = EXAMPLES) -> None:
        self.candidate = candidate
        self.report = ReplayReport(str(candidate.path), candidate.version, flt)
        self._windows = MemoryWindows()
        self._tainted: dict[tuple[str, str], float] = {}
        """(counter, scope key) -> until when an undecidable call may have used it."""
        self._examples = examples
        self._last: datetime | None = None

    def finish(self) -> ReplayReport:
        """The report, once every call has been fed."""
        if self._last is not None:
            self.report.last = _aware(self._last)
        return self.report

    def feed(self, row: RecordedCall) -> None:
        """One audit record, in time order."""
        report = self.report
        if row.verdict == "denied" and (row.reason or "").startswith(EDGE_REFUSAL):
            report.skipped += 1
            return
        ts = row.ts
        now = (ts - _NAIVE_EPOCH).total_seconds() if ts.tzinfo is None else ts.timestamp()  # SQLite: naive UTC
        report.replayed += 1
        if report.first is None:
            report.first = _aware(ts)
        self._last = ts
        recorded = recorded_action(row.verdict, row.decision_id, row.reason)
        found = self.candidate.decider(row.grant, row.server, row.tool)
        answer: Verdict | Undecided
        if isinstance(found, Verdict):
            answer = found
        else:  # a rule with cases: only now are the arguments read
            unrecordable = (row.detail or "").startswith(UNRECORDABLE)
            arguments = RecordedArguments.parse(row.arguments, unrecordable=unrecordable)
            answer = decide_rule(found, row.grant, row.server, row.tool, arguments, now=now, recorded_reason=row.reason)
        if isinstance(answer, Undecided):
            self._taint(answer, row.grant, now)
            self._undecidable(row, ts, recorded, answer.rule, answer.location, answer.reason)
            return
        action, reason = self._limited(answer, row.grant, now)
        if action == UNDECIDABLE:
            self._undecidable(row, ts, recorded, answer.rule, "limits", reason or "")
            return
        key = (recorded, action)
        report.transitions[key] += 1
        if recorded == action:
            return
        report.by_rule[(answer.rule, recorded, action)] += 1
        shown = report.examples.setdefault(key, [])
        if len(shown) < self._examples:
            shown.append(self._example(row, ts, recorded, action, answer.rule, reason or answer.reason))
        if action == "rate_limited":
            counter = (reason or "").removeprefix("counter ").split(";")[0]
            refusals = report.limits.setdefault(counter, LimitRefusals(counter))
            refusals.refused += 1
            refusals.first = refusals.first or _aware(ts)
            refusals.last = _aware(ts)
            if len(refusals.examples) < self._examples:
                refusals.examples.append(self._example(row, ts, recorded, action, answer.rule, reason))

    def _limited(self, verdict: Verdict, grant: str, now: float) -> tuple[str, str | None]:
        """The candidate's action once its limits have counted this call (in memory, recorded time as clock)."""
        if verdict.action == "deny" or not verdict.limits:
            return verdict.action, verdict.reason
        keys = [(limit.counter, scope_key(limit, grant)) for limit in verdict.limits]
        tainted = [counter for counter, scope in keys if self._tainted.get((counter, scope), -1.0) > now]
        if tainted:
            for limit in verdict.limits:
                key = (limit.counter, scope_key(limit, grant))
                self._tainted[key] = max(self._tainted.get(key, 0.0), now + limit.window_seconds)
            return UNDECIDABLE, (
                f"its rate limit counter {', '.join(sorted(set(tainted)))} may have been used by an earlier "
                "undecidable call in the window"
            )
        outcome = self._windows.consume(verdict.limits, grant=grant, now=now)
        if outcome.allowed:
            return verdict.action, verdict.reason
        retry = "never (max 0)" if outcome.retry_after is None else f"retry_after={outcome.retry_after:g}s"
        return "rate_limited", f"counter {outcome.counter}; {retry}"

    def _taint(self, answer: Undecided, grant: str, now: float) -> None:
        for verdict in answer.possible:
            if verdict.action == "deny":
                continue
            for limit in verdict.limits:
                key = (limit.counter, scope_key(limit, grant))
                self._tainted[key] = max(self._tainted.get(key, 0.0), now + limit.window_seconds)

    def _undecidable(self, row: Any, ts: datetime, recorded: str, rule: str, location: str, reason: str) -> None:
        report = self.report
        report.transitions[(recorded, UNDECIDABLE)] += 1
        key = (rule, location, reason)
        report.undecidable[key] += 1
        shown = report.undecidable_examples.setdefault(key, [])
        if len(shown) < self._examples:
            example = self._example(row, ts, recorded, UNDECIDABLE, rule, reason)
            shown.append(example)
            changes = report.examples.setdefault((recorded, UNDECIDABLE), [])
            if len(changes) < self._examples:
                changes.append(example)

    @staticmethod
    def _example(row: Any, ts: datetime, recorded: str, candidate: str, rule: str, reason: str | None) -> ExampleCall:
        try:
            arguments = json.loads(row.arguments)
        except (ValueError, RecursionError):
            arguments = None
        return ExampleCall(
            id=row.id,
            ts=_aware(ts),
            grant=row.grant,
            server=row.server,
            tool=row.tool,
            arguments=arguments,
            recorded=recorded,
            recorded_rule=row.rule,
            candidate=candidate,
            candidate_rule=rule,
            reason=reason,
        )


async def replay(
    session: AsyncSession,
    candidate: Policy,
    flt: ReplayFilter,
    *,
    examples: int = EXAMPLES,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Replay every audited call matching `flt` against `candidate`; see the module docstring."""
    replayer = Replayer(candidate, flt, examples=examples)
    async for row in recorded_calls(session, flt, batch=batch):
        replayer.feed(row)
        if progress is not None and replayer.report.replayed % 100_000 == 0:
            progress(replayer.report.replayed)
    return replayer.finish()


_NAIVE_EPOCH = datetime(1970, 1, 1)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def time_point(text: str, *, now: datetime) -> datetime:
    """`7d`, `12h`, `30m`, `90s`, `2w` (that long before `now`) or an ISO 8601 time (UTC unless it says)."""
    value = text.strip()
    if value[-1:] in _AGE_UNITS and value[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(value[:-1]) * _AGE_UNITS[value[-1]])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an age (7d, 12h, 30m, 90s, 2w) nor a time (2026-11-24T12:00, read as UTC)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def describe(report: ReplayReport) -> str:
    """The report as text, for the command line."""
    data = report.to_dict()
    span = f"{data['first_call'] or '-'} .. {data['last_call'] or '-'}"
    lines = [
        f"candidate {data['candidate']['path']} (version {data['candidate']['version']})",
        f"replayed {report.replayed} call(s), {span}"
        + (f"; {report.skipped} refused at the edge left out" if report.skipped else ""),
        f"would change {report.changed} call(s); undecidable: {data['undecidable']}",
        "",
        "recorded -> candidate              calls",
    ]
    for row in data["transitions"]:
        mark = "" if row["recorded"] == row["candidate"] else "  *"
        lines.append(f"  {row['recorded']:>16} -> {row['candidate']:<16} {row['calls']:>7}{mark}")
    if data["changes_by_rule"]:
        lines += ["", "changes by candidate rule"]
        for row in data["changes_by_rule"]:
            lines.append(f"  {row['rule']}: {row['recorded']} -> {row['candidate']}: {row['calls']}")
    for row in data["transitions"]:
        if row["recorded"] == row["candidate"] or not row["examples"]:
            continue
        lines += ["", f"examples {row['recorded']} -> {row['candidate']}"]
        lines += [_example_line(example) for example in row["examples"]]
    if data["undecidable_calls"]:
        lines += ["", "undecidable (depends on what the audit does not keep)"]
        for row in data["undecidable_calls"]:
            lines.append(f"  {row['rule']} {row['case']}: {row['calls']} call(s): {row['reason']}")
    if data["rate_limit_refusals"]:
        lines += ["", "rate-limit refusals the candidate's limits would have caused (replayed in time order)"]
        for row in data["rate_limit_refusals"]:
            lines.append(f"  {row['counter']}: {row['calls']} call(s), {row['first']} .. {row['last']}")
    return "\n".join(lines)


def _example_line(example: dict[str, Any]) -> str:
    arguments = json.dumps(example["arguments"], ensure_ascii=False, sort_keys=True)
    if len(arguments) > 120:
        arguments = arguments[:119] + "…"
    why = f" ({example['reason']})" if example["reason"] else ""
    return (
        f"  #{example['id']} {example['ts']} {example['grant']} {example['server']}/{example['tool']} {arguments}: "
        f"rule {example['recorded_rule']} -> {example['candidate_rule']}{why}"
    )
