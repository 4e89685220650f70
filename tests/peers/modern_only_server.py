"""A 2026-07-28-only MCP server: it refuses `initialize` (-32022, naming the one revision it speaks) and
answers `server/discover` and stateless requests. Nothing here is holdgate's; it stands for the servers
written after the handshake was removed.

Run: `python modern_only_server.py stdio` or `python modern_only_server.py http PORT`. Tools: `echo(text)`,
and `drop_table(name)`, which appends one JSON line per run to the file named by `MODERN_CALL_LOG`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import uvicorn
from mcp import MCPError
from mcp.server.mcpserver import MCPServer
from mcp_types import UNSUPPORTED_PROTOCOL_VERSION


async def refuse_the_handshake(ctx: Any, call_next: Any) -> Any:
    if ctx.method == "initialize":
        requested = (ctx.params or {}).get("protocolVersion")
        raise MCPError(
            code=UNSUPPORTED_PROTOCOL_VERSION,
            message="this server speaks 2026-07-28 only (no initialize)",
            data={"supported": ["2026-07-28"], "requested": requested},
        )
    return await call_next(ctx)


server = MCPServer("modern-only", middleware=[refuse_the_handshake])


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    return f"echo: {text}"


@server.tool()
def drop_table(name: str) -> str:
    """Pretend to drop a table (logs the run)."""
    log = os.environ.get("MODERN_CALL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"tool": "drop_table", "name": name}) + "\n")
    return f"dropped {name}"


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        app = server.streamable_http_app(streamable_http_path="/mcp")
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
