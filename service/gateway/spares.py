"""One started stdio upstream kept ready per stdio server, so a new session's first call does not wait for it.

A 2025-era downstream session gets its own upstream session, and for a stdio server that is a new
child process: its interpreter, imports and `initialize` cost about 0.5 s for a Python server, paid
by the session's first call. `SpareUpstream` starts one such client ahead of time; the next session
that needs one takes it (its listener becomes the session's link) and a new spare starts in the
background (a session arriving while the spare still starts waits for it, which is sooner than
starting its own). A spare found dead (the child exited or crashed) is closed and replaced; one that fails
to start is retried with a growing delay (up to a minute), and meanwhile sessions start their own.

What a spare could carry over to its session: nothing of another session's. It is a fresh process
that has done only `initialize`, with holdgate's own client info and capabilities, exactly as a
session's own start would: the downstream client's initialize is never forwarded upstream. The one
difference is who listens while it waits: a server that asks for roots then gets an empty list, so
on hand-over it is told the roots changed (it asks again and reaches the session's client);
elicitation or sampling requests are refused (no request of a client is in flight), and
notifications (a start-up log line) are dropped.

The spare is built from the server spec loaded at start-up, like every session's upstream;
servers.json is read once, so a change to it takes a restart, which closes the spares with
everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import mcp_types as types
from mcp_types import INTERNAL_ERROR

from service import logcontext
from service.background import cancel_and_wait, wait_until_set
from service.gateway.servers import StdioServerSpec
from service.gateway.upstream import UpstreamClient, UpstreamListener, UpstreamUnavailable

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 60.0
"""The longest wait before starting a spare again after starts failed in a row."""


class _WaitingListener:
    """Who listens to a spare before a session takes it: nobody, so refuse and remember what was asked."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.asked_for_roots = False

    async def on_elicit(self, params: types.ElicitRequestParams) -> types.ErrorData:
        return self._refuse("elicitation")

    async def on_sampling(self, params: types.CreateMessageRequestParams) -> types.ErrorData:
        return self._refuse("sampling")

    async def on_list_roots(self) -> types.ListRootsResult:
        self.asked_for_roots = True
        return types.ListRootsResult(roots=[])

    async def on_notification(self, notification: types.ServerNotification) -> None:
        return None

    def _refuse(self, what: str) -> types.ErrorData:
        return types.ErrorData(code=INTERNAL_ERROR, message=f"no client session is using server '{self.server}' yet")


class SpareUpstream:
    """The started spare of one stdio server, replaced in the background whenever it is taken or dies."""

    def __init__(
        self,
        spec: StdioServerSpec,
        *,
        config_dir: Path,
        connect_timeout: float,
        check_interval_s: float = 1.0,
        retry_delay_s: float = 1.0,
    ) -> None:
        """`check_interval_s`: how often a waiting spare is checked for life; `retry_delay_s`: the first wait
        after a failed start (doubled per failure in a row)."""
        self.spec = spec
        self._config_dir = config_dir
        self._connect_timeout = connect_timeout
        self._check_interval_s = check_interval_s
        self._retry_delay_s = retry_delay_s
        self._spare: UpstreamClient | None = None
        self._starting: asyncio.Task[UpstreamClient] | None = None
        """The spare being started, if one is."""
        self._promised = False
        """A session is waiting for `_starting`: it gets it, and the next one starts."""
        self._taken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """A started spare is waiting."""
        return self._spare is not None and self._spare.alive

    def start(self) -> None:
        """Start keeping a spare (in the background; `aclose` stops it)."""
        self._task = asyncio.create_task(self._keep(), name=f"spare:{self.spec.name}")

    async def take(self, listener: UpstreamListener) -> UpstreamClient | None:
        """The spare, now speaking to `listener`; None when there is none (start one yourself).

        A spare still starting is waited for by the first session that asks (it is ready sooner than
        a new one would be); further sessions meanwhile start their own.
        """
        client, self._spare = self._spare, None
        if client is None:
            client = await self._claim_starting()
            if client is None:
                return None
        self._taken.set()
        waiting = client.listener
        if not client.alive:
            self._close_later(client)
            return None
        client.listener = listener
        if isinstance(waiting, _WaitingListener) and waiting.asked_for_roots:
            try:
                await client.session.send_notification(types.RootsListChangedNotification())
            except Exception as exc:  # the session notices a dead upstream on its first call
                logger.debug("upstream %s: could not announce the roots to a spare: %s", self.spec.name, exc)
        return client

    async def _claim_starting(self) -> UpstreamClient | None:
        starting = self._starting
        if starting is None or self._promised:
            return None
        self._promised = True
        try:
            return await asyncio.shield(starting)
        except UpstreamUnavailable:
            return None  # the session's own start reports why
        except asyncio.CancelledError:
            if starting.cancelled():  # shutting down
                return None
            starting.add_done_callback(self._close_unclaimed)  # the session went away while it waited
            raise

    def _close_unclaimed(self, starting: asyncio.Task[UpstreamClient]) -> None:
        if not starting.cancelled() and starting.exception() is None:
            self._close_later(starting.result())

    async def aclose(self) -> None:
        """Stop replacing spares and end the one waiting (its child process with it)."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(Exception):  # however the keeper ended, its spare is closed next
                await cancel_and_wait(task)
        client, self._spare = self._spare, None
        if client is not None:
            await client.aclose()

    async def _keep(self) -> None:
        failures = 0
        while True:
            spare = self._spare
            if spare is not None and not spare.alive:
                logger.warning("upstream %s: the spare process exited; starting another", self.spec.name)
                self._spare = None
                await spare.aclose()
            if self._spare is None:
                self._starting = asyncio.create_task(
                    self._start_one(), name=f"spare-start:{self.spec.name}", context=logcontext.detached()
                )
                try:
                    client = await self._starting  # cancelled with this task: the start closes what it began
                except UpstreamUnavailable as exc:
                    failures += 1
                    delay = min(self._retry_delay_s * 2 ** (failures - 1), MAX_RETRY_DELAY_S)
                    logger.warning("%s (spare process; trying again in %gs)", exc.error.message, delay)
                    await asyncio.sleep(delay)
                    continue
                finally:
                    self._starting, promised, self._promised = None, self._promised, False
                failures = 0
                if promised:
                    continue  # a session took it as it started: start the next
                self._spare = client
            self._taken.clear()
            await wait_until_set(self._taken, self._check_interval_s)

    async def _start_one(self) -> UpstreamClient:
        client = UpstreamClient(
            self.spec,
            listener=_WaitingListener(self.spec.name),
            config_dir=self._config_dir,
            connect_timeout=self._connect_timeout,
        )
        try:
            await client.start()
        except asyncio.CancelledError:
            await asyncio.shield(client.aclose())  # a child started while shutting down is not left behind
            raise
        return client

    def _close_later(self, client: UpstreamClient) -> None:
        task = asyncio.create_task(client.aclose(), name=f"spare-close:{self.spec.name}")
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()
"""Closings in flight (the loop keeps only weak references to tasks)."""
