"""Fixtures shared by the approvals tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from typer.testing import CliRunner, Result

from service.cli import app as cli_app
from service.settings import get_settings


@pytest.fixture
def holdgate(tmp_path, monkeypatch) -> Iterator[Callable[..., Awaitable[Result]]]:
    """`holdgate …` against this test's config and data directories, run in a thread so a gateway
    serving in the test's event loop keeps running while the command waits on the database."""
    runner = CliRunner()
    monkeypatch.setenv("HOLDGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOLDGATE_CONFIG_DIR", str(tmp_path / "config"))
    get_settings.cache_clear()

    def run(*args: str) -> Awaitable[Result]:
        return asyncio.to_thread(runner.invoke, cli_app, list(args))

    yield run
    get_settings.cache_clear()
