import pytest

from tests.webhook.receiver import Receiver


@pytest.fixture
async def receiver():
    async with Receiver() as running:
        yield running


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (bound and released: the OS does not hand it out again at once)."""
    from tests.support.harness import free_port

    return free_port()
