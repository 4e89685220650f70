"""`/email/decide/{token}`: the confirmation page (GET) and the decision (POST) behind email links."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["email"])
