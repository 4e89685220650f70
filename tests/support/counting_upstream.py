"""A stdio MCP upstream that counts executions durably: the tool `transfer` appends (and fsyncs) one line
`{"key": …}` to `COUNT_LOG` the moment it runs, then takes `COUNT_DELAY_S` to answer.

A crash test kills the gateway while calls are in flight and then reads the log: it says, whatever the gateway
believed, how many times each call really reached the upstream. Run as `python tests/support/counting_upstream.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer


def executions(log: Path) -> dict[str, int]:
    """How many times each key ran, from the log."""
    counts: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            key = json.loads(line)["key"]
            counts[key] = counts.get(key, 0) + 1
    return counts


def build_server(log: Path, delay: float) -> MCPServer:
    server = MCPServer(name="counting-upstream", version="0.1.0", log_level="WARNING")

    @server.tool(name="transfer", description="Move money once per key (counts every execution).")
    async def transfer(key: str) -> str:
        with log.open("a") as handle:
            handle.write(json.dumps({"key": key, "pid": os.getpid()}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        await asyncio.sleep(delay)
        return f"transferred {key}"

    return server


if __name__ == "__main__":
    build_server(Path(os.environ["COUNT_LOG"]), float(os.environ.get("COUNT_DELAY_S", "0"))).run("stdio")
