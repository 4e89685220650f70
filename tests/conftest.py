import shutil
from contextlib import asynccontextmanager

import pytest

from tests.support.harness import EVERYTHING_JS
from tests.support.tiers import mark_integration_tests


def pytest_report_header(config):
    return f"server-everything: {'installed' if EVERYTHING_JS.exists() else 'MISSING (run make peers)'}"


def pytest_collection_modifyitems(config, items):
    mark_integration_tests(items)


@pytest.fixture(scope="session")
def node_available() -> None:
    if shutil.which("node") is None or not EVERYTHING_JS.exists():
        pytest.fail("node and tests/peers (make peers) are required for MCP peer tests")


@pytest.fixture
async def postgres_url():
    """A fresh, empty PostgreSQL database for this test (skipped, with the reason, when none is reachable)."""
    async with _postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request):
    """Settings overrides that put the service on SQLite (the default) or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
        return
    async with _postgres() as url:
        yield {"database_url": url}


@asynccontextmanager
async def _postgres():
    from tests.support.postgres import fresh_database, unreachable_reason

    reason = await unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with fresh_database() as url:
        yield url
