"""What the service says about its own settings when it starts."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.support.harness import run_gateway, time_server


async def test_a_shared_database_without_a_secret_key_warns_at_start_up(tmp_path, database, caplog):
    policy = {"version": "1", "default": "allow"}
    with caplog.at_level("WARNING", logger="service.app"):
        async with run_gateway(tmp_path, policy=policy, servers={"time": time_server()}, **database):
            pass
    warned = [r.getMessage() for r in caplog.records if "HOLDGATE_SECRET_KEY is not set" in r.getMessage()]
    assert bool(warned) == ("database_url" in database), "a warning on PostgreSQL only"


async def test_a_shared_database_with_a_secret_key_does_not_warn(tmp_path, postgres_url, caplog):
    policy = {"version": "1", "default": "allow"}
    with caplog.at_level("WARNING", logger="service.app"):
        async with run_gateway(
            tmp_path,
            policy=policy,
            servers={"time": time_server()},
            database_url=postgres_url,
            secret_key="one key for every replica",
        ):
            pass
    assert not [r for r in caplog.records if "HOLDGATE_SECRET_KEY" in r.getMessage()]


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems give users (022), under which SQLite makes its files world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def test_the_sqlite_database_and_its_wal_are_private_to_the_owner(tmp_path, usual_umask):
    policy = {"version": "1", "default": "allow"}
    async with run_gateway(tmp_path, policy=policy, servers={}) as gw:
        async with gw.state.sessions() as session:  # the WAL and shared-memory files exist while connections do
            await session.execute(text("CREATE TABLE scratch (x INTEGER)"))
            await session.commit()
        data = tmp_path / "data"
        files = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data.iterdir()}
        assert {"holdgate.db", "holdgate.db-wal", "holdgate.db-shm"} <= set(files), files
        assert set(files.values()) == {0o600}, {name: oct(mode) for name, mode in files.items()}
        assert stat.S_IMODE(data.stat().st_mode) == 0o700


async def test_an_existing_open_data_directory_is_left_alone_with_a_warning(tmp_path, usual_umask, caplog):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    policy = {"version": "1", "default": "allow"}
    with caplog.at_level("WARNING", logger="service.db"):
        async with run_gateway(tmp_path, policy=policy, servers={}):
            pass
    assert stat.S_IMODE(data.stat().st_mode) == 0o755, "the user's directory is not changed behind their back"
    assert stat.S_IMODE((data / "holdgate.db").stat().st_mode) == 0o600
    warned = [r.getMessage() for r in caplog.records if r.name == "service.db"]
    assert any(f"the database directory {data} is open to other users (mode 0o755)" in m for m in warned), warned
