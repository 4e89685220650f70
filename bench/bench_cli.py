"""Wall time of `holdgate approve`, `deny` and `decisions list`, from exec to exit, over several runs.

Each command is a fresh `python -m service ...` process, as an operator's shell runs it, in three ways:

- on the local database, as the operator: a SQLite database the bench creates (`holdgate db upgrade` in a
  temporary data directory, then pending decisions opened through the approvals service). The command does
  all its work: start the interpreter, import, read the settings, open the database (and check its schema),
  vote or list, print, exit;
- on the local database with the service running on it: the command asks the service on its operator socket
  (service/operator/), as an operator's shell on the service's host does, and imports no database code;
- with `--url`, through a running holdgate (`holdgate serve` on that database and a free port, started by the
  bench), as a person whose token the policy declares: start, import, one HTTP request, print, exit.

`--help` of the same commands shows the start-up alone (import and argument parsing).

The approvals vote on decisions that exist (one pending decision per run, so every run is a real approval or
denial), and `decisions list` lists the seeded ones. `--root` runs another checkout's code (the same
interpreter), to compare before and after a change:

    python bench/bench_cli.py                         # this checkout
    python bench/bench_cli.py --root /path/to/other   # another checkout, e.g. before lazy imports (no --url there)

The machine's load average is printed with the figures: on a shared machine they move with it, the wall time far
more than the CPU time (user + system of the command's own process), which is printed beside it. Read figures
taken at a quiet moment (load average well under the CPU count), and compare two checkouts in the same run.

The commands run with bytecode caching on, in a cache directory of the bench's own (`PYTHONPYCACHEPREFIX`), as an
installed package runs (pip compiles it); a checkout run with `PYTHONDONTWRITEBYTECODE=1` recompiles every
holdgate module on each start, which added ~0.1-0.3 s to the figures before they were taken this way.

Usage: python bench/bench_cli.py [--runs 10] [--root DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERSON_TOKEN = "bench-person-token"


def holdgate(root: Path, env: dict[str, str], *args: str) -> tuple[float, float]:
    """Run `holdgate ARGS` with `root`'s code; its wall time and its CPU time (user + system) in seconds.

    The CPU time is the command's own (not the service's, for --url): on a shared machine it moves far less
    with the load than the wall time does.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**env, "PYTHONPATH": str(root)},
        cwd=env["HOLDGATE_DATA_DIR"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"holdgate {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def seed_pending(root: Path, env: dict[str, str], count: int) -> list[str]:
    """Open `count` pending decisions through the approvals service (in a child with `root`'s code)."""
    script = f"""
import asyncio, time
from service import db
from service.approvals import ApprovalService
from service.policy import ApprovalSpec, Approver, Verdict
from service.policy.redaction import args_digest
from service.settings import get_settings

VERDICT = Verdict(action="require_approval", rule="cancel-async-job",
                  approval=ApprovalSpec(approvers=(Approver(name="alice"),), timeout_seconds=3600))

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
    done = subprocess.run(  # in the data directory: `-c` puts the working directory first on sys.path
        [sys.executable, "-c", script],
        env={**env, "PYTHONPATH": str(root)},
        cwd=env["HOLDGATE_DATA_DIR"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"could not open decisions: {done.stderr}")
    return done.stdout.split()


@contextmanager
def serving(root: Path, env: dict[str, str]) -> Iterator[str]:
    """`holdgate serve` on the bench's database and a free port; its base URL once /readyz answers 200."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(Path(env["HOLDGATE_DATA_DIR"]) / "serve.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        env={**env, "PYTHONPATH": str(root)},
        cwd=env["HOLDGATE_DATA_DIR"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"holdgate serve did not start: see {log.name}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def report(name: str, runs: list[tuple[float, float]]) -> None:
    wall = sorted(w * 1000 for w, _ in runs)
    cpu = sorted(c * 1000 for _, c in runs)
    print(
        f"  {name:<40} wall p50 {statistics.median(wall):6.0f} ms  max {wall[-1]:6.0f} ms   "
        f"CPU p50 {statistics.median(cpu):5.0f} ms  max {cpu[-1]:5.0f} ms   (n={len(wall)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs of each command")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs (default: this one)")
    options = parser.parse_args()
    root = options.root.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as scratch:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HOLDGATE_") and k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPYCACHEPREFIX": str(Path(scratch) / "pycache"),
            "HOLDGATE_DATA_DIR": scratch,
            "HOLDGATE_CONFIG_DIR": str(Path(scratch) / "config"),
        }
        config = Path(env["HOLDGATE_CONFIG_DIR"])
        config.mkdir()
        people = {"alice": {"token_sha256": hashlib.sha256(PERSON_TOKEN.encode()).hexdigest()}}
        (config / "policy.json").write_text(json.dumps({"version": "1", "default": "deny", "people": people}))
        (config / "servers.json").write_text(json.dumps({"mcpServers": {}}))
        holdgate(root, env, "db", "upgrade")
        pending = seed_pending(root, env, 6 * options.runs + 20)
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
        if (root / "service" / "commands" / "rest_client.py").exists():
            with serving(root, env) as url:
                remote = {**env, "HOLDGATE_URL": url, "HOLDGATE_PERSON_TOKEN": PERSON_TOKEN}
                remote_commands = {
                    "approve ID --url": [["approve", pending.pop()] for _ in range(options.runs)],
                    "deny ID --reason --url": [["deny", pending.pop(), "--reason", "b"] for _ in range(options.runs)],
                    "decisions list --url": [["decisions", "list"]] * options.runs,
                    "decisions list --json --url": [["decisions", "list", "--json"]] * options.runs,
                }
                holdgate(root, remote, "decisions", "list")  # the service's first answer warms it
                for name, runs in remote_commands.items():
                    report(name, [holdgate(root, remote, *args) for args in runs])
                if (root / "service" / "operator" / "socket_client.py").exists():
                    local_commands = {
                        "approve ID (service running)": [["approve", pending.pop()] for _ in range(options.runs)],
                        "deny ID --reason (service running)": [
                            ["deny", pending.pop(), "--reason", "b"] for _ in range(options.runs)
                        ],
                        "decisions list (service running)": [["decisions", "list"]] * options.runs,
                        "decisions list --json (service running)": [["decisions", "list", "--json"]] * options.runs,
                    }
                    for name, runs in local_commands.items():
                        report(name, [holdgate(root, env, *args) for args in runs])
        load = os.getloadavg()
        print(f"load average after:  {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
