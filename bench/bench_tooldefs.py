"""The cost of pinned tool definitions: a call's check, and a `tools/list` that matches what is known.

A call's check (`ToolDefinitions.change_of`) is a dictionary lookup; a listing that matches the recorded hashes is
hashed and compared in memory with no database access. This times both on a SQLite database in a temporary
directory, for a 4-tool server (the demo jobs server's size) and a 100-tool server (each tool ~1.5 KB of JSON).

    .venv/bin/python bench/bench_tooldefs.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from service import db
from service.tooldefs import ToolDefinitions


def tools(count: int) -> list[dict[str, Any]]:
    properties = {f"p{j}": {"type": "string", "description": "x" * 40} for j in range(8)}
    return [
        {
            "name": f"tool-{i}",
            "description": "Does a thing. " * 20,
            "inputSchema": {"type": "object", "properties": properties},
            "annotations": {"readOnlyHint": True},
        }
        for i in range(count)
    ]


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        engine = db.create_engine(f"sqlite+aiosqlite:///{scratch}/holdgate.db")
        await db.upgrade(engine)
        registry = ToolDefinitions(db.session_factory(engine))
        for count in (4, 100):
            listing = tools(count)
            await registry.observe(f"s{count}", listing, complete=True)
            rounds = 200
            started = time.perf_counter()
            for _ in range(rounds):
                await registry.observe(f"s{count}", listing, complete=True)
            per = (time.perf_counter() - started) / rounds * 1e3
            print(f"tools/list of {count} tools, unchanged: {per:.3f} ms to check (no database access)")
        rounds = 1_000_000
        started = time.perf_counter()
        for _ in range(rounds):
            registry.change_of("s100", "tool-5")
        print(f"a call's check: {(time.perf_counter() - started) / rounds * 1e9:.0f} ns")
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
