"""Which CEL library for rule conditions: speed, conformance, robustness and footprint, measured.

Compares the Python CEL libraries a policy's `cases[].when` could run on:

  - `cel-expr-python` (import `cel_expr_python.cel`): Google's bindings to the C++ CEL runtime
    (cel-expr/cel-python), with the type checker;
  - `common-expression-language` (import `cel`): bindings to the Rust `cel` crate (PyO3);
  - `cel-python` (import `celpy`): a pure-Python interpreter (lark parser), run with its default
    interpreted runner and with its compiled runner (which transpiles the AST to Python);

and, first, holdgate's own `service.policy.conditions` (the chosen library behind the checks that
make a call's odd values fail closed), so its cost and behaviour sit next to the raw libraries.

For each it prints four tables you can paste into a note:

  1. speed: each expression compiled once, then evaluated on one core with a fresh Python dict
     activation per call (`args` as a client sends it, plus `tool`, `server`, `grant`, `now`),
     as the gateway will do; evaluations per second, best of `--repeat` runs of `--seconds`;
  2. conformance: a battery of CEL spec behaviours (string functions, `has()`, `in`, the
     `exists`/`all`/`exists_one`/`filter`/`map` macros, int/uint/double semantics and overflow,
     timestamps and durations against `now`, errors for missing keys and wrong types, the
     commutative `&&`/`||` that absorb an error) with the answer the spec gives, and how many each
     library gets right (an "error" expectation is met by a compile error or an evaluation error);
  3. robustness: values a client can put in the arguments (integers beyond int64/uint64, NaN,
     NUL, a lone surrogate, nesting 1,000 and 10,000 deep), each probed in a child process so a
     crash is seen as a crash;
  4. footprint: installed size of the distribution and what it pulls in.

Libraries that are not installed are reported as such. Takes a few minutes.

Usage: python bench/bench_cel.py [--seconds 0.3] [--repeat 3] [--skip-robustness]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOW = dt.datetime(2026, 12, 1, 12, 30, tzinfo=dt.UTC)  # a Tuesday
ERROR = object()  # expectation: the expression must fail (at compile time or at run time)


@dataclass(frozen=True)
class Library:
    """One CEL library behind a uniform compile/evaluate interface."""

    label: str
    distribution: str
    compile: Callable[[str], Any]
    evaluate: Callable[[Any, dict[str, Any]], tuple[bool, Any]]  # (is_error, python value)


def cel_expr_python() -> Library:
    from cel_expr_python import cel

    env = cel.NewEnv(
        variables={
            "args": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
            "tool": cel.Type.STRING,
            "server": cel.Type.STRING,
            "grant": cel.Type.STRING,
            "now": cel.Type.TIMESTAMP,
        }
    )
    error_type = cel.Type.ERROR

    def evaluate(program: Any, activation: dict[str, Any]) -> tuple[bool, Any]:
        value = program.eval(data=activation)
        if value.type() == error_type:
            return True, value.value()
        return False, value.value()

    return Library("cel-expr-python", "cel-expr-python", env.compile, evaluate)


def common_expression_language() -> Library:
    import cel

    def evaluate(program: Any, activation: dict[str, Any]) -> tuple[bool, Any]:
        return False, program.execute(activation)

    return Library("common-expression-language", "common-expression-language", cel.compile, evaluate)


def cel_python(compiled: bool) -> Library:
    import celpy
    from celpy import celtypes
    from celpy.evaluation import CELEvalError

    runner = celpy.CompiledRunner if compiled else celpy.InterpretedRunner

    def compile_(text: str) -> Any:
        # One Environment per expression: in 0.5.0 the compiled runner fails with "'Tree' object has
        # no attribute 'checked_exception'" on the second program an Environment makes.
        env = celpy.Environment(runner_class=runner)
        return env.program(env.compile(text))

    def evaluate(program: Any, activation: dict[str, Any]) -> tuple[bool, Any]:
        # celpy needs its own value types: converting the call's data is part of every evaluation.
        context = {
            "args": celpy.json_to_cel(activation["args"]),
            "tool": celtypes.StringType(activation["tool"]),
            "server": celtypes.StringType(activation["server"]),
            "grant": celtypes.StringType(activation["grant"]),
            "now": celtypes.TimestampType(activation["now"]),
        }
        value = program.evaluate(context)
        return isinstance(value, CELEvalError), value

    label = "cel-python (compiled runner)" if compiled else "cel-python (interpreted)"
    return Library(label, "cel-python", compile_, evaluate)


def holdgate_conditions() -> Library:
    """`service.policy.conditions`: cel-expr-python behind holdgate's checks of the call's values."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from service.policy.conditions import ConditionFailed, call_variables, compile_condition

    def evaluate(condition: Any, activation: dict[str, Any]) -> tuple[bool, Any]:
        variables = call_variables(
            activation["args"],
            tool=activation["tool"],
            server=activation["server"],
            grant=activation["grant"],
            now=activation["now"].timestamp(),
        )
        if isinstance(variables, ConditionFailed):
            return True, variables.reason
        outcome = condition.evaluate(variables)
        return isinstance(outcome, ConditionFailed), outcome

    return Library("holdgate conditions (on cel-expr-python)", "cel-expr-python", compile_condition, evaluate)


FACTORIES: list[tuple[str, Callable[[], Library]]] = [
    ("holdgate", holdgate_conditions),
    ("cel-expr-python", cel_expr_python),
    ("common-expression-language", common_expression_language),
    ("cel-python", lambda: cel_python(compiled=False)),
    ("cel-python-compiled", lambda: cel_python(compiled=True)),
]


def activation(args: dict[str, Any], grant: str = "ci-bot") -> dict[str, Any]:
    return {"args": args, "tool": "cancel-async-job", "server": "jobs", "grant": grant, "now": NOW}


CALL_ARGS: dict[str, Any] = {
    "jobId": "prod-42",
    "amount": 150,
    "price": 150.5,
    "count": 3,
    "flag": True,
    "none": None,
    "recipients": ["a@corp.example", "b@corp.example", "c@corp.example", "d@elsewhere.example"],
    "tags": ["a", "b"],
    "nested": {"inner": {"deep": 1}},
    "deadline": "2026-11-30T00:00:00Z",
}
ODD_ARGS: dict[str, Any] = {**CALL_ARGS, "nul": "a\x00b"}  # for the cases named `args.nul` only

SPEED = [
    "args.jobId.startsWith('prod-')",
    "args.amount > 100 && grant == 'ci-bot'",
    "size(args.recipients) > 3",
    "args.recipients.exists(r, !r.endsWith('@corp.example'))",
    "now.getHours() >= 9 && now.getHours() < 18",
]

# (expression, expected): the answer the CEL spec (cel-spec langdef) gives with CALL_ARGS and NOW.
BATTERY: list[tuple[str, Any]] = [
    # strings
    ("'prod-42'.startsWith('prod-')", True),
    ("'report.pdf'.endsWith('.pdf')", True),
    ("'hello world'.contains('o w')", True),
    ("'prod-42'.matches('^prod-[0-9]+$')", True),
    ("size('héllo') == 5", True),  # code points, not bytes
    ("'abc' + 'def' == 'abcdef'", True),
    ("'a' < 'b'", True),
    ("'Prod-1'.startsWith('prod-')", False),
    ("args.jobId.startsWith('prod-')", True),
    ("string(42) == '42'", True),
    ("'abc'[0]", ERROR),  # strings are not indexable
    ("'\\u00e9' == 'é'", True),
    ("size(args.nul) == 3", True),  # a NUL inside a client's string is an ordinary character
    ("args.nul.endsWith('b')", True),
    # has(), in, maps and lists
    ("has(args.jobId)", True),
    ("has(args.missing)", False),
    ("has(args.nested.inner)", True),
    ("'jobId' in args", True),
    ("'a' in ['a', 'b']", True),
    ("3 in [1, 2]", False),
    ("'k' in {'k': 1}", True),
    ("args.nested.inner.deep == 1", True),
    ("args.tags[1] == 'b'", True),
    ("size(args.recipients) > 3", True),
    ("args.recipients.size() == 4", True),
    ("args.none == null", True),
    ("args.flag", True),
    ("{'a': 1}['b']", ERROR),
    ("[1][5]", ERROR),
    # macros
    ("[1, 2, 3].exists(x, x > 2)", True),
    ("[1, 2, 3].all(x, x > 0)", True),
    ("[1, 2, 3].exists_one(x, x > 2)", True),
    ("[1, 2, 3].filter(x, x > 1) == [2, 3]", True),
    ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", True),
    ("args.recipients.all(r, r.endsWith('@corp.example'))", False),
    ("args.recipients.exists(r, !r.endsWith('@corp.example'))", True),
    ("{'a': 1, 'b': 2}.all(k, k in ['a', 'b'])", True),
    ("[].all(x, x > 0)", True),
    ("[].exists(x, true)", False),
    # int, uint, double
    ("7 / 2 == 3", True),
    ("-7 / 2 == -3", True),
    ("-7 % 3 == -1", True),
    ("9223372036854775807 + 1", ERROR),
    ("-9223372036854775808 - 1", ERROR),
    ("1 / 0", ERROR),
    ("1 % 0", ERROR),
    ("1u + 2u == 3u", True),
    ("0u - 1u", ERROR),
    ("18446744073709551615u + 1u", ERROR),
    ("1 + 1.0", ERROR),  # no mixed-type arithmetic
    ("1 + 1u", ERROR),
    ("dyn(1) == 1.0", True),  # heterogeneous numeric equality
    ("dyn(1) == 1u", True),
    ("args.amount > 100", True),
    ("args.price > 100", True),  # double against an int literal
    ("args.count == 3", True),
    ("args.nested.inner.deep + 1 == 2", True),  # a JSON integer is an int
    ("1.0 / 0.0 > 1e308", True),  # IEEE: infinity, not an error
    ("double('NaN') != double('NaN')", True),
    ("int('42') == 42", True),
    ("int(2.9) == 2", True),
    ("int('4x')", ERROR),
    ("int(1e19)", ERROR),
    ("uint(-1)", ERROR),
    ("type(1) == int && type(1u) == uint && type(1.0) == double", True),
    # timestamps and durations
    ("now > timestamp('2020-01-01T00:00:00Z')", True),
    ("now < timestamp('2020-01-01T00:00:00Z')", False),
    ("now == timestamp('2026-12-01T12:30:00Z')", True),
    ("now.getHours() == 12", True),
    ("now.getHours('Europe/Paris') == 13", True),
    ("now.getDayOfWeek() == 2", True),
    ("now.getFullYear() == 2026", True),
    ("now - timestamp('2026-12-01T12:00:00Z') == duration('30m')", True),
    ("now + duration('1h') > now", True),
    ("duration('1h') > duration('30m')", True),
    ("timestamp(args.deadline) < now", True),
    ("timestamp('not a time')", ERROR),
    # errors, and logic that absorbs them
    ("args.missing == 'x'", ERROR),
    ("args.missing", ERROR),
    ("args.jobId + 1", ERROR),
    ("args.missing.startsWith('a')", ERROR),
    ("args.jobId == 1", False),  # heterogeneous equality: different types are unequal, not an error
    ("true && 'a'", ERROR),
    ("false && args.missing == 'x'", False),
    ("args.missing == 'x' && false", False),  # && and || are commutative over errors
    ("true || args.missing == 'x'", True),
    ("args.missing == 'x' || true", True),
    ("args.missing == 'x' || false", ERROR),
    ("(true ? 1 : args.missing) == 1", True),
    ("!has(args.limit) || args.limit > 10", True),
    ("null == null", True),
    ("b'abc' == bytes('abc')", True),
    ("size(b'\\xff') == 1", True),
]


def run_case(library: Library, expression: str, expected: Any) -> tuple[bool, str]:
    """(passed, what happened) for one battery case."""
    try:
        program = library.compile(expression)
    except Exception as exc:
        return expected is ERROR, f"compile error: {str(exc).splitlines()[0][:80]}"
    args = ODD_ARGS if "args.nul" in expression else CALL_ARGS
    try:
        is_error, value = library.evaluate(program, activation(dict(args)))
    except Exception as exc:
        return expected is ERROR, f"eval error: {str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__}"
    if is_error:
        return expected is ERROR, f"eval error: {str(value)[:80]}"
    if expected is ERROR:
        return False, f"no error, got {value!r}"
    if isinstance(expected, bool):
        is_bool = isinstance(value, bool) or type(value).__name__ == "BoolType"
        return is_bool and bool(value) is expected, repr(value)
    return value == expected, repr(value)


def measure_speed(library: Library, expression: str, seconds: float, repeat: int) -> tuple[float, float] | str:
    """(evaluations per second, compile milliseconds) for one expression, or why it could not run."""
    start = time.perf_counter()
    try:
        program = library.compile(expression)
    except Exception as exc:
        return f"compile fails ({type(exc).__name__})"
    compile_ms = (time.perf_counter() - start) * 1000
    is_error, value = library.evaluate(program, activation(dict(CALL_ARGS)))
    if is_error or (value is not True and type(value).__name__ != "BoolType"):
        return f"wrong answer ({str(value)[:30]})"
    evaluate = library.evaluate
    best = 0.0
    for _ in range(repeat):
        # CPU time of this (single-threaded) process: the figure is per core, and other work on a
        # shared machine does not count against the library.
        count = 0
        start = time.process_time()
        deadline = start + seconds
        while True:
            for _ in range(200):
                # A new activation per call, as each tool call brings its own arguments.
                evaluate(program, {"args": dict(CALL_ARGS), "tool": "t", "server": "s", "grant": "ci-bot", "now": NOW})
            count += 200
            now = time.process_time()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best, compile_ms


SAME = "has(args.v) && args.v == args.v"
PROBES: dict[str, tuple[str, str]] = {  # row: (Python value, expression)
    "int 2**64": ("2**64", SAME),
    "int -2**63-1": ("-2**63 - 1", SAME),
    "int 10**400": ("10**400", SAME),
    "NaN": ("float('nan')", SAME),
    "NaN, `args.v > 1000`": ("float('nan')", "args.v > 1000"),
    "`'a\\x00b'`, `size(args.v) == 3`": ("'a\\x00b'", "size(args.v) == 3"),
    "lone surrogate": ("'\\ud800'", SAME),
    "nested 1,000": ("nest(1000)", SAME),
    "nested 10,000": ("nest(10000)", SAME),
}


def probe(factory_key: str, value_source: str, expression: str) -> None:
    """Child-process side of the robustness table: one client value in `args.v`, one expression."""

    def nest(depth: int) -> Any:
        value: Any = "x"
        for _ in range(depth):
            value = [value]
        return value

    value = eval(value_source, {"nest": nest})
    library = dict(FACTORIES)[factory_key]()
    program = library.compile(expression)
    try:
        is_error, result = library.evaluate(program, activation({"v": value}))
    except RecursionError:
        print("raises RecursionError")
        return
    except Exception as exc:
        print(f"raises {type(exc).__name__}")
        return
    if is_error:
        print("fails closed" if factory_key == "holdgate" else "CEL error")
        return
    print(f"{bool(result)}".lower() if str(result) in ("True", "False") else "?")


def run_probe(factory_key: str, value_source: str, expression: str) -> str:
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--probe", factory_key, value_source, expression],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return "hangs"
    if done.returncode < 0:
        return f"**crash** (signal {-done.returncode})"
    if done.returncode != 0:
        return f"**crash** (exit {done.returncode})"
    return done.stdout.strip() or "?"


def installed_kib(distribution: str) -> float:
    files = importlib.metadata.distribution(distribution).files or []
    return sum((Path(str(f.locate())).stat().st_size for f in files if Path(str(f.locate())).exists()), 0) / 1024


def requirements(distribution: str) -> list[str]:
    wanted = []
    for requirement in importlib.metadata.requires(distribution) or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0]
        if "python_version" in requirement and "<" in requirement.split(";", 1)[1]:
            continue  # a backport this Python does not need
        if name not in wanted:
            wanted.append(name)
    return wanted


def closure_kib(distribution: str) -> tuple[float, list[str]]:
    """Installed size of the distribution and everything it requires (already installed or not)."""
    seen: list[str] = []
    todo = [distribution]
    while todo:
        name = todo.pop()
        if name.lower() in (s.lower() for s in seen):
            continue
        seen.append(name)
        try:
            todo.extend(requirements(name))
        except importlib.metadata.PackageNotFoundError:
            continue
    total = 0.0
    for name in seen:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            total += installed_kib(name)
    return total, seen[1:]


def measure_library(key: str, seconds: float, repeat: int) -> dict[str, Any]:
    """Child-process side: speed and conformance of one library, as JSON for the parent's tables."""
    try:
        library = dict(FACTORIES)[key]()
    except ImportError as exc:
        return {"key": key, "missing": str(exc)}
    speed: list[str | list[float]] = []
    for expression in SPEED:
        measured = measure_speed(library, expression, seconds, repeat)
        speed.append(measured if isinstance(measured, str) else list(measured))
    failed = []
    for expression, expected in BATTERY:
        passed, what = run_case(library, expression, expected)
        if not passed:
            want = "error" if expected is ERROR else repr(expected)
            failed.append(f"`{expression}`: want {want}, got {what}")
    version = importlib.metadata.version(library.distribution)
    return {
        "key": key,
        "label": library.label,
        "distribution": library.distribution,
        "version": version,
        "speed": speed,
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-robustness", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print every failed conformance case")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.probe:
        probe(*options.probe)
        return
    if options.library:
        print(json.dumps(measure_library(options.library, options.seconds, options.repeat)))
        return

    # Each library in its own process, one after the other: none sees another's imports or state
    # (cel-python's compiled runner breaks once its interpreted runner has run in the same process).
    results = []
    for key, _ in FACTORIES:
        command = [sys.executable, __file__, "--library", key, "--seconds", str(options.seconds)]
        done = subprocess.run([*command, "--repeat", str(options.repeat)], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout)
        if "missing" in result:
            print(f"{key}: not installed ({result['missing']})")
        else:
            results.append(result)

    print(f"Python {sys.version.split()[0]}; versions: ", end="")
    print(", ".join(sorted({f"{r['distribution']} {r['version']}" for r in results})))

    print("\n### Speed: evaluations/s on one core (compile once; fresh dict activation per call)\n")
    print("| expression | " + " | ".join(r["label"] for r in results) + " |")
    print("| --- |" + " ---: |" * len(results))
    for index, expression in enumerate(SPEED):
        cells = [
            r["speed"][index] if isinstance(r["speed"][index], str) else f"{r['speed'][index][0]:,.0f}" for r in results
        ]
        print(f"| `{expression}` | " + " | ".join(cells) + " |")
    medians = []
    for r in results:
        times = sorted(m[1] for m in r["speed"] if not isinstance(m, str))
        medians.append(f"{times[len(times) // 2]:.2f}" if times else "—")
    print("| compile, ms (median) | " + " | ".join(medians) + " |")

    print(f"\n### Conformance: {len(BATTERY)} CEL spec behaviours\n")
    print("| | " + " | ".join(r["label"] for r in results) + " |")
    print("| --- |" + " ---: |" * len(results))
    print("| passed | " + " | ".join(f"{len(BATTERY) - len(r['failed'])}/{len(BATTERY)}" for r in results) + " |")
    for r in results:
        failed = r["failed"]
        shown = failed if options.verbose else failed[:12]
        print(f"\n{r['label']} fails ({len(failed)}):")
        for line in shown:
            print(f"  - {line}")
        if len(shown) < len(failed):
            print(f"  - ... {len(failed) - len(shown)} more (--verbose)")

    if not options.skip_robustness:
        print(f"\n### Robustness: a client's value in `args.v`, evaluating `{SAME}` unless the row says\n")
        print("| value | " + " | ".join(r["label"] for r in results) + " |")
        print("| --- |" + " --- |" * len(results))
        for name, (source, expression) in PROBES.items():
            print(f"| {name} | " + " | ".join(run_probe(r["key"], source, expression) for r in results) + " |")

    print("\n### Footprint (installed)\n")
    print("| distribution | own size | with its requirements | requires |")
    print("| --- | ---: | ---: | --- |")
    for distribution in sorted({r["distribution"] for r in results}):
        own = installed_kib(distribution)
        total, required = closure_kib(distribution)
        print(f"| {distribution} | {own / 1024:.1f} MiB | {total / 1024:.1f} MiB | {', '.join(required) or '—'} |")


if __name__ == "__main__":
    main()
