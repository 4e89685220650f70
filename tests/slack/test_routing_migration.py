"""The upgrade from the Slack-only `slack_channel` column to channel-neutral `routing` keeps each decision's
Slack channel: the decision still posts (and `holdgate` still shows it) where its rule said."""

from __future__ import annotations

from sqlalchemy import select, text

from service import db
from service.approvals.schemas import DecisionView
from service.models import Decision

SLACK_CHANNEL_REVISION = "5c1a9e7d2b40"


async def test_stored_slack_channels_become_slack_routing(tmp_path, database):
    url = database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine, SLACK_CHANNEL_REVISION)
        async with engine.begin() as conn:
            for decision_id, slack_channel in (("d_thread", "C0RULE:1712345678.000100"), ("d_dm", None)):
                await conn.execute(
                    text(
                        'INSERT INTO decisions (id, server, tool, "grant", arguments, args_sha256, policy_version, '
                        "rule, approvers, channels, slack_channel, quorum, on_timeout, created_at, expires_at, status) "
                        "VALUES (:id, 'jobs', 'cancel', 'agent', '{}', :sha, 'v1', 'cancel', '[]', 'slack', "
                        ":slack_channel, 1, 'deny', 1, 2, 'pending')"
                    ),
                    {"id": decision_id, "sha": "0" * 64, "slack_channel": slack_channel},
                )
        await db.upgrade(engine)
        async with db.session_factory(engine)() as session:
            stored = {d.id: d for d in await session.scalars(select(Decision))}
    finally:
        await engine.dispose()
    assert stored["d_thread"].routing == '{"slack": {"channel": "C0RULE:1712345678.000100"}}'
    assert stored["d_dm"].routing == "{}"
    thread, dm = DecisionView.of(stored["d_thread"]), DecisionView.of(stored["d_dm"])
    assert thread.slack_channel == "C0RULE:1712345678.000100" and thread.route("slack") == {
        "channel": "C0RULE:1712345678.000100"
    }
    assert dm.slack_channel is None and dm.route("slack") == {}
    assert "routing" not in thread.model_dump(), "the REST body keeps its shape"
