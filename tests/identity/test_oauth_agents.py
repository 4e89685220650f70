"""Agents authenticate with OAuth (MCP authorization): holdgate as a resource server of a real OpenID provider.

The provider (npm `oidc-provider`) issues client-credentials tokens as JWTs whose audience is the resource asked
for; a real MCP client (the SDK, with the token as its bearer header) calls through holdgate. Bad tokens get 401
and a `WWW-Authenticate` that says where the resource metadata is and why.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.support.harness import (
    WIRE_HEADERS,
    Clock,
    Gateway,
    audit_events,
    executed_calls,
    free_port,
    run_gateway,
    servers,
    text_of,
    wire_initialize,
)
from tests.support.oidc_provider import Provider, oidc_provider

pytestmark = pytest.mark.usefixtures("node_available")

GRANTS = {"agent-ci": "ci-bot", "agent-alice": "alice-agent"}


def oauth_policy(**approval: Any) -> dict[str, Any]:
    policy = approval_policy(**approval)
    policy["people"]["alice"]["email"] = "alice@example.com"
    return policy


@asynccontextmanager
async def oauth_gateway(tmp_path, provider: Provider, *, policy=None, clock=None, **settings) -> AsyncIterator[Gateway]:
    port = free_port()
    async with run_gateway(
        tmp_path,
        policy=policy or oauth_policy(),
        servers=servers(tmp_path),
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        oauth_issuer=provider.issuer,
        oauth_grants=GRANTS,
        oauth_acting_for_claim="act_email",
        clock=clock,
        approval_hold_s=30,
        **settings,
    ) as gw:
        yield gw


@asynccontextmanager
async def oauth_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    """The SDK's MCP client with an OAuth access token as its bearer header."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def post_initialize(url: str, token: str | None) -> httpx2.Response:
    headers = dict(WIRE_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(url, json=wire_initialize(), headers=headers)


def challenge(response: httpx2.Response) -> dict[str, str]:
    value = response.headers["www-authenticate"]
    assert value.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


async def test_a_real_mcp_client_calls_through_with_an_access_token_from_the_provider(tmp_path):
    async with oidc_provider() as provider, oauth_gateway(tmp_path, provider) as gw:
        url = gw.mcp_url("jobs")
        token = await provider.client_credentials("agent-ci", resource=url)
        async with oauth_session(url, token) as session:
            tools = await session.list_tools()
            assert "list-async-jobs" in {tool.name for tool in tools.tools}
            result = await session.call_tool("list-async-jobs", {})
            assert not result.is_error, text_of(result)
        await gw.state.audit.flush()
        [event] = [e for e in await audit_events(gw) if e.tool == "list-async-jobs"]
        assert event.grant == "ci-bot"  # the token's client_id, mapped by HOLDGATE_OAUTH_GRANTS

        # Static grant tokens keep working beside OAuth.
        async with gw.session("jobs") as session:
            assert not (await session.call_tool("list-async-jobs", {})).is_error


class MemoryTokens:
    """The SDK's token storage, in memory."""

    def __init__(self) -> None:
        self.tokens: Any = None
        self.client: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client

    async def set_client_info(self, client_info: Any) -> None:
        self.client = client_info


async def test_the_sdks_own_oauth_finds_the_provider_from_the_401_and_gets_a_token_for_the_server(tmp_path):
    """The MCP SDK's client-credentials OAuth: 401 -> resource metadata -> the provider's metadata -> a token for
    `resource=<the server's URL>` -> the call, with no token handed to it."""
    from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

    async with oidc_provider() as provider, oauth_gateway(tmp_path, provider) as gw:
        url = gw.mcp_url("jobs")
        storage = MemoryTokens()
        auth = ClientCredentialsOAuthProvider(
            server_url=url,
            storage=storage,
            client_id="agent-ci",
            client_secret="agent-ci-secret",
            scope="mcp",
            issuer=provider.issuer,
        )
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("list-async-jobs", {})
            assert not result.is_error, text_of(result)
        assert storage.tokens is not None and storage.tokens.access_token.count(".") == 2  # a JWT for the server


async def test_401_points_at_the_resource_metadata_which_names_the_issuer(tmp_path):
    async with oidc_provider() as provider, oauth_gateway(tmp_path, provider) as gw:
        url = gw.mcp_url("jobs")
        refused = await post_initialize(url, None)
        assert refused.status_code == 401
        where = challenge(refused)["resource_metadata"]
        assert where == f"{gw.url}/.well-known/oauth-protected-resource/mcp/jobs"
        async with httpx2.AsyncClient(timeout=10) as http:
            metadata = (await http.get(where)).json()
            assert metadata["resource"] == url
            assert metadata["authorization_servers"] == [provider.issuer]
            assert metadata["bearer_methods_supported"] == ["header"]
            assert (await http.get(f"{gw.url}/.well-known/oauth-protected-resource/mcp/nope")).status_code == 404
        assert "Bearer" in refused.json()["error"]["message"]


async def test_wrong_audience_wrong_issuer_expired_and_unsigned_tokens_are_refused_with_401(tmp_path):
    clock = Clock(time.time())
    async with (
        oidc_provider() as provider,
        oidc_provider() as stranger,
        oauth_gateway(tmp_path, provider, clock=clock) as gw,
    ):
        url = gw.mcp_url("jobs")
        good = await provider.client_credentials("agent-ci", resource=url)

        other_server = await provider.client_credentials("agent-ci", resource=f"{gw.url}/mcp/time")
        refused = await post_initialize(url, other_server)
        assert refused.status_code == 401
        said = challenge(refused)
        assert said["error"] == "invalid_token"
        assert f"not for this server ({url})" in said["error_description"]
        assert said["resource_metadata"].endswith("/.well-known/oauth-protected-resource/mcp/jobs")

        foreign = await stranger.client_credentials("agent-ci", resource=url)
        refused = await post_initialize(url, foreign)
        assert refused.status_code == 401
        assert f"issued by '{stranger.issuer}'" in challenge(refused)["error_description"]

        opaque = await provider.client_credentials("agent-ci", resource=None)  # no resource: not a JWT
        refused = await post_initialize(url, opaque)
        assert refused.status_code == 401 and challenge(refused)["error"] == "invalid_token"

        header, claims, _ = good.split(".")
        unsigned = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{claims}."
        refused = await post_initialize(url, unsigned)
        assert refused.status_code == 401
        assert "'none' are not accepted" in challenge(refused)["error_description"]
        tampered_claims = {**json.loads(base64.urlsafe_b64decode(claims + "==")), "client_id": "agent-alice"}
        tampered = f"{header}.{_b64(tampered_claims)}.{good.split('.')[2]}"
        refused = await post_initialize(url, tampered)
        assert refused.status_code == 401 and "does not verify" in challenge(refused)["error_description"]

        assert (await post_initialize(url, good)).status_code == 200
        clock.now += 3600  # the token lives 10 minutes
        refused = await post_initialize(url, good)
        assert refused.status_code == 401
        assert "the token expired at" in challenge(refused)["error_description"]
        assert refused.json()["error"]["message"].startswith("holdgate refused the access token: the token expired")


async def test_a_valid_token_of_an_unmapped_client_is_a_403_naming_the_client(tmp_path):
    async with oidc_provider() as provider, oauth_gateway(tmp_path, provider) as gw:
        url = gw.mcp_url("jobs")
        token = await provider.client_credentials("agent-unmapped", resource=url)
        refused = await post_initialize(url, token)
        assert refused.status_code == 403
        assert "client_id 'agent-unmapped' is not mapped to a grant" in refused.json()["error"]["message"]
        assert challenge(refused)["error"] == "insufficient_scope"


async def test_four_eyes_refuses_the_person_the_agent_acts_for_and_takes_somebody_else(tmp_path):
    async with (
        oidc_provider() as provider,
        oauth_gateway(tmp_path, provider, policy=oauth_policy(four_eyes=True)) as gw,
    ):
        url = gw.mcp_url("jobs")
        token = await provider.client_credentials("agent-alice", resource=url)  # carries act_email alice@example.com
        async with oauth_session(url, token) as session:
            held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
            [decision] = await wait_for_decisions(gw)
            assert decision.grant == "alice-agent" and decision.acting_for == "alice" and decision.four_eyes
            own = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
            assert own.status_code == 403
            assert "alice is the person the agent (alice-agent) acts for" in own.json()["detail"]
            other = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "bob")
            assert other.status_code == 200, other.text
            await asyncio.wait_for(held, 20)  # the demo knows no job-1: the upstream's answer, not holdgate's
        assert cancelled_jobs(tmp_path) == ["job-1"]


async def test_without_four_eyes_the_person_the_agent_acts_for_approves_their_own_agent(tmp_path):
    async with oidc_provider() as provider, oauth_gateway(tmp_path, provider) as gw:
        url = gw.mcp_url("jobs")
        token = await provider.client_credentials("agent-alice", resource=url)
        async with oauth_session(url, token) as session:
            held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-2"}))
            [decision] = await wait_for_decisions(gw)
            assert decision.acting_for == "alice" and not decision.four_eyes
            approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
            assert approved.status_code == 200, approved.text
            await asyncio.wait_for(held, 20)
        assert cancelled_jobs(tmp_path) == ["job-2"]


def cancelled_jobs(tmp_path) -> list[str]:
    """The jobs the upstream was asked to cancel (each call it ran)."""
    return [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
