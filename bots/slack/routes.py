"""`POST /slack/interactions`: Slack's signed interaction payloads (buttons, the reason modal).

The raw body's v0 signature is checked before anything is parsed (slack-sdk's `SignatureVerifier`:
HMAC-SHA256 of `v0:timestamp:body` with the signing secret, a 5-minute window, constant-time
compare). A missing, malformed, stale or wrong signature is a 401, logged, and changes nothing.
A good one is handed to the shared dispatcher, which acknowledges at once and works afterwards.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from slack_sdk.signature import SignatureVerifier

from bots.slack.channel import SlackChannel
from bots.slack.dispatch import BadPayload, dispatch

logger = logging.getLogger("holdgate.slack")

router = APIRouter(tags=["slack"])


@router.post("/slack/interactions", summary="Slack interactivity Request URL (signed by Slack)")
async def interactions(request: Request) -> Response:
    slack = _channel(request)
    if slack is None or slack.verifier is None:
        return JSONResponse(
            {"detail": "Slack interactivity over HTTP is not configured (HOLDGATE_SLACK_SIGNING_SECRET)"},
            status_code=404,
        )
    body = await request.body()
    if not _signed(slack.verifier, body, request):
        return JSONResponse({"detail": "invalid Slack signature"}, status_code=401)
    try:
        payload = parse_payload(body)
        ack = dispatch(slack, payload)
    except BadPayload as exc:
        logger.warning("Slack interaction refused: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return JSONResponse(ack) if ack is not None else Response(status_code=200)


def parse_payload(body: bytes) -> dict:
    """`payload=<JSON>`, form-encoded, as Slack sends interactions."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        payload = json.loads(form["payload"][0])
    except (ValueError, KeyError) as exc:
        raise BadPayload(f"not a form-encoded payload: {type(exc).__name__}") from None
    if not isinstance(payload, dict):
        raise BadPayload("payload is not a JSON object")
    return payload


def _signed(verifier: SignatureVerifier, body: bytes, request: Request) -> bool:
    timestamp = request.headers.get("x-slack-request-timestamp")
    signature = request.headers.get("x-slack-signature")
    try:
        valid = verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
    except (ValueError, TypeError):  # a timestamp that is not a number, a body that is not UTF-8
        valid = False
    if not valid:
        client = request.client.host if request.client else "?"
        logger.warning(
            "refused a Slack interaction from %s: %s signature (timestamp %r)",
            client,
            "missing" if not (timestamp and signature) else "invalid or stale",
            timestamp,
        )
    return valid


def _channel(request: Request) -> SlackChannel | None:
    state = request.app.state.holdgate
    if state.approvals is None:
        return None
    channel = state.approvals.outbox.channels.get("slack")
    return channel if isinstance(channel, SlackChannel) else None
