"""Kill a holdgate process with SIGKILL in the middle of a release, then retry every call: the crash rounds.

One round: `approved` calls of `transfer` (each in its own 2025-era session, so each opens its upstream
lazily, the widest gap between claim and send) and `denied` ones are held on the victim process; a person
denies and approves them; once the upstream has started running some of them (a random number), the victim
is killed with SIGKILL. Then each approved call is retried on the survivor (another replica on PostgreSQL, the
restarted process on SQLite) until it has an answer. A retry told "may have run" (outcome unknown) is decided
by the approver knowing it: the counting upstream's log (as the real system would be checked) says whether it
ran; deny the new decision if it did, approve it if not. The upstream's durable log is the truth for "ran".

Used by tests/replicas/test_release_crash_rounds.py; `python -m tests.replicas.crash_rounds --rounds 10`
prints the figures for the closing note.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import mcp_types as types
from mcp import ClientSession

from service.settings import Settings
from tests.approvals.support import PERSON_TOKENS, api, sha256
from tests.replicas.test_replicas import Replica, replica
from tests.support.counting_upstream import executions
from tests.support.harness import ROOT, Gateway, seed_grants, text_of, write_config

COUNTING_UPSTREAM = ROOT / "tests/support/counting_upstream.py"
ENV = {
    "HOLDGATE_CLAIM_LEASE_S": "1.5",
    "HOLDGATE_APPROVAL_POLL_INTERVAL_S": "0.2",
    "HOLDGATE_AUDIT_FLUSH_INTERVAL_S": "1.0",
}


@dataclass
class RoundFigures:
    approved: int = 0
    ran_before_kill: int = 0
    """Reached the upstream before the kill (their retries got the stored result, or were told "may have run")."""
    ran_once: int = 0
    recovered_by_retry: int = 0
    """Ran through a retry, on the first approval (the claim went back when its holder died)."""
    outcome_unknown: int = 0
    """A retry was told it may have run; the approver decided again knowing it."""
    lost: int = 0
    unknown_keys: set[str] = field(default_factory=set)
    ran_twice: list[str] = field(default_factory=list)
    denied_ran: list[str] = field(default_factory=list)
    second_approval_without_unknown: list[str] = field(default_factory=list)
    unended: list[str] = field(default_factory=list)

    def line(self, label: str) -> str:
        return (
            f"{label}: approved {self.approved}, reached the upstream before the kill {self.ran_before_kill}, "
            f"ran once {self.ran_once}, recovered by retry "
            f"{self.recovered_by_retry}, outcome unknown {self.outcome_unknown}, lost {self.lost}"
        )

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{self.lost} approved call(s) lost")
        for name in ("ran_twice", "denied_ran", "second_approval_without_unknown", "unended"):
            if getattr(self, name):
                found.append(f"{name}: {getattr(self, name)}")
        return found


def policy() -> dict:
    return {
        "version": "1",
        "default": "deny",
        "people": {name: {"token_sha256": sha256(token)} for name, token in PERSON_TOKENS.items()},
        "tools": {
            "transfer": {
                "action": "require_approval",
                "approval": {"approvers": ["alice", "bob"], "channels": ["console"], "timeout": "15m"},
            }
        },
    }


def configure(tmp_path: Path, *, delay: float) -> Path:
    log = tmp_path / "count.jsonl"
    upstream = {
        "command": sys.executable,
        "args": [str(COUNTING_UPSTREAM)],
        "env": {"COUNT_LOG": str(log), "COUNT_DELAY_S": str(delay)},
    }
    write_config(tmp_path / "config", policy=policy(), servers={"bank": upstream})
    return log


async def call_once(gw: Gateway, key: str) -> types.CallToolResult | BaseException:
    """One `transfer` in a session of its own; the exception if the gateway went away."""
    try:
        async with gw.session("bank") as session:
            return await session.call_tool("transfer", {"key": key})
    except BaseException as exc:  # a killed gateway breaks the call in many ways
        if isinstance(exc, asyncio.CancelledError):
            raise
        return exc


async def decisions_of(gw: Gateway, keys: set[str]) -> list[dict]:
    items = (await api(gw, "GET", "/api/decisions?limit=500", "alice")).json()["items"]
    return [d for d in items if d["arguments"].get("key") in keys]


async def wait_pending(gw: Gateway, keys: set[str]) -> list[dict]:
    for _ in range(600):
        pending = [d for d in await decisions_of(gw, keys) if d["status"] == "pending"]
        if len(pending) == len(keys):
            return pending
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {len(keys)} pending decisions, found {len(pending)}")


async def settle(gw: Gateway, session: ClientSession, key: str, log: Path, figures: RoundFigures) -> None:
    """Retry `key` on `gw` until it has an answer; the approver decides a "may have run" knowing the log."""
    for _ in range(40):
        text = text_of(await session.call_tool("transfer", {"key": key}))
        if not text.startswith("holdgate"):
            return
        if "may have run" in text:
            figures.outcome_unknown += 1
            figures.unknown_keys.add(key)
            [fresh] = re.findall(r"requested as decision (d_\S+),", text)
            if executions(log).get(key, 0):
                await api(gw, "POST", f"/api/decisions/{fresh}/deny", "bob", json={"reason": "it ran: checked"})
                return
            await api(gw, "POST", f"/api/decisions/{fresh}/approve", "bob")
            continue
        if "denied" in text:
            return
        if "approval pending" in text or "is running" in text:
            await asyncio.sleep(0.2)
            continue
        raise AssertionError(f"unexpected answer to a retry of {key}: {text}")
    raise AssertionError(f"{key}: no answer after 40 retries")


async def crash_round(
    log: Path,
    label: str,
    *,
    victim: Replica,
    approver: Gateway,
    after_kill: Callable[[], Awaitable[Gateway]],
    approved: int,
    denied: int,
    rng: random.Random,
) -> RoundFigures:
    """One round: hold on `victim`, decide on `approver`, kill the victim, retry on what `after_kill` gives."""
    keys = {f"{label}-{i}" for i in range(approved)}
    refused = {f"{label}-deny-{i}" for i in range(denied)}
    figures = RoundFigures(approved=approved)
    calls = [asyncio.create_task(call_once(victim, key)) for key in sorted(keys | refused)]
    held = {d["arguments"]["key"]: d["id"] for d in await wait_pending(approver, keys | refused)}
    await asyncio.gather(
        *(api(approver, "POST", f"/api/decisions/{held[k]}/deny", "bob", json={"reason": "no"}) for k in refused)
    )
    await asyncio.gather(*(api(approver, "POST", f"/api/decisions/{held[k]}/approve", "alice") for k in keys))
    kill_after = rng.randint(1, max(1, approved // 2))
    for _ in range(1500):  # in the middle of the release: the upstream has started some, not all
        if sum(n for k, n in executions(log).items() if k in keys) >= kill_after:
            break
        await asyncio.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.gather(*calls)
    await asyncio.sleep(0.3)  # an upstream child that read its request before the kill finishes it
    ran_before = {k for k, n in executions(log).items() if k in keys}
    figures.ran_before_kill = len(ran_before)
    survivor = await after_kill()
    async with survivor.session("bank") as session:  # one upstream for all the retries
        await asyncio.gather(*(settle(survivor, session, key, log, figures) for key in sorted(keys)))
    final = await decisions_of(survivor, keys | refused)
    counts = executions(log)
    for key in keys:
        ran = counts.get(key, 0)
        figures.ran_once += ran == 1
        figures.lost += ran == 0
        if ran > 1:
            figures.ran_twice.append(key)
        if ran == 1 and key not in ran_before and key not in figures.unknown_keys:
            figures.recovered_by_retry += 1
    figures.denied_ran = sorted(k for k in refused if counts.get(k))
    per_key: dict[str, list[dict]] = {}
    for decision in final:
        per_key.setdefault(decision["arguments"]["key"], []).append(decision)
    unknown_keys = {
        k for k, ds in per_key.items() if any((d["execution"] or {}).get("outcome") == "unknown" for d in ds)
    }
    figures.second_approval_without_unknown = sorted(
        k for k, ds in per_key.items() if len(ds) > 1 and k not in unknown_keys
    )
    figures.unended = sorted(  # every decision ended; every approved one has the outcome of its run
        d["id"] for d in final if d["status"] == "pending" or (d["status"] == "approved" and not d["execution"])
    )
    return figures


def audit_verify(tmp_path: Path, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOLDGATE_DATABASE_URL": database_url, "HOLDGATE_CONFIG_DIR": str(tmp_path / "config")}
    return subprocess.run(
        [sys.executable, "-m", "service", "audit", "verify"], cwd=ROOT, env=env, capture_output=True, text=True
    )


async def crash_rounds(
    tmp_path: Path, database_url: str, *, replicas: int, rounds: int, approved: int = 8, denied: int = 2, seed: int = 1
) -> list[RoundFigures]:
    """`rounds` rounds on one database. With `replicas` 2 (PostgreSQL) a survivor replica decides and serves the
    retries, and each round starts a new victim; with 1 (SQLite) the process restarted after a kill serves the
    retries and is the next round's victim."""
    log = configure(tmp_path, delay=0.5)
    tokens = await seed_grants(Settings(_env_file=None, database_url=database_url), ["agent"])
    rng = random.Random(seed)
    results = []
    async with AsyncExitStack() as stack:

        async def start(name: str) -> Replica:
            return await stack.enter_async_context(replica(tmp_path, name, database_url, tokens, **ENV))

        survivor = await start("survivor") if replicas == 2 else None
        current = None if survivor is not None else await start("p0")
        for number in range(1, rounds + 1):
            victim = current or await start(f"r{number}-victim")

            async def after_kill(number: int = number) -> Gateway:
                nonlocal current
                if survivor is not None:
                    return survivor
                current = await start(f"p{number}")
                return current

            figures = await crash_round(
                log,
                f"r{number}",
                victim=victim,
                approver=survivor or victim,
                after_kill=after_kill,
                approved=approved,
                denied=denied,
                rng=rng,
            )
            print(figures.line(f"round {number}"), flush=True)
            results.append(figures)
    return results
