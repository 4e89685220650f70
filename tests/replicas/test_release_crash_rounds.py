"""SIGKILL in the middle of a release, in rounds, on SQLite (one process, restarted) and on PostgreSQL (two
replicas, one killed): every approved call runs exactly once after retries, no denied call runs, every
decision ends, only a call of unknown outcome asks a second time, and the audit chain verifies.

The figures of each round are printed (`pytest -s`); see tests/replicas/crash_rounds.py for a round. The suite
runs 2 rounds per database (a round takes 10-20 s on 2 busy cores); the 5 rounds of the figures in
docs/decisions.md run with `HOLDGATE_CRASH_ROUNDS=5` (bench/README.md).
"""

from __future__ import annotations

import os

from tests.replicas.crash_rounds import audit_verify, crash_rounds

ROUNDS = int(os.environ.get("HOLDGATE_CRASH_ROUNDS", "2"))
"""Rounds per database: 2 in the default run (CI), any number with HOLDGATE_CRASH_ROUNDS (5 for the figures)."""


def check(rounds) -> None:
    problems = [f"round {i}: {p}" for i, figures in enumerate(rounds, 1) for p in figures.problems()]
    assert problems == []
    assert sum(f.approved for f in rounds) == sum(f.ran_once for f in rounds)


async def test_sigkill_mid_release_on_sqlite_loses_and_repeats_nothing(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'holdgate.db'}"
    rounds = await crash_rounds(tmp_path, url, replicas=1, rounds=ROUNDS)
    check(rounds)
    verified = audit_verify(tmp_path, url)
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_sigkill_of_a_replica_mid_release_on_postgresql_loses_and_repeats_nothing(tmp_path, postgres_url):
    rounds = await crash_rounds(tmp_path, postgres_url, replicas=2, rounds=ROUNDS)
    check(rounds)
    verified = audit_verify(tmp_path, postgres_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
