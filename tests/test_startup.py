"""What the service says about its own settings when it starts."""

from __future__ import annotations

import asyncio
import json
import logging
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


async def _logged(caplog, needle: str, seconds: float = 15) -> list[str]:
    for _ in range(int(seconds / 0.05)):
        found = [r.getMessage() for r in caplog.records if needle in r.getMessage() and r.levelname == "WARNING"]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no WARNING with {needle!r}; logged: {[r.getMessage() for r in caplog.records]}")


def watching(state) -> None:
    """The harness turns the file watch off; this test is about it."""
    state.settings.watch_policy = True


async def test_editing_servers_json_while_serving_says_restart_to_apply(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("TIME_TOKEN", "secret-in-the-environment")
    servers_file = tmp_path / "config" / "servers.json"
    policy = {"version": "1", "default": "allow"}
    with caplog.at_level("INFO", logger="service.app"):
        async with run_gateway(tmp_path, policy=policy, servers={"time": time_server()}, configure=watching) as gw:
            await asyncio.sleep(0.5)  # the watcher is set up
            edited = {
                "time": {**time_server(), "env": {"TOKEN": "${TIME_TOKEN}"}},
                "jobs": {"url": "http://127.0.0.1:9/mcp"},
            }
            servers_file.write_text(json.dumps({"mcpServers": edited}))
            [notice] = await _logged(caplog, str(servers_file))
            assert notice == (
                f"{servers_file} changed (added: jobs; changed: time): restart holdgate to apply; "
                "until then it serves the servers it started with"
            )
            assert "secret-in-the-environment" not in caplog.text
            assert set(gw.state.servers) == {"time"}

            servers_file.write_text('{"mcpServers": {"time": {"comand": "x"}}}')
            [broken] = await _logged(caplog, f"{servers_file}: mcpServers.time")
            assert broken.endswith("; holdgate keeps serving the servers it started with")


@pytest.fixture
def scheduler_logger_unset() -> Iterator[logging.Logger]:
    """The `apscheduler` logger as in a fresh process (no level of its own), restored afterwards."""
    scheduler, watcher = logging.getLogger("apscheduler"), logging.getLogger("watchfiles")
    previous = scheduler.level, watcher.level
    scheduler.setLevel(logging.NOTSET)
    watcher.setLevel(logging.NOTSET)
    yield scheduler
    scheduler.setLevel(previous[0])
    watcher.setLevel(previous[1])


async def test_the_approval_sweep_does_not_log_at_info(tmp_path, caplog, scheduler_logger_unset):
    policy = {"version": "1", "default": "allow"}
    with caplog.at_level("INFO"):
        async with run_gateway(tmp_path, policy=policy, servers={}, approval_sweep_interval_s=0.1, configure=watching):
            await asyncio.sleep(1)
            (tmp_path / "config" / "servers.json").write_text(json.dumps({"mcpServers": {}}, indent=4))
            await asyncio.sleep(1)
    noise = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("apscheduler", "watchfiles")) and r.levelno < logging.WARNING
    ]
    assert not noise, "their warnings (a sweep skipped on a busy machine) still show; their INFO lines do not"


async def test_a_level_the_user_gave_apscheduler_is_kept(tmp_path, caplog, scheduler_logger_unset):
    scheduler_logger_unset.setLevel(logging.INFO)
    policy = {"version": "1", "default": "allow"}
    with caplog.at_level("INFO"):
        async with run_gateway(tmp_path, policy=policy, servers={}, approval_sweep_interval_s=0.1):
            await asyncio.sleep(1.5)
    assert [r for r in caplog.records if r.name.startswith("apscheduler") and r.levelname == "INFO"]
