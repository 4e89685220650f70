"""Policy evaluation rate for a 1,000-rule policy with globs, on one core.

Builds a policy of 1,000 rules (exact tool keys, exact `server/tool` keys, tool globs per server,
server globs per tool, glob/glob keys, per-grant overrides and a hide list; 10% of the rules carry
two `cases` with CEL conditions on the arguments), writes it to a temporary file and loads it with
`load_policy`, exactly as the service does. Then it times `Policy.evaluate(grant, server, tool,
arguments, now=...)` over a realistic mix of calls (mostly rule hits of every kind, some calls that
only the default answers, several grants; every call carries arguments, as the gateway passes them):

  - cold: the verdict cache disabled (`cache_size=0`), so every call walks the rule index;
  - churn: the default cache, but every call a name never seen before (a cache miss, plus the
    cache being cleared whenever it fills);
  - warm: the default cache, the same mix again (the steady state of a running gateway, where
    agents call the same few hundred tools over and over).

and the time `load_policy` takes for the file (parse, validate, tie checks, index). Before timing,
every verdict of the mix is checked against the slow reference (`Policy.candidates`, which tries
every rule), so the figures are for correct answers. Python runs this on one core.

Usage: python bench/bench_policy.py [--seconds 0.5] [--repeat 5] [--rules 1000] [--calls 20000] [--cases 0.1]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.policy import Policy, Verdict, load_policy  # noqa: E402
from service.policy.conditions import CallVariables, call_variables  # noqa: E402

TARGET = 100_000  # evaluations per second, one core
SERVERS = [f"srv{i:02d}" for i in range(20)]
GRANTS = ["agent", "ci-bot", "claude-desktop", "cursor", "intern"]
OVERRIDDEN = ["ci-bot", "intern"]
NOW = 1_796_126_400.0  # 2026-12-01T12:00:00Z
CASES = [
    {"when": "args.jobId.startsWith('prod-')", "action": "require_approval", "reason": "a production job"},
    {"when": "has(args.amount) && args.amount > 1000", "action": "deny", "reason": "too much"},
]
ARGUMENTS: list[dict] = [  # what calls send: one variant for each way through a rule with cases
    {"jobId": "prod-4711", "amount": 20, "note": "nightly cleanup"},
    {"jobId": "dev-0815", "amount": 5000, "note": "bulk"},
    {"jobId": "dev-0816", "amount": 20, "note": "retry"},
]
Call = tuple[str, str, str, dict]


def build_policy(total: int, cases_share: float = 0.1) -> tuple[dict, dict[str, list[tuple[str, str, str]]]]:
    """A policy with `total` rules and, per kind of rule, calls that hit it; `cases_share` of the
    rules (every 1/share-th of each kind; with 0.1, allow rules) carry the two CASES."""
    shares = {"tool": 0.30, "exact": 0.30, "tool_glob": 0.18, "server_glob": 0.10, "both_glob": 0.08}
    counts = {kind: int(total * share) for kind, share in shares.items()}
    counts["grant"] = total - sum(counts.values())  # ~4% per-grant overrides
    actions = ["allow", "allow", "allow", "deny", "require_approval"]
    tools: dict[str, dict] = {}
    hits: dict[str, list[tuple[str, str, str]]] = {kind: [] for kind in counts}
    every = round(1 / cases_share) if cases_share else 0

    def rule(i: int) -> dict:
        action = actions[i % len(actions)]
        body: dict = {"action": action}
        if every and i % every == 0:  # i % 10 == 0 is an allow rule (actions repeat every 5)
            body["cases"] = CASES
        if action == "allow" and i % 3 == 0:
            body["rate_limit"] = {"max": 60, "window": "minute"}
        if action == "deny":
            body["reason"] = f"rule {i} denies this"
        return body

    for i in range(counts["tool"]):  # `tool`: any server
        tools[f"tool-{i:04d}"] = rule(i)
        hits["tool"].append(("", SERVERS[i % len(SERVERS)], f"tool-{i:04d}"))
    for i in range(counts["exact"]):  # `server/tool`
        server = SERVERS[i % len(SERVERS)]
        tools[f"{server}/op-{i:04d}"] = rule(i)
        hits["exact"].append(("", server, f"op-{i:04d}"))
    for i in range(counts["tool_glob"]):  # `server/prefix-*`, `server/*-suffix`
        server = SERVERS[i % len(SERVERS)]
        if i % 2:
            tools[f"{server}/ns{i:04d}-*"] = rule(i)
            hits["tool_glob"].append(("", server, f"ns{i:04d}-list-items"))
        else:
            tools[f"{server}/*-ev{i:04d}"] = rule(i)
            hits["tool_glob"].append(("", server, f"get-ev{i:04d}"))
    for i in range(counts["server_glob"]):  # `srv1?/tool`, `srv*/tool`
        pattern = "srv1?" if i % 2 else "srv*"
        tools[f"{pattern}/admin-{i:04d}"] = rule(i)
        hits["server_glob"].append(("", "srv12", f"admin-{i:04d}"))
    for i in range(counts["both_glob"]):  # `srv0*/x0001-*`, `?y0001-*` (any server, no fixed first character)
        if i % 2:
            tools[f"srv0*/x{i:04d}-*"] = rule(i)
            hits["both_glob"].append(("", "srv03", f"x{i:04d}-run"))
        else:
            tools[f"?y{i:04d}-*"] = rule(i)
            hits["both_glob"].append(("", "srv17", f"zy{i:04d}-now"))
    grants: dict[str, dict] = {g: {"tools": {}} for g in OVERRIDDEN}
    grants["intern"]["default"] = "require_approval"
    for i in range(counts["grant"]):
        grant = OVERRIDDEN[(i // 2) % len(OVERRIDDEN)]
        server = SERVERS[i % len(SERVERS)]
        if i % 2:
            key, tool = f"tool-{i:04d}", f"tool-{i:04d}"
        else:
            key, tool = f"{server}/ns{i:04d}*", f"ns{i:04d}x"
        grants[grant]["tools"][key] = {"action": "deny" if i % 3 else "allow"}
        hits["grant"].append((grant, server, tool))
    policy = {
        "version": "1",
        "default": "deny",
        "default_reason": "not on the list",
        "hide": ["*/debug-*", "srv00/internal-*"],
        "redact": ["auth.token"],
        "tools": tools,
        "grants": grants,
    }
    return policy, hits


def call_mix(hits: dict[str, list[tuple[str, str, str]]], size: int, rng: random.Random) -> list[Call]:
    """`size` calls: 90% hit a rule (weighted like the rules), 10% fall to the default or hide list."""
    kinds = list(hits)
    weights = [len(hits[k]) for k in kinds]
    calls: list[Call] = []
    for _ in range(size):
        if rng.random() < 0.9:
            grant, server, tool = rng.choice(hits[rng.choices(kinds, weights)[0]])
        else:
            server = rng.choice(SERVERS)
            tool = rng.choice(["unknown-tool", "debug-dump", "internal-x", "read_file", "tool-x"])
            grant = ""
        calls.append((grant or rng.choice(GRANTS), server, tool, rng.choice(ARGUMENTS)))
    return calls


def rate(evaluate: Callable[..., object], calls: list[Call], seconds: float, repeat: int) -> float:
    """Best-of-`repeat` evaluations per second, each run looping over `calls` for about `seconds`."""
    loops = 1
    while True:  # calibrate
        started = time.perf_counter()
        for _ in range(loops):
            for grant, server, tool, arguments in calls:
                evaluate(grant, server, tool, arguments, now=NOW)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 4 or loops > 10_000:
            break
        loops *= 2
    loops = max(1, round(loops * seconds / elapsed))
    results = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        for _ in range(loops):
            for grant, server, tool, arguments in calls:
                evaluate(grant, server, tool, arguments, now=NOW)
        results.append(loops * len(calls) / (time.perf_counter() - started))
    return max(results)


def churn_rate(policy: Policy, calls: list[Call], repeat: int) -> float:
    """Default cache, every call a new (grant, server, tool): misses plus periodic cache clears."""
    results = []
    for r in range(repeat):
        unique = [(f"{grant}-{r}-{i}", server, tool, args) for i, (grant, server, tool, args) in enumerate(calls)]
        policy._cache.clear()
        gc.collect()
        started = time.perf_counter()
        for grant, server, tool, arguments in unique:
            policy.evaluate(grant, server, tool, arguments, now=NOW)
        results.append(len(unique) / (time.perf_counter() - started))
    return max(results)


def reference(policy: Policy, call: Call) -> Verdict:
    """The slow answer: the first of all matching candidates, its cases tried one by one."""
    grant, server, tool, arguments = call
    first = next(iter(policy.candidates(grant, server, tool)))
    if first.rule is None or not first.rule.cases:
        return first.verdict
    variables = call_variables(arguments, tool=tool, server=server, grant=grant, now=NOW)
    assert isinstance(variables, CallVariables), variables
    for case in first.rule.cases:
        if case.condition.evaluate(variables) is True:
            return case.verdict
    return first.rule.verdict


def check(policy: Policy, calls: list[Call]) -> int:
    """Every verdict of the mix equals the reference answer; returns how many calls a case decided."""
    decided_by_case = 0
    for call in calls:
        expected = reference(policy, call)
        actual = policy.evaluate(*call[:3], call[3], now=NOW)
        if actual != expected:
            raise AssertionError(f"{call}: evaluate gave {actual.rule!r}, the reference {expected.rule!r}")
        decided_by_case += ".cases[" in actual.rule
    return decided_by_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1000, help="rules in the policy (default 1000)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed run (default 0.5)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure; the best counts (default 5)")
    parser.add_argument("--calls", type=int, default=20_000, help="size of the call mix (default 20000)")
    parser.add_argument("--cases", type=float, default=0.1, help="share of rules with two cases (default 0.1)")
    args = parser.parse_args()

    rng = random.Random(20261124)
    document, hits = build_policy(args.rules, args.cases)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.json"
        path.write_text(json.dumps(document, indent=2))
        size_kb = path.stat().st_size / 1024
        load_times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            policy = load_policy(path)
            load_times.append(time.perf_counter() - started)
        cold_policy = load_policy(path, cache_size=0)

    calls = call_mix(hits, args.calls, rng)
    decided_by_case = check(cold_policy, calls)
    for call in calls:
        assert policy.evaluate(*call, now=NOW) == cold_policy.evaluate(*call, now=NOW), call
    policy._cache.clear()
    distinct = len({call[:3] for call in calls})
    by_action: dict[str, int] = {}
    for call in calls:
        action = cold_policy.evaluate(*call, now=NOW).action
        by_action[action] = by_action.get(action, 0) + 1
    with_cases = sum(1 for rule in cold_policy.rules.rules if rule.cases) + sum(
        1 for layer in cold_policy.grants.values() for rule in layer.rules.rules if rule.cases
    )
    case_calls = [call for call in calls if cold_policy._lookup(*call[:3]).__class__ is not Verdict]

    cold = rate(cold_policy.evaluate, calls, args.seconds, args.repeat)
    churn = churn_rate(policy, calls, args.repeat)
    for call in calls:  # warm up the cache
        policy.evaluate(*call, now=NOW)
    warm = rate(policy.evaluate, calls, args.seconds, args.repeat)

    per_kind = {
        kind: rate(
            cold_policy.evaluate,
            [(g or "agent", sv, t, ARGUMENTS[i % 3]) for i, (g, sv, t) in enumerate(kind_hits)],
            args.seconds / 4,
            3,
        )
        for kind, kind_hits in hits.items()
    }
    misses = [(rng.choice(GRANTS), rng.choice(SERVERS), f"unlisted-{i}", ARGUMENTS[0]) for i in range(1000)]
    per_kind["default (no rule)"] = rate(cold_policy.evaluate, misses, args.seconds / 4, 3)
    if case_calls:
        per_kind["rule with cases"] = rate(cold_policy.evaluate, case_calls, args.seconds / 4, 3)

    kinds = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in hits.items())
    actions = ", ".join(f"{k} {v * 100 / len(calls):.0f}%" for k, v in sorted(by_action.items()))
    print(f"holdgate policy benchmark (Python {sys.version.split()[0]}, one core)")
    print(f"policy: {policy.rule_count} rules ({kinds}), {len(document['hide'])} hide entries, {size_kb:.0f} KiB")
    print(f"  {with_cases} rules ({with_cases * 100 / policy.rule_count:.0f}%) have two cases (CEL on the arguments)")
    print(f"call mix: {len(calls):,} calls, {distinct:,} distinct (grant, server, tool); verdicts: {actions}")
    print(
        f"  {len(case_calls):,} calls ({len(case_calls) * 100 / len(calls):.0f}%) meet a rule with cases; "
        f"a case decided {decided_by_case:,}"
    )
    print("verdicts checked against the reference matcher: all correct")
    print()
    print(f"load_policy:             {statistics.median(load_times) * 1000:8.1f} ms (median of {args.repeat})")
    print(f"evaluate, cold (no cache): {cold:>10,.0f} evals/s  ({1e9 / cold:6,.0f} ns/eval)  {verdict(cold)}")
    print(f"evaluate, cache churn:     {churn:>10,.0f} evals/s  ({1e9 / churn:6,.0f} ns/eval)  {verdict(churn)}")
    print(f"evaluate, warm cache:      {warm:>10,.0f} evals/s  ({1e9 / warm:6,.0f} ns/eval)  {verdict(warm)}")
    print("cold, by the kind of rule that decides:")
    for kind, value in per_kind.items():
        print(f"  {kind.replace('_', ' '):<18} {value:>10,.0f} evals/s  ({1e9 / value:6,.0f} ns/eval)")
    print(f"target: >= {TARGET:,} evals/s on one core")


def verdict(value: float) -> str:
    return f"ok ({value / TARGET:.1f}x target)" if value >= TARGET else f"BELOW TARGET ({value / TARGET:.2f}x)"


if __name__ == "__main__":
    main()
