"""Shared set-up for the client approval channel's tests: policies that list the channel (and the approver) `client`,
elicitation callbacks that answer as a person at the client would, recording what they were asked, and a gateway with
such a person at the client of either revision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, ClientSession
from mcp.client import ClientRequestContext
from mcp_types import ElicitRequestFormParams, ElicitRequestParams, ElicitRequestURLParams, ElicitResult

from service.models import Decision
from tests.approvals.support import approval_policy, wait_for_decisions
from tests.support.harness import Gateway, executed_calls, run_gateway, servers, wire_answer, wire_request

PUBLIC_URL = "https://holdgate.example.test"


def client_policy(*, approver: bool, **approval: Any) -> dict[str, Any]:
    """cancel-async-job asks group ops (alice, bob) on the console and at the client; `approver`: the rule also lists
    the approver `client` (the person at the client may approve their own agent's call)."""
    approvers = ["group:ops", "client"] if approver else ["group:ops"]
    return approval_policy(approvers, channels=["console", "client"], **approval)


@dataclass
class Person:
    """Answers every elicitation with `result` (or raises `error`), keeping what was asked."""

    result: ElicitResult | None = None
    error: Exception | None = None
    asked: list[ElicitRequestParams] = field(default_factory=list)

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    @property
    def forms(self) -> list[ElicitRequestFormParams]:
        return [p for p in self.asked if isinstance(p, ElicitRequestFormParams)]

    @property
    def urls(self) -> list[ElicitRequestURLParams]:
        return [p for p in self.asked if isinstance(p, ElicitRequestURLParams)]


def approve(reason: str | None = None) -> ElicitResult:
    content: dict[str, Any] = {"decision": "approve", **({"reason": reason} if reason else {})}
    return ElicitResult(action="accept", content=content)


def deny(reason: str) -> ElicitResult:
    return ElicitResult(action="accept", content={"decision": "deny", "reason": reason})


@asynccontextmanager
async def client_gateway(
    tmp_path: Path, person: Person, *, approver: bool, modern: bool = False, **gateway: Any
) -> AsyncIterator[tuple[Gateway, ClientSession | Client]]:
    """holdgate with `client_policy(approver=…)` and the jobs upstream (`gateway`: more of `run_gateway`'s settings),
    and grant agent's client with `person` at it: a 2025-11-25 session, or (`modern`) a 2026-07-28 SDK client."""
    policy = client_policy(approver=approver)
    async with run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), **gateway) as gw:
        connect = gw.modern if modern else gw.session
        async with connect("jobs", elicitation_callback=person) as client:
            yield gw, client


async def still_pending(gw: Gateway, person: Person) -> Decision:
    """The held call's decision once `person` was asked and had time (0.3 s) to answer, as it stands then: what the
    answer did to it, before another channel decides."""
    [decision] = await wait_for_decisions(gw)
    while not person.asked:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    return await gw.state.approvals.holding.load(decision.id)


def runs(tmp_path: Path) -> list[dict[str, Any]]:
    """The upstream's runs of the held tool (cancel-async-job)."""
    return [c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


MODERN = "2026-07-28"


def modern_meta(elicitation: dict[str, Any] | None) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"elicitation": elicitation} if elicitation is not None else {}
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "client-channel-test", "version": "0"},
    }


async def modern_call(
    url: str,
    token: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    elicitation: dict[str, Any] | None = None,
    request_id: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    """One stateless 2026-07-28 `tools/call`, spoken by hand (`extra`: `requestState`, `inputResponses`)."""
    params = {"name": tool, "arguments": arguments, **extra, "_meta": modern_meta(elicitation)}
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
        "Authorization": f"Bearer {token}",
    }
    async with httpx2.AsyncClient(timeout=120) as http:
        response = await http.post(url, json=wire_request(request_id, "tools/call", params), headers=headers)
    return wire_answer(response)
