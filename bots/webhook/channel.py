"""The webhook channel: each notification the outbox hands it is one signed JSON POST to one URL.

What it does with the answer:

- any 2xx: delivered. The answer's body is not read.
- anything else, no answer within `timeout_s`, or no connection: it raises, and the outbox retries the
  notification with back-off (the same body, so the same `X-Holdgate-Delivery`; a fresh timestamp and
  signature). A failure only delays the receiver; it never decides anything.
- a redirect (3xx) is a failure too, never followed: the signature binds the body, not the URL, so
  following would hand a signed decision (with the call's arguments, and on a 307/308 the URL's
  credentials) to wherever the receiver points, without anyone having configured that place. The error
  says to configure the final URL.

One receiver that hangs must not hold up everyone else's notifications (the outbox sends its rows one
after the other, all channels together): after a timeout or a connection failure the channel refuses at
once, without trying, for `timeout_s`, so the rest of the batch goes back for a later retry in no time.

The URL is a secret (README "Webhook"): nothing here logs or raises it, only its origin
(`https://hooks.example:443`). Credentials in it (`https://user:pass@host/`) are sent as HTTP Basic
authentication, over the connection only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from bots.webhook.payload import notification
from bots.webhook.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from service import __version__
from service.approvals import DecisionView
from service.approvals.channels import MessageKind

if TYPE_CHECKING:
    from service.approvals import ApprovalService

logger = logging.getLogger(__name__)

USER_AGENT = f"holdgate-webhook/{__version__}"


class WebhookError(Exception):
    """The receiver did not take the notification; the message names it by origin only."""


@dataclass(frozen=True)
class WebhookTarget:
    """The receiver's URL, and the one name of it that may be shown (its origin)."""

    url: URL = field(repr=False)
    origin: str

    @classmethod
    def parse(cls, url: str) -> WebhookTarget:
        """Refuses (ValueError naming the setting, never its value) anything but an absolute http(s) URL."""
        try:
            parsed = URL(url)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("HOLDGATE_WEBHOOK_URL must be an http:// or https:// URL with a host")
        return cls(parsed, _origin(parsed))

    def scrub(self, text: str) -> str:
        """`text` (an error from the HTTP client) without the URL, its credentials, path or query."""
        secrets = [str(self.url), self.url.raw_path_qs, self.url.path_qs]
        secrets += [
            part for part in (self.url.raw_user, self.url.raw_password, self.url.user, self.url.password) if part
        ]
        for secret in sorted({s for s in secrets if len(s) > 1}, key=len, reverse=True):
            text = text.replace(secret, "…")
        return text


class WebhookChannel:
    name = "webhook"

    def __init__(
        self,
        target: WebhookTarget,
        secret: bytes,
        *,
        public_url: str | None,
        timeout_s: float,
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self._secret = secret
        self.public_url = public_url
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._session: aiohttp.ClientSession | None = None
        self._quiet_until = 0.0
        """After a timeout or a connection failure: until then, refuse without trying (see the module)."""

    def __repr__(self) -> str:
        return f"WebhookChannel({self.target.origin})"

    async def start(self, approvals: ApprovalService) -> None:
        """Nothing to start: decisions come back through the REST API, not through this channel."""

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, kind: MessageKind, decision: DecisionView, ref: str | None) -> str | None:
        """POST the notification; returns its delivery id (a `request`'s is the `request_delivery` of the
        decision's later notifications)."""
        wait = self._quiet_until - self._monotonic()
        if wait > 0:
            raise WebhookError(
                f"{self.target.origin} failed to answer moments ago; not tried again for another {wait:.1f}s"
            )
        notice = notification(kind, decision, ref, public_url=self.public_url, max_bytes=self.max_body_bytes)
        if notice.omitted:
            logger.warning(
                "decision %s: webhook %s body over %d bytes, sent without %s (the receiver reads them from the API)",
                decision.id,
                kind,
                self.max_body_bytes,
                ", ".join(notice.omitted),
            )
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: kind,
            DELIVERY_HEADER: notice.delivery,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._secret, timestamp, notice.body),
        }
        status, reason, location = await self._post(notice.body, headers)
        if 200 <= status < 300:
            logger.info(
                "decision %s: webhook %s %s delivered to %s (HTTP %d)",
                decision.id,
                kind,
                notice.delivery,
                self.target.origin,
                status,
            )
            return notice.delivery
        if 300 <= status < 400:
            raise WebhookError(
                f"{self.target.origin} answered HTTP {status} {reason} (a redirect{location}); redirects are not "
                "followed: set HOLDGATE_WEBHOOK_URL to the URL that takes the POST"
            )
        raise WebhookError(f"{self.target.origin} answered HTTP {status} {reason}")

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
        """(status, reason, " to <where>" for a redirect); raises WebhookError when no answer came."""
        try:
            async with self._client().post(
                self.target.url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                return answer.status, answer.reason or "", _redirect_target(answer)
        except TimeoutError:
            self._quiet_until = self._monotonic() + self.timeout_s
            raise WebhookError(f"{self.target.origin} did not answer within {self.timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            self._quiet_until = self._monotonic() + self.timeout_s
            detail = self.target.scrub(f"{type(exc).__name__}: {exc}")
            raise WebhookError(f"cannot reach {self.target.origin}: {detail}") from None

    def _client(self) -> aiohttp.ClientSession:
        """One session (a connection pool) for the channel's life, made on first use inside the event loop.

        No cookies are kept (a receiver's Set-Cookie is not sent back) and no proxy or `.netrc` is read
        from the environment (`trust_env=False`): the POST goes where HOLDGATE_WEBHOOK_URL says, with the
        credentials it holds, and nowhere else.
        """
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session


def _redirect_target(answer: aiohttp.ClientResponse) -> str:
    """ " to <origin>" of a redirect's Location, for the error (never its path: it may hold a token)."""
    location = answer.headers.get("Location")
    if not location:
        return ""
    try:
        where = answer.url.join(URL(location))
    except ValueError:
        return ""
    return f" to {_origin(where)}" if where.host else ""


def _origin(url: URL) -> str:
    """`scheme://host:port`, the one part of a receiver's URL that is shown (an IPv6 host in brackets)."""
    host = f"[{url.host}]" if url.host and ":" in url.host else url.host
    return f"{url.scheme}://{host}:{url.port}"
