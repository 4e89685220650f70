"""A real OpenID Connect provider for the identity tests: panva's `oidc-provider` (tests/peers/oidc_provider.mjs).

Started on a free port like the other peers; its clients and accounts are in the script. `client_credentials`
asks it for an agent's access token (a JWT when a resource is named), as an MCP client's OAuth would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx2

from tests.support.harness import ROOT, free_port

PROVIDER_JS = ROOT / "tests/peers/oidc_provider.mjs"
DASHBOARD_CLIENT = ("holdgate-dashboard", "dashboard-secret-for-tests-only")
"""The dashboard's client id and secret at the test provider."""
AGENT_SECRETS = {name: f"{name}-secret" for name in ("agent-ci", "agent-alice", "agent-unmapped")}


@dataclass(frozen=True)
class Provider:
    issuer: str

    async def client_credentials(self, client_id: str, resource: str | None) -> str:
        """An access token for agent `client_id`, for `resource` (its audience)."""
        data = {"grant_type": "client_credentials", "scope": "mcp"}
        if resource is not None:
            data["resource"] = resource
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(f"{self.issuer}/token", data=data, auth=(client_id, AGENT_SECRETS[client_id]))
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


@contextlib.asynccontextmanager
async def oidc_provider(redirect_uris: Sequence[str] = (), port: int | None = None) -> AsyncIterator[Provider]:
    """The provider on 127.0.0.1:`port` (a free one by default), until the block ends."""
    port = port or free_port()
    process = await asyncio.create_subprocess_exec(
        "node",
        str(PROVIDER_JS),
        str(port),
        *redirect_uris,
        cwd=ROOT / "tests/peers",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.startswith(b"ready "):
            raise RuntimeError(f"oidc-provider did not start: {line!r}")
        yield Provider(issuer=line.decode().split()[1])
    finally:
        if process.returncode is None:
            process.terminate()
        try:  # read its output to the end too, so the pipe's transport closes in this event loop
            await asyncio.wait_for(process.communicate(), 10)
        except TimeoutError:
            process.kill()
            await process.communicate()
