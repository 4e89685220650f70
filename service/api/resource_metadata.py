"""OAuth 2.0 Protected Resource Metadata (RFC 9728) for each `/mcp/<server>`, as MCP authorization asks.

An MCP client that gets a 401 reads `resource_metadata` from its `WWW-Authenticate`, fetches this document, and
asks the authorization server named in it for a token whose audience is `resource`. Served only when OAuth for
agents is on (HOLDGATE_OAUTH_ISSUER), for the servers holdgate has; anything else is a 404. The document is public
by design (RFC 9728 section 3): it names the server and its authorization server, nothing more.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from service.api.deps import get_state
from service.identity import resource_metadata
from service.identity.access_tokens import METADATA_PREFIX

router = APIRouter(include_in_schema=False)


@router.get(METADATA_PREFIX + "/mcp/{server}")
async def protected_resource_metadata(request: Request, server: str) -> JSONResponse:
    state = get_state(request)
    settings = state.settings
    if not settings.oauth.enabled or settings.public_url is None:
        raise HTTPException(status_code=404, detail="OAuth for agents is not configured on this holdgate")
    if server not in state.endpoint.known:
        raise HTTPException(status_code=404, detail=f"no MCP server named {server[:100]!r} on this holdgate")
    return JSONResponse(
        resource_metadata(settings.oauth, settings.public_url, server),
        headers={"cache-control": "public, max-age=300"},
    )
