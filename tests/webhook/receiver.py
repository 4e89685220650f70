"""A real HTTP receiver for webhook tests: an aiohttp server on 127.0.0.1 (a port the OS picks) that keeps
every request it gets and answers as the test scripts it (a status, a redirect, or never)."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict


@dataclass(frozen=True)
class Answer:
    """What the receiver answers one request with; `hang` never answers (until the server stops)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """`async with Receiver() as receiver:` ... `receiver.url`; `receiver.answer(...)` queues answers for the
    next requests (after them, 200)."""

    def __init__(self, path: str = "/hooks/holdgate") -> None:
        self.path = path
        self.received: list[Received] = []
        self._answers: deque[Answer] = deque()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def answer(self, *answers: Answer) -> None:
        self._answers.extend(answers)

    async def __aenter__(self) -> Receiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.method, request.path_qs, CIMultiDict(request.headers), body))
        answer = self._answers.popleft() if self._answers else Answer()
        if answer.hang:
            await self._stopping.wait()
        return web.Response(status=answer.status, headers=answer.headers, text="ok")

    async def wait_for(self, count: int, where: Any = lambda _: True, timeout: float = 20) -> list[Received]:
        """The first `count` requests matching `where`, waiting (bounded) for them."""
        async with asyncio.timeout(timeout):
            while True:
                found = [r for r in self.received if where(r)]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.02)
