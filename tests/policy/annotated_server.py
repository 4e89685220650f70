"""A stdio MCP server (the SDK's own) whose tools say more or less about themselves, for `policy init`.

No catalog lists it, so each tool's class comes from its annotations alone, or from nothing.
Run as `python -m tests.policy.annotated_server`.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer(name="annotated-test-server", log_level="WARNING")

TOOLS = {
    "reader": ToolAnnotations(read_only_hint=True),
    "eraser": ToolAnnotations(read_only_hint=False, destructive_hint=True),
    "writer": ToolAnnotations(read_only_hint=False, destructive_hint=False),
    "not-read-only": ToolAnnotations(read_only_hint=False),
    "titled": ToolAnnotations(title="Says nothing about risk"),
    "mystery": None,
}


def _register(name: str, annotations: ToolAnnotations | None) -> None:
    @server.tool(name=name, annotations=annotations, structured_output=False)
    async def handler() -> str:
        return name


for _name, _annotations in TOOLS.items():
    _register(_name, _annotations)


if __name__ == "__main__":
    server.run("stdio")
