"""Socket Mode: the same interactions over a websocket, for teams without a public URL.

slack-sdk's aiohttp `SocketModeClient` asks `apps.connections.open` (with the app-level token) for
a websocket URL, connects, reconnects when Slack asks it to or the link goes stale, and hands us
each envelope. An `interactive` envelope goes through the same `dispatch` as the HTTP route, and
its ack (with the dispatcher's response payload, e.g. the modal's errors) is sent right after.
No signature here: the connection itself is authenticated by the app token.
"""

from __future__ import annotations

import asyncio
import logging

from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bots.slack.channel import SlackChannel
from bots.slack.dispatch import BadPayload, dispatch
from service.background import cancel_and_wait

logger = logging.getLogger("holdgate.slack")

PING_INTERVAL_S = 10.0


class SocketModeListener:
    def __init__(self, slack: SlackChannel, app_token: str, *, ping_interval: float = PING_INTERVAL_S) -> None:
        self.slack = slack
        self.app_token = app_token
        self.ping_interval = ping_interval
        self.client: SocketModeClient | None = None
        self._connecting: asyncio.Task | None = None

    async def start(self) -> None:
        """Connect in the background: start-up does not wait for Slack (the client retries)."""
        self.client = SocketModeClient(
            app_token=self.app_token,
            web_client=self.slack.client,
            ping_interval=self.ping_interval,
            logger=logging.getLogger("holdgate.slack.socket_mode"),
        )
        self.client.socket_mode_request_listeners.append(self._on_request)
        self._connecting = asyncio.create_task(self.client.connect(), name="slack-socket-mode")

    async def _on_request(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        ack = None
        if request.type == "interactive":
            try:
                ack = dispatch(self.slack, request.payload)
            except BadPayload as exc:
                logger.warning("Socket Mode interaction refused: %s", exc)
        else:
            logger.debug("ignoring Socket Mode envelope of type %s", request.type)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id, payload=ack))

    async def aclose(self) -> None:
        if self._connecting is not None:
            await cancel_and_wait(self._connecting)
        if self.client is not None:
            await self.client.close()
