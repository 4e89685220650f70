"""Shadow rules: a candidate policy evaluated beside the enforced one on every call, never enforced.

`config/policy.shadow.json` (same format as policy.json; `HOLDGATE_SHADOW_POLICY_PATH` elsewhere) is
loaded, watched and hot-reloaded like the policy. The gateway asks `ShadowPolicy.decide` for each call
after the enforced verdict; only the enforced verdict acts. Where the two actions differ the audit record
carries the shadow's action and rule, and `holdgate_shadow_disagreements_total` counts it by rule.

What it refuses to do:
  - touch the database: a call's path gets no extra round trip. The shadow's rate limits are counted in
    this process's memory (`MemoryWindows`, the limits' own logic), on the calls the shadow would let
    through: per replica, so with several replicas each counts only its own calls (a replay of the audit,
    `holdgate policy replay`, counts them exactly);
  - break a call or the enforced policy: a missing file means no shadow; a file that does not load (at
    start-up or on reload) pauses shadowing, says why in the log, on /healthz and in
    `holdgate_shadow_policy_loaded`, and shadowing resumes when the file loads again; an error while
    evaluating is logged and counted, and the call goes on as enforced.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service import metrics
from service.configfile import ConfigError
from service.policy.compiler import load_policy
from service.policy.engine import Policy
from service.policy.limits import MemoryWindows

logger = logging.getLogger(__name__)

PRUNE_EVERY = 10_000
"""Shadow decisions between two sweeps of the in-memory limit keys whose calls all left their window."""


@dataclass(frozen=True, slots=True)
class ShadowVerdict:
    """What the shadow policy would have done with a call: `allow`, `deny`, `require_approval`, `rate_limited`."""

    action: str
    rule: str


class ShadowPolicy:
    """Owns the shadow policy file's compiled `Policy` (or none) and its in-memory limit counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: Policy | None = None
        self.last_error: str | None = None
        self.windows = MemoryWindows()
        self._decisions = 0
        self.reload()

    @property
    def active(self) -> bool:
        return self.current is not None

    def reload(self) -> bool:
        """Load the file again: absent -> no shadow; broken -> shadowing paused, with the reason kept."""
        if not self.path.exists():
            changed = self.current is not None or self.last_error is not None
            if self.current is not None:
                logger.info("shadow policy %s removed: shadowing stopped", self.path)
            self.current, self.last_error = None, None
            metrics.set_shadow_loaded(False)
            return changed
        try:
            policy = load_policy(self.path)
        except ConfigError as exc:
            self.current, self.last_error = None, str(exc)
            metrics.set_shadow_loaded(False)
            logger.error("shadow policy refused, shadowing paused (the enforced policy is not affected): %s", exc)
            return True
        previous = self.current
        self.current, self.last_error = policy, None
        metrics.set_shadow_loaded(True)
        if previous is None or previous.version != policy.version:
            logger.info("shadow policy %s loaded: version %s, %d rules", self.path, policy.version, policy.rule_count)
            return True
        return False

    def decide(
        self, grant: str, server: str, tool: str, arguments: dict[str, Any], *, now: float
    ) -> ShadowVerdict | None:
        """The shadow's verdict for a call (its limits counted in memory), or None when no shadow runs."""
        policy = self.current
        if policy is None:
            return None
        try:
            verdict = policy.evaluate(grant, server, tool, arguments, now=now)
            action: str = verdict.action
            if action != "deny" and verdict.limits:
                if not self.windows.consume(verdict.limits, grant=grant, now=now).allowed:
                    action = "rate_limited"
                self._decisions += 1
                if self._decisions % PRUNE_EVERY == 0:
                    self.windows.prune(now)
            return ShadowVerdict(action, verdict.rule)
        except Exception:  # never into the call: the enforced policy decides alone
            logger.exception("shadow policy: evaluating a call of %s/%s failed", server, tool)
            metrics.count_shadow_error()
            return None

    async def watch(self) -> None:
        """Reload whenever the shadow file is written, created or removed (runs until cancelled)."""
        from watchfiles import awatch

        name = self.path.name
        if not self.path.parent.is_dir():
            logger.warning("shadow policy: %s is not a directory, so %s is not watched", self.path.parent, name)
            return

        def is_shadow_file(_change: object, changed: str) -> bool:
            return Path(changed).name == name

        async for _changes in awatch(self.path.parent, recursive=False, debounce=200, watch_filter=is_shadow_file):
            await asyncio.to_thread(lambda: None)  # let the writer finish its rename
            self.reload()


def disagreement(shadow: ShadowVerdict | None, enforced: str) -> ShadowVerdict | None:
    """The shadow's verdict when its action differs from the enforced one (counted by rule), else None."""
    if shadow is None:
        return None
    metrics.count_shadow_call()
    if shadow.action == enforced:
        return None
    metrics.count_shadow_disagreement(shadow.rule, enforced, shadow.action)
    return shadow
