"""The live policy: compiled once, swapped atomically on reload, last good one kept on error.

Readers take `holder.current` once per call and use that object throughout, so a reload in the
middle of a call never mixes two policies. Reload triggers: SIGHUP and a file watch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from service import metrics
from service.configfile import ConfigError
from service.policy import Policy, load_policy

logger = logging.getLogger(__name__)


class PolicySource(Protocol):
    """Where the current compiled policy lives (swapped atomically on reload): a `PolicyHolder`, or a test's."""

    @property
    def current(self) -> Policy: ...


class PolicyHolder:
    """Owns the current compiled `Policy` for one policy file."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._current = load_policy(path)  # a broken file at start-up refuses to start
        self.last_error: str | None = None
        metrics.policy_loaded(True, clock())
        self._listeners: list = []

    @property
    def current(self) -> Policy:
        return self._current

    def on_change(self, callback) -> None:
        """Call `callback(policy)` after each successful swap (e.g. to send tools/list_changed)."""
        self._listeners.append(callback)

    def reload(self) -> bool:
        """Load the file again; on error keep the last good policy and log why."""
        try:
            policy = load_policy(self.path)
        except ConfigError as exc:
            self.last_error = str(exc)
            metrics.policy_loaded(False, self._clock())
            logger.error("policy reload refused, keeping version %s: %s", self._current.version, exc)
            return False
        self.last_error = None
        metrics.policy_loaded(True, self._clock())
        if policy.version == self._current.version:
            return False
        previous, self._current = self._current, policy
        logger.info("policy reloaded: version %s -> %s", previous.version, policy.version)
        for callback in self._listeners:
            try:
                callback(policy)
            except Exception:
                logger.exception("policy change listener failed")
        return True

    async def watch(self) -> None:
        """Reload whenever the file changes (runs until cancelled)."""
        from watchfiles import awatch

        async for _changes in awatch(self.path.parent, recursive=False, debounce=200):
            if self.path.exists():
                await asyncio.to_thread(lambda: None)  # let the writer finish its rename
                self.reload()
