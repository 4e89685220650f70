import shutil

import pytest

from tests.support.harness import EVERYTHING_JS


def pytest_report_header(config):
    return f"server-everything: {'installed' if EVERYTHING_JS.exists() else 'MISSING (run make peers)'}"


@pytest.fixture(scope="session")
def node_available() -> None:
    if shutil.which("node") is None or not EVERYTHING_JS.exists():
        pytest.fail("node and tests/peers (make peers) are required for MCP peer tests")
