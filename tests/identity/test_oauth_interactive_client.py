"""The interactive sign-in Claude Code and Cursor do, with the MCP TypeScript SDK's own OAuth client.

A real client (tests/peers/oauth_interactive_client.mjs: the SDK's own OAuth flow, given only storage and the
hand-off to the browser, as every client built on it gives it) connects to holdgate with no token; from the 401
the SDK finds holdgate's resource metadata and the provider's metadata, registers itself (dynamic client
registration) and builds an authorization URL; a real browser (Playwright, Chromium) follows it, signs in and
consents at a real provider (npm `oidc-provider`), and is redirected to the client's loopback callback; the SDK
exchanges the code (PKCE verifier, `resource`) and its `tools/list` and `tools/call` go through holdgate as the
grant the token maps to.

A dynamically registered client's id is new each time, so the grant is mapped from the person (`sub`), as
docs/oauth-clients.md tells teams that let their agents register themselves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.approvals.support import approval_policy
from tests.identity.test_oauth_agents import challenge, post_initialize
from tests.identity.test_oidc_sign_in import browser_page, sign_in_at_provider
from tests.support.harness import ROOT, Gateway, audit_events, executed_calls, free_port, jobs_server, run_gateway
from tests.support.oidc_provider import AGENT_SECRETS, DASHBOARD_CLIENT, Provider, oidc_provider

pytestmark = pytest.mark.usefixtures("node_available")

CLIENT_JS = ROOT / "tests/peers/oauth_interactive_client.mjs"
SDKS = {"v1.15": ("1.15.0", "mcp"), "v1": ("1.32.2", None), "v2": ("2.4.0", None)}
"""The TypeScript SDK releases in tests/peers (package-lock.json) whose OAuth client is driven, by the name the
client script takes (the pinned 1.15, the 1.x release the other peers bring, the v2 client package), and the scope
configured in the client. 1.15 asks for its configured scope only (none configured: no `scope`, and the provider
refuses the sign-in); later releases ask for the scopes holdgate's resource metadata lists
(`HOLDGATE_OAUTH_SCOPES`), so nothing is configured for them."""
CLIENT_STEP_S = 120
"""How long the client may take for one step (start-up, or the token exchange and two calls) on a loaded host."""


@asynccontextmanager
async def interactive_gateway(tmp_path, provider: Provider) -> AsyncIterator[Gateway]:
    """holdgate with OAuth for agents and two upstreams (`jobs`, `builds`): two resources, two audiences."""
    port = free_port()
    async with run_gateway(
        tmp_path,
        policy=approval_policy(),
        servers={
            "jobs": jobs_server(tmp_path / "jobs", tmp_path / "calls.jsonl"),
            "builds": jobs_server(tmp_path / "builds"),
        },
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        oauth_issuer=provider.issuer,
        oauth_grant_claim="sub",
        oauth_grants={"alice": "alice-agent"},
        oauth_scopes=["mcp"],
    ) as gw:
        yield gw


@dataclass
class InteractiveClient:
    """The client script's process and the JSON lines it prints, one step at a time."""

    process: asyncio.subprocess.Process

    async def next(self, event: str) -> dict[str, Any]:
        """Its next line, which must be `event` (an error line or an early exit fails the test with its text)."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), CLIENT_STEP_S)
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(f"the client exited before {event!r}: {(await self.process.stderr.read()).decode()}")
        said = json.loads(line)
        assert said["event"] == event, said
        return said


@asynccontextmanager
async def interactive_client(
    sdk: str, url: str, tool: str, arguments: dict[str, Any]
) -> AsyncIterator[tuple[InteractiveClient, str]]:
    """The client script with TypeScript SDK `sdk` for `url`, and the redirect URI it listens on."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "node",
        str(CLIENT_JS),
        sdk,
        url,
        str(port),
        tool,
        json.dumps(arguments),
        *([scope] if (scope := SDKS[sdk][1]) else []),
        cwd=ROOT / "tests/peers",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield InteractiveClient(process), f"http://localhost:{port}/callback"
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.communicate(), 30)


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (holdgate verified it; the test reads what it was given)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def sign_in(
    client: InteractiveClient, page: Any, provider: Provider, url: str, redirect_uri: str, sdk: str, account: str
) -> str:
    """Follow the client from holdgate's 401 through registration and the browser's sign-in as `account` to the
    redirect back to it, checking what it asked the provider for; the client id it registered."""
    from playwright.async_api import expect

    assert (await client.next("sdk"))["version"] == SDKS[sdk][0]
    # The client got holdgate's 401, found the provider, registered itself (it was given no client id)...
    registered = (await client.next("registered"))["client"]
    assert registered["client_id"] not in {DASHBOARD_CLIENT[0], *AGENT_SECRETS}
    assert registered["redirect_uris"] == [redirect_uri] and registered["token_endpoint_auth_method"] == "none"
    # ...and asks the browser to sign in there.
    authorize = urlsplit((await client.next("authorize"))["url"])
    asked = {name: values[0] for name, values in parse_qs(authorize.query).items()}
    assert f"{authorize.scheme}://{authorize.netloc}" == provider.issuer
    assert asked["response_type"] == "code" and asked["client_id"] == registered["client_id"]
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) >= 43  # PKCE
    assert asked["resource"] == url  # RFC 8707: the server's URL, from holdgate's resource metadata
    assert asked["redirect_uri"] == redirect_uri
    assert asked["scope"] == "mcp"

    await page.goto(authorize.geturl())
    await sign_in_at_provider(page, account)
    await page.wait_for_url(re.compile("^" + re.escape(redirect_uri)))
    await expect(page.locator("#signed-in")).to_be_visible()
    assert (await client.next("callback"))["query"]["code"]
    return registered["client_id"]


@asynccontextmanager
async def signing_in(tmp_path, chromium, sdk: str) -> AsyncIterator[tuple[Provider, Gateway, Any, str, Any]]:
    """The provider, holdgate in front of the jobs server, `sdk`'s client about to call list-async-jobs there (and
    its redirect URI), and a browser page for the person."""
    async with (
        oidc_provider() as provider,
        interactive_gateway(tmp_path, provider) as gw,
        interactive_client(sdk, gw.mcp_url("jobs"), "list-async-jobs", {}) as (client, redirect_uri),
        browser_page(chromium) as page,
    ):
        yield provider, gw, client, redirect_uri, page


@pytest.mark.parametrize("sdk", list(SDKS))
async def test_an_agent_signs_in_in_the_browser_and_calls_through_as_its_mapped_grant(tmp_path, chromium, sdk):
    async with signing_in(tmp_path, chromium, sdk) as (provider, gw, client, redirect_uri, page):
        url = gw.mcp_url("jobs")
        client_id = await sign_in(client, page, provider, url, redirect_uri, sdk, "alice")

        done = await client.next("done")
        assert done["tokenSaves"] == 1  # the code's exchange
        assert "list-async-jobs" in done["tools"]
        assert not done["result"].get("isError"), done["result"]

        token = done["tokens"]["access_token"]
        claims = jwt_claims(token)
        assert claims["aud"] == url and claims["iss"] == provider.issuer
        assert claims["sub"] == "alice" and claims["client_id"] == client_id
        assert claims["scope"] == "mcp"

        await gw.state.audit.flush()
        calls = [e for e in await audit_events(gw) if e.tool == "list-async-jobs"]
        assert [e.grant for e in calls] == ["alice-agent"]  # the token's sub, mapped by HOLDGATE_OAUTH_GRANTS
        assert [c["tool"] for c in executed_calls(tmp_path)] == ["list-async-jobs"]

        # The same token at another server of the same holdgate: not its audience, refused.
        other = gw.mcp_url("builds")
        refused = await post_initialize(other, token)
        assert refused.status_code == 401
        said = challenge(refused)
        assert said["error"] == "invalid_token"
        assert f"not for this server ({other})" in said["error_description"]
        assert said["resource_metadata"] == f"{gw.url}/.well-known/oauth-protected-resource/mcp/builds"
        assert (await post_initialize(url, token)).status_code == 200  # and still good where it was meant for


@pytest.mark.parametrize("sdk", list(SDKS))
async def test_a_person_the_grants_do_not_map_signs_in_and_is_refused_without_another_sign_in(tmp_path, chromium, sdk):
    """mallory's sign-in succeeds at the provider, but `HOLDGATE_OAUTH_GRANTS` maps only alice: the client stops with
    the 403 and nothing reaches the upstream. 1.32 and v2 first re-authorize once, as the 403's `insufficient_scope`
    asks them to, by refreshing the token (the provider issued a refresh token), so the person is not sent back to
    the browser (without a refresh token the SDKs' code would start a second sign-in: not exercised here)."""
    async with signing_in(tmp_path, chromium, sdk) as (provider, gw, client, redirect_uri, page):
        url = gw.mcp_url("jobs")
        await sign_in(client, page, provider, url, redirect_uri, sdk, "mallory")
        failed = await client.next("error")  # not a second "authorize"
        assert "403" in failed["message"]
        assert failed["tokenSaves"] == (1 if sdk == "v1.15" else 2)  # 1.32 and v2 refreshed once, then gave up

        token = failed["tokens"]["access_token"]
        assert jwt_claims(token)["sub"] == "mallory"
        refused = await post_initialize(url, token)
        assert refused.status_code == 403
        assert "sub 'mallory' is not mapped to a grant" in refused.json()["error"]["message"]
        assert executed_calls(tmp_path) == []
