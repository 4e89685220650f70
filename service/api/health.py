"""Liveness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import get_state

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request) -> dict:
    """Up, with the policy version in force and each upstream's state."""
    state = get_state(request)
    return {
        "status": "ok",
        "policy_version": state.policy.current.version,
        "policy_reload_error": state.policy.last_error,
        "servers": {name: {"probed": proxy.info is not None} for name, proxy in state.proxies.items()},
    }


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
