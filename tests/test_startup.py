"""What the service says about its own settings when it starts."""

from __future__ import annotations

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
