"""A local fake of Slack: the Web API methods holdgate calls, and a Socket Mode websocket.

It speaks Slack's wire format as slack-sdk sees it: `POST /api/<method>` with a Bearer token and
a JSON, form or query body; `{"ok": true, …}` answers with the fields real Slack returns;
`{"ok": false, "error": …}` for Slack-level errors; HTTP 429 with `Retry-After` and HTML 5xx pages
on demand (`fail`). `apps.connections.open` hands out a `ws://` URL of this server, where a
`hello` is sent on connect and `send_envelope` pushes real envelopes whose acks are recorded.

It also plays the Slack client: `click` and `submit` build the `block_actions` and
`view_submission` payloads a person's click would produce, from the buttons and modals holdgate
actually sent. Trigger ids expire after 3 s, as Slack's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

T = TypeVar("T")

BOT_TOKEN = "xoxb-1-holdgate-test"
APP_TOKEN = "xapp-1-A0HOLDGATE-1-test"
TEAM = {"id": "T0TEST", "domain": "holdgate-test"}
APP_ID = "A0HOLDGATE"
TRIGGER_TTL_S = 3.0


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Failure:
    status: int
    headers: dict[str, str]
    body: str
    content_type: str


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {
            "C0APPROVALS": {"id": "C0APPROVALS", "name": "approvals", "is_member": True, "is_private": False},
        }
        self.failures: dict[str, list[Failure]] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.triggers: dict[str, float] = {}
        self._seq = itertools.count(1)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- running ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What HOLDGATE_SLACK_API_URL is set to."""
        return f"http://127.0.0.1:{self.port}/api/"

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self.sockets):
            await ws.close()
        await self._runner.cleanup()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls) -> Iterator[FakeSlack]:
        """For synchronous tests (the CLI runs its own event loop): the fake on a loop of its own."""
        loop = asyncio.new_event_loop()
        fake = cls()
        ready = threading.Event()
        stop: asyncio.Future | None = None

        async def serve() -> None:
            nonlocal stop
            stop = loop.create_future()
            async with fake:
                ready.set()
                await stop

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield fake
        finally:
            loop.call_soon_threadsafe(stop.set_result, None)
            thread.join(10)
            loop.close()

    # -- scripting --------------------------------------------------------------------------------

    def fail(self, method: str, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        """The next `times` calls of `method` fail: 429 with Retry-After, or an HTML error page."""
        if status == 429:
            failure = Failure(
                429,
                {"Retry-After": str(retry_after or 1)},
                json.dumps({"ok": False, "error": "ratelimited"}),
                "application/json",
            )
        else:
            page = f"<html><body><h1>{status}</h1>Slack is having trouble</body></html>"
            failure = Failure(status, {}, page, "text/html")
        self.failures.setdefault(method, []).extend([failure] * times)

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Wait until `predicate()` is truthy (re-checked after every call and websocket message)."""
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                await self._changed.wait()
            return result

    async def wait_calls(self, method: str, count: int = 1) -> list[Call]:
        """The first `count` calls of `method`, once there are that many."""
        return await self.wait_for(lambda: len(self.calls_to(method)) >= count and self.calls_to(method)[:count])

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def posted(self, decision_id: str) -> list[dict[str, Any]]:
        """Top-level request messages (not thread replies) whose buttons or footer name `decision_id`."""
        return [m for m in self.messages.values() if decision_id in json.dumps(m["blocks"]) and m["blocks"]]

    # -- the Web API ------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or args.pop("token", None)
        self.calls.append(Call(method, args, token))
        self._touch()
        queued = self.failures.get(method)
        if queued:
            failure = queued.pop(0)
            return web.Response(
                status=failure.status, headers=failure.headers, text=failure.body, content_type=failure.content_type
            )
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token is None:
            return _error("not_authed")
        if token != expected:
            return _error("invalid_auth")
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return _error("unknown_method")
        return web.json_response(handler(args))

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://holdgate-test.slack.com/",
            "team": "holdgate test",
            "user": "holdgate",
            "team_id": TEAM["id"],
            "user_id": "U0BOT",
            "bot_id": "B0BOT",
            "is_enterprise_install": False,
        }

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args["channel"]
        if channel[0] in "UW":  # a user ID: the app's DM with that user
            channel = "D" + channel[1:]
        elif channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        ts = self._ts()
        message = {
            "type": "message",
            "channel": channel,
            "ts": ts,
            "text": args.get("text", ""),
            "blocks": _json(args.get("blocks")) or [],
            "thread_ts": args.get("thread_ts"),
            "user": "U0BOT",
            "bot_id": "B0BOT",
        }
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get((args["channel"], args["ts"]))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.update(text=args.get("text", ""), blocks=_json(args.get("blocks")) or [], edited=True)
        return {"ok": True, "channel": args["channel"], "ts": args["ts"], "text": message["text"], "message": message}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message_ts": self._ts()}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        issued = self.triggers.pop(args.get("trigger_id"), None)
        if issued is None or time.monotonic() - issued > TRIGGER_TTL_S:
            return {"ok": False, "error": "expired_trigger_id"}
        view = {**_json(args["view"]), "id": f"V{next(self._seq):08d}", "team_id": TEAM["id"], "app_id": APP_ID}
        view.setdefault("state", {"values": {}})
        self.views[view["id"]] = view
        return {"ok": True, "view": view}

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("view_id") not in self.views:
            return {"ok": False, "error": "not_found"}
        view = {**_json(args["view"]), "id": args["view_id"], "team_id": TEAM["id"], "app_id": APP_ID}
        self.views[view["id"]] = view
        return {"ok": True, "view": view}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.channels.get(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {"is_channel": True, "is_archived": False, **channel}}

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={uuid.uuid4()}&app_id={APP_ID}"}

    def _ts(self) -> str:
        n = next(self._seq)
        return f"{1_700_000_000 + n}.{n:06d}"

    # -- Socket Mode ------------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.sockets),
                "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        self._touch()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    data = json.loads(message.data)
                    if "envelope_id" in data:
                        self.acks[data["envelope_id"]] = data
                        self._touch()
        finally:
            self.sockets.remove(ws)
            self._touch()
        return ws

    async def send_envelope(self, payload: dict[str, Any], kind: str = "interactive") -> str:
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": payload.get("type") == "view_submission",
        }
        await self.sockets[-1].send_json(envelope)
        return envelope_id

    async def ack_of(self, envelope_id: str) -> dict[str, Any]:
        return await self.wait_for(lambda: self.acks.get(envelope_id))

    # -- a person in the Slack client -------------------------------------------------------------

    def click(self, message: dict[str, Any], action_id: str, user: str) -> dict[str, Any]:
        """The `block_actions` payload of `user` clicking the button `action_id` on `message`."""
        block, button = next(
            (block, element)
            for block in message["blocks"]
            if block["type"] == "actions"
            for element in block["elements"]
            if element.get("action_id") == action_id
        )
        trigger_id = f"{next(self._seq)}.{TEAM['id']}.{uuid.uuid4().hex}"
        self.triggers[trigger_id] = time.monotonic()
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": message["channel"],
                "is_ephemeral": False,
            },
            "trigger_id": trigger_id,
            "team": TEAM,
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message["channel"], "name": "approvals"},
            "message": message,
            "state": {"values": {}},
            "response_url": f"https://hooks.slack.com/actions/{TEAM['id']}/1/{uuid.uuid4().hex}",
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": block.get("block_id", ""),
                    "text": button["text"],
                    "value": button.get("value"),
                    "style": button.get("style"),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def submit(self, view_id: str, user: str, text: str) -> dict[str, Any]:
        """The `view_submission` payload of `user` typing `text` into the modal's input and submitting."""
        view = self.views[view_id]
        values = {
            block["block_id"]: {block["element"]["action_id"]: {"type": block["element"]["type"], "value": text}}
            for block in view["blocks"]
            if block["type"] == "input"
        }
        return {
            "type": "view_submission",
            "team": TEAM,
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": f"{next(self._seq)}.{TEAM['id']}.{uuid.uuid4().hex}",
            "view": {**view, "state": {"values": values}, "hash": uuid.uuid4().hex, "root_view_id": view_id},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }


def _error(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
