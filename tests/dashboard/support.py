"""Signing in to the dashboard from tests, as a browser would (cookie + the form's CSRF token)."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2

from tests.approvals.support import PERSON_TOKENS
from tests.support.harness import ROOT, Gateway

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def with_catalogs(tmp_path) -> None:
    """Ship config/catalog/ into the test's config dir (run_gateway writes policy and servers beside it)."""
    shutil.copytree(ROOT / "config/catalog", tmp_path / "config/catalog", dirs_exist_ok=True)


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


@asynccontextmanager
async def browser(gw: Gateway) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=gw.url, timeout=30, follow_redirects=False) as client:
        yield client


async def sign_in(client: httpx2.AsyncClient, person: str) -> str:
    """Sign `person` in on `client`; returns the session's CSRF token."""
    page = await client.get("/login")
    response = await client.post(
        "/login", data={"token": PERSON_TOKENS[person], "csrf": csrf_of(page.text), "next": "/"}
    )
    assert response.status_code == 303, response.text
    home = await client.get("/")
    assert home.status_code == 200
    return csrf_of(home.text)
