"""Wall time of `holdgate approve`, `deny` and `decisions list`, from exec to exit, over several runs.

Each command is a fresh `python -m service ...` process, as an operator's shell runs it, against a local SQLite
database the bench creates (`holdgate db upgrade` in a temporary data directory, then pending decisions opened
through the approvals service). The decision commands therefore do all their work: start the interpreter,
import, read the settings, open the database (and check its schema), vote or list, print, exit. `--help` of
the same commands shows the start-up alone (import and argument parsing, no database).

The approvals vote on decisions that exist (one pending decision per run, so every run is a real approval or
denial), and `decisions list` lists the seeded ones. `--root` runs another checkout's code (the same
interpreter), to compare before and after a change:

    python bench/bench_cli.py                         # this checkout
    python bench/bench_cli.py --root /path/to/other   # another checkout, e.g. before lazy imports

The machine's load average is printed with the figures: on a shared machine they move with it.

Usage: python bench/bench_cli.py [--runs 10] [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def holdgate(root: Path, env: dict[str, str], *args: str) -> float:
    """Run `holdgate ARGS` with `root`'s code; its wall time in seconds (it must succeed)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**env, "PYTHONPATH": str(root)},
        cwd=env["HOLDGATE_DATA_DIR"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"holdgate {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return elapsed


def seed_pending(root: Path, env: dict[str, str], count: int) -> list[str]:
    """Open `count` pending decisions through the approvals service (in a child with `root`'s code)."""
    script = f"""
import asyncio, time
from service import db
from service.approvals import ApprovalService
from service.policy import ApprovalSpec, Verdict
from service.policy.redaction import args_digest
from service.settings import get_settings

VERDICT = Verdict(action="require_approval", rule="cancel-async-job",
                  approval=ApprovalSpec(approvers=(), timeout_seconds=3600))

async def main():
    engine = db.create_engine(get_settings().effective_database_url)
    service = ApprovalService(db.session_factory(engine), clock=time.time)
    ids = []
    for n in range({count}):
        arguments = {{"jobId": f"job-{{n}}"}}
        decision, _ = await service.open_or_join(
            grant="bench", server="jobs", tool="cancel-async-job", arguments=arguments,
            args_sha256=args_digest(b"bench", arguments), verdict=VERDICT, policy_version="bench")
        ids.append(decision.id)
    await engine.dispose()
    print(" ".join(ids))

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], env={**env, "PYTHONPATH": str(root)}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"could not open decisions: {done.stderr}")
    return done.stdout.split()


def report(name: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    print(f"  {name:<40} p50 {statistics.median(ms):7.0f} ms   max {ms[-1]:7.0f} ms   (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs of each command")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs (default: this one)")
    options = parser.parse_args()
    root = options.root.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as scratch:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HOLDGATE_")},
            "HOLDGATE_DATA_DIR": scratch,
            "HOLDGATE_CONFIG_DIR": str(ROOT / "config"),
        }
        holdgate(root, env, "db", "upgrade")
        pending = seed_pending(root, env, 2 * options.runs + 20)
        holdgate(root, env, "decisions", "list")  # warm the file cache and the bytecode once
        commands: dict[str, list[list[str]]] = {
            "approve --help (start-up only)": [["approve", "--help"]] * options.runs,
            "decisions list --help": [["decisions", "list", "--help"]] * options.runs,
            "approve ID": [["approve", pending.pop()] for _ in range(options.runs)],
            "deny ID --reason": [["deny", pending.pop(), "--reason", "bench"] for _ in range(options.runs)],
            "decisions list": [["decisions", "list"]] * options.runs,
            "decisions list --status pending --json": [["decisions", "list", "--status", "pending", "--json"]]
            * options.runs,
        }
        load = os.getloadavg()
        print(f"holdgate CLI wall time, code from {root}, {sys.executable}")
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
        for name, runs in commands.items():
            report(name, [holdgate(root, env, *args) for args in runs])
        load = os.getloadavg()
        print(f"load average after:  {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
