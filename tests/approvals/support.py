"""Shared set-up for the approval tests: a policy with people, API calls as a person, waiting for decisions."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx2

from service.approvals import DecisionQuery
from service.approvals.schemas import DecisionView
from service.policy.redaction import args_digest
from tests.support.harness import Gateway

PERSON_TOKENS = {"alice": "alice-token-1", "bob": "bob-token-2", "carol": "carol-token-3", "agent": "agent-person-4"}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def approval_policy(approvers: list[str] | None = None, **approval: Any) -> dict[str, Any]:
    """cancel-async-job needs approval by group ops (alice, bob); list-async-jobs is allowed."""
    return {
        "version": "1",
        "default": "deny",
        "people": {
            name: {"token_sha256": sha256(token), **({"slack": "U0ALICE"} if name == "alice" else {})}
            for name, token in PERSON_TOKENS.items()
        },
        "groups": {"ops": ["alice", "bob"]},
        "tools": {
            "cancel-async-job": {
                "action": "require_approval",
                "approval": {
                    "approvers": approvers or ["group:ops"],
                    "channels": ["console"],
                    "timeout": "15m",
                    **approval,
                },
            },
            "list-async-jobs": {"action": "allow"},
        },
    }


async def api(gw: Gateway, method: str, path: str, person: str | None = None, **kwargs: Any) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {PERSON_TOKENS.get(person, person)}"} if person else {}
    async with httpx2.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as client:
        return await client.request(method, path, **kwargs)


async def decisions(gw: Gateway, **filters: Any) -> list[DecisionView]:
    rows, _ = await gw.state.approvals.service.list(DecisionQuery(limit=500, **filters))
    return [DecisionView.of(row) for row in rows]


async def wait_for_decisions(gw: Gateway, count: int = 1, status: str = "pending") -> list[DecisionView]:
    """The first `count` decisions in `status`, waiting (briefly) for the held calls to open them."""
    for _ in range(500):
        found = await decisions(gw, status=status)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} {status} decision(s), found {len(found)}")


async def open_decisions(gw: Gateway, count: int, grant: str = "agent") -> list[str]:
    """`count` pending decisions for cancel-async-job (approvers: group ops, alice and bob)."""
    policy = gw.state.policy.current
    ids = []
    for n in range(count):
        arguments = {"jobId": f"job-{n}"}
        verdict = policy.evaluate(grant, "jobs", "cancel-async-job", arguments, now=time.time())
        decision, _ = await gw.state.approvals.service.open_or_join(
            grant=grant,
            server="jobs",
            tool="cancel-async-job",
            arguments=arguments,
            args_sha256=args_digest(b"test", arguments),
            verdict=verdict,
            policy_version=policy.version,
        )
        ids.append(decision.id)
    return ids


async def status_of(gw: Gateway, decision_id: str) -> DecisionView:
    decision, votes = await gw.state.approvals.service.get(decision_id)
    return DecisionView.of(decision, votes)
