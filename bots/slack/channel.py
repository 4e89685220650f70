"""`SlackChannel`: approval requests as Slack messages, edited as the decision moves on.

Outgoing (the outbox calls `deliver`): a `request` is posted with `chat.postMessage` to the rule's
`slack_channel` (`C0123ABC`, or `C0123ABC:1712345678.000100` for a thread), else as a DM to every
approver with a Slack ID, else to `HOLDGATE_SLACK_DEFAULT_CHANNEL`. Its reference is the list of
posts (`channel:ts[:thread_ts]`, space-separated); an `update` edits each with `chat.update`, a
`reminder` replies in each thread. Any Slack failure (5xx, 429, network) raises, so the outbox
retries with back-off; after a 429 the channel also waits out `Retry-After` before calling Slack
again. slack-sdk's own retry handlers are off: retrying is the outbox's job, and it never decides.

Incoming (clicks): `start` keeps the `ApprovalService` that votes go to, and starts Socket Mode
when an app token is configured; `bots.slack.dispatch` turns payloads into votes through `spawn`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack import blocks
from bots.slack.settings import SlackSettings
from service.approvals import ApprovalService, DecisionView
from service.approvals.channels import MessageKind
from service.catalog import Catalogs, ToolRisk
from service.settings import Settings

logger = logging.getLogger("holdgate.slack")

SLACK_TIMEOUT_S = 10
"""Per Web API call; a slower Slack is a failure the outbox retries."""
_THREAD = re.compile(r"^(?P<channel>[^:\s]+):(?P<thread>\d+\.\d+)$")


class SlackUnavailable(Exception):
    """Slack refused or failed a call; the outbox will try again later."""


@dataclass(frozen=True, slots=True)
class Post:
    """One posted request message: where it is, and the thread it lives in (if any)."""

    channel: str
    ts: str
    thread_ts: str | None = None

    def encode(self) -> str:
        return f"{self.channel}:{self.ts}" + (f":{self.thread_ts}" if self.thread_ts else "")

    @classmethod
    def decode(cls, text: str) -> Post:
        channel, ts, *thread = text.split(":")
        return cls(channel, ts, thread[0] if thread else None)


def encode_posts(posts: list[Post]) -> str:
    """A request's reference; "" means it was delivered nowhere (nothing to edit later)."""
    return " ".join(post.encode() for post in posts)


def decode_posts(ref: str) -> list[Post]:
    return [Post.decode(part) for part in ref.split()]


def thread_of(target: str) -> tuple[str, str | None]:
    """`C0123:1712345678.000100` -> (C0123, that thread); `C0123` -> (C0123, None)."""
    match = _THREAD.match(target)
    return (match["channel"], match["thread"]) if match else (target, None)


def web_client(slack: SlackSettings) -> AsyncWebClient:
    """The Web API client for the bot token, pointed at `HOLDGATE_SLACK_API_URL` when set."""
    token = slack.bot_token.get_secret_value() if slack.bot_token else None
    kwargs: dict[str, Any] = {"base_url": _base_url(slack.api_url)} if slack.api_url else {}
    return AsyncWebClient(token=token, timeout=SLACK_TIMEOUT_S, retry_handlers=[], **kwargs)


def _base_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class Listener(Protocol):
    """A way in for clicks that the channel starts and stops with itself (Socket Mode)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class SlackChannel:
    name = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        signing_secret: str | None = None,
        app_token: str | None = None,
        default_channel: str | None = None,
        public_url: str | None = None,
        risk: Callable[[str, str], ToolRisk | None] = lambda server, tool: None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.verifier = SignatureVerifier(signing_secret, clock=_Clock(clock)) if signing_secret else None
        self.app_token = app_token
        self.default_channel = default_channel
        self.public_url = public_url.rstrip("/") if public_url else None
        self.risk = risk
        self.monotonic = monotonic
        self.approvals: ApprovalService | None = None
        self.socket_mode: Listener | None = None
        """Socket Mode's connection (`bots.slack.socket_mode`), given by the plug-in when an app token is set."""
        self._quiet_until = 0.0
        self._posted: dict[str, dict[str, Post]] = {}
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackChannel:
        """The channel for the service's settings and their Slack section (which has a bot token)."""
        slack = settings.section("slack", SlackSettings)
        catalogs = Catalogs.load(settings.catalog_dir)
        return cls(
            web_client(slack),
            signing_secret=_secret(slack.signing_secret),
            app_token=_secret(slack.app_token),
            default_channel=slack.default_channel,
            public_url=settings.public_url,
            risk=catalogs.risk,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, approvals: ApprovalService) -> None:
        """Keep the service that clicks vote through; connect Socket Mode when configured."""
        self.approvals = approvals
        if self.socket_mode is not None:
            await self.socket_mode.start()

    def approval_service(self) -> ApprovalService:
        """The service clicks vote through. The gateway starts its channels before it serves, so a click
        that arrives earlier is a start-up bug: it fails loudly (the spawned work logs it), never silently."""
        if self.approvals is None:
            raise RuntimeError("the Slack channel is not started: no approvals service to vote through")
        return self.approvals

    async def aclose(self) -> None:
        if self.socket_mode is not None:
            await self.socket_mode.aclose()
        if self._tasks:  # clicks being handled: let them finish (they are one vote each), briefly
            _, pending = await asyncio.wait(set(self._tasks), timeout=5)
            for task in pending:
                task.cancel()
            if pending:  # and see them end: a vote cut off mid-transaction still closes its connection
                await asyncio.wait(pending)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run an interaction's work after the ack; failures are logged, never raised to Slack."""
        task = asyncio.create_task(self._guard(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            logger.exception("Slack interaction failed")

    # -- outgoing ---------------------------------------------------------------------------------

    async def deliver(self, kind: MessageKind, decision: DecisionView, ref: str | None) -> str | None:
        wait = self._quiet_until - self.monotonic()
        if wait > 0:
            raise SlackUnavailable(f"rate limited by Slack; calling again in {wait:.1f}s")
        try:
            if kind == "request":
                return await self._post_request(decision)
            if ref is None:
                # The request has not been posted yet (it is being retried); this waits for it.
                raise SlackUnavailable(f"the request for {decision.id} is not posted yet")
            posts = decode_posts(ref)
            if kind == "reminder":
                for post in posts:
                    await self.client.chat_postMessage(
                        channel=post.channel, thread_ts=post.thread_ts or post.ts, text=blocks.reminder_text(decision)
                    )
            else:
                message = self.render(decision)
                for post in posts:
                    await self.update(post, message)
            return None
        except SlackApiError as exc:
            raise self._failure(exc) from exc

    async def _post_request(self, decision: DecisionView) -> str:
        targets = self.targets(decision)
        if not targets:
            logger.error(
                "decision %s: nowhere to post on Slack: the rule has no slack_channel, no approver has a Slack "
                "ID, and HOLDGATE_SLACK_DEFAULT_CHANNEL is not set",
                decision.id,
            )
            return encode_posts([])
        message = self.render(decision)  # a late delivery shows the decision as it stands now
        done = self._posted.setdefault(decision.id, {})  # a retry does not post twice where it succeeded
        for target in targets:
            if target in done:
                continue
            channel, thread = thread_of(target)
            response = await self.client.chat_postMessage(
                channel=channel,
                thread_ts=thread,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
            done[target] = Post(response["channel"], response["ts"], thread)
        posts = [done[target] for target in targets]
        del self._posted[decision.id]
        logger.info("decision %s: request posted to Slack (%s)", decision.id, encode_posts(posts))
        return encode_posts(posts)

    def targets(self, decision: DecisionView) -> list[str]:
        """Where the request goes: the rule's channel, else each approver's DM, else the default channel."""
        channel = decision.route(self.name).get("channel")
        if channel:
            return [channel]
        approvers = [a for a in decision.approver_details if decision.may_vote(a.name)]  # the others cannot approve
        users = [user for approver in approvers for user in approver.ids(self.name)]
        if users:
            return list(dict.fromkeys(users))
        return [self.default_channel] if self.default_channel else []

    def render(self, decision: DecisionView) -> blocks.Message:
        risk = self.risk(decision.server, decision.tool)
        return blocks.decision_message(decision, risk=risk, link=self.link(decision))

    def link(self, decision: DecisionView) -> str | None:
        """The decision on the dashboard, when the service knows its public URL."""
        return f"{self.public_url}/decisions/{decision.id}" if self.public_url else None

    async def update(self, post: Post, message: blocks.Message) -> None:
        await self.client.chat_update(channel=post.channel, ts=post.ts, text=message.text, blocks=message.blocks)

    def _failure(self, exc: SlackApiError) -> SlackUnavailable:
        response = exc.response
        status = getattr(response, "status_code", None)
        if status == 429:
            retry_after = _retry_after(response)
            self._quiet_until = max(self._quiet_until, self.monotonic() + retry_after)
            return SlackUnavailable(f"Slack rate limit (429); Retry-After {retry_after:g}s")
        error = response.get("error") if isinstance(getattr(response, "data", None), dict) else None
        return SlackUnavailable(f"Slack answered {status}: {error or exc}")

    # -- incoming helpers (used by dispatch) ------------------------------------------------------

    async def ephemeral(self, channel: str | None, user: str, text: str) -> None:
        """A message only `user` sees, in the conversation they clicked in (logged if it fails)."""
        if channel is None:
            logger.warning("no conversation to tell Slack user %s: %s", user, text)
            return
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except Exception as exc:
            logger.warning("chat.postEphemeral to %s in %s failed: %s", user, channel, exc)


def _retry_after(response: Any) -> float:
    headers = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                break
    return 1.0


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
