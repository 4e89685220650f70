"""The one pre-vote check (`check_vote`) says what `vote` would, and changes nothing; approvers are matched by
their contacts on the voter's channel, whichever form the decision stored them in (and the migration rewrites the
old form with the same meaning)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, select

from service import db
from service.approvals import (
    AlreadyDecided,
    AlreadyVoted,
    ApprovalError,
    ApprovalService,
    NotAllowed,
    ReasonRequired,
    UnknownDecision,
    Voter,
    approvers_of,
)
from service.models import Decision
from service.policy import ApprovalSpec, Approver, Verdict

ALICE = Approver(name="alice", contacts={"slack": ("U0ALICE",), "email": ("Alice@Example.com",)})
BOB = Approver(name="bob", contacts={"slack": ("U0BOB",)})
AGENT = Approver(name="agent", contacts={"email": ("agent@example.com",)})  # the grant that makes the call
VERDICT = Verdict(
    action="require_approval",
    rule="r",
    approval=ApprovalSpec(approvers=(ALICE, BOB, AGENT), quorum=2),
)
BEFORE = "9d4f2a6c1e83"  # the revision before approver contacts (decisions have their routing column)
"""The revision before approvers' contacts were keyed by channel."""


@pytest.fixture
async def engine(tmp_path, database) -> AsyncIterator:
    engine = db.create_engine(database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    yield engine
    await engine.dispose()


@pytest.fixture
async def service(engine) -> ApprovalService:
    await db.upgrade(engine)
    return ApprovalService(db.session_factory(engine), clock=lambda: 1_800_000_000.0)


async def opened(service: ApprovalService) -> Decision:
    decision, _ = await service.open_or_join(
        grant="agent",
        server="jobs",
        tool="cancel",
        arguments={},
        args_sha256="0" * 64,
        policy_version="v1",
        verdict=VERDICT,
    )
    return decision


async def refusal(call) -> type[ApprovalError] | None:
    try:
        await call
    except ApprovalError as exc:
        return type(exc)
    return None


async def test_check_vote_refuses_what_vote_refuses_and_changes_nothing(service):
    decision = await opened(service)
    cases = [
        ("d_unknown", Voter("slack", "U0ALICE"), "approve", None, UnknownDecision),
        (decision.id, Voter("slack", "U0NOBODY"), "approve", None, NotAllowed),
        (decision.id, Voter("slack", "u0alice"), "approve", None, NotAllowed),  # ids are exact...
        (decision.id, Voter("person", "agent"), "approve", None, NotAllowed),
        (decision.id, Voter("email", "agent@example.com"), "approve", None, NotAllowed),  # its own grant
        (decision.id, Voter("email", "alice@example.com"), "deny", " ", ReasonRequired),
    ]
    for decision_id, voter, value, reason, expected in cases:
        assert await refusal(service.check_vote(decision_id, voter, value, reason=reason)) is expected
    assert (await service.get(decision.id))[1] == [], "checks record nothing"
    for decision_id, voter, value, reason, expected in cases:
        assert await refusal(service.vote(decision_id, voter, value, via="test", reason=reason)) is expected

    # ...addresses are not case-sensitive; a channel's voter is its approver's name
    assert (await service.check_vote(decision.id, Voter("email", "ALICE@example.COM"))).id == decision.id
    assert service.approver_name(decision, Voter("email", "alice@example.com")) == "alice"
    assert service.approver_name(decision, Voter("slack", "U0BOB")) == "bob"
    assert service.approver_name(decision, Voter("operator", "local-operator")) == "local-operator"

    await service.vote(decision.id, Voter("slack", "U0ALICE"), "approve", via="test")
    assert await refusal(service.check_vote(decision.id, Voter("person", "alice"))) is AlreadyVoted
    assert (await service.check_vote(decision.id, Voter("person", "bob"))).status == "pending"
    await service.vote(decision.id, Voter("slack", "U0BOB"), "approve", via="test")
    assert await refusal(service.check_vote(decision.id, Voter("person", "bob"))) is AlreadyDecided


async def test_decisions_store_approvers_by_channel_and_still_read_the_old_form(service):
    decision = await opened(service)
    assert json.loads(decision.approvers) == [
        {"name": "alice", "contacts": {"slack": ["U0ALICE"], "email": ["Alice@Example.com"]}},
        {"name": "bob", "contacts": {"slack": ["U0BOB"]}},
        {"name": "agent", "contacts": {"email": ["agent@example.com"]}},
    ]
    old = Decision(
        **{**decision.model_dump(), "approvers": json.dumps([{"name": "bob", "slack_ids": ["U0BOB"], "emails": []}])}
    )
    assert approvers_of(old) == [{"name": "bob", "contacts": {"slack": ["U0BOB"]}}]
    assert service.approver_name(old, Voter("slack", "U0BOB")) == "bob"


async def test_the_migration_rewrites_stored_approvers_by_channel_and_back(engine):
    from alembic import command

    await db.upgrade(engine, BEFORE)
    legacy = [
        {"name": "alice", "slack_ids": ["U0ALICE"], "emails": ["alice@example.com"]},
        {"name": "slack:U0CAROL", "slack_ids": ["U0CAROL"], "emails": []},
        {"name": "dave", "slack_ids": [], "emails": []},
    ]
    # Only the columns the schema had then (today's model has later ones, e.g. decisions.scopes).
    row = dict(
        id="d_old",
        server="jobs",
        tool="cancel",
        grant="agent",
        arguments="{}",
        args_sha256="0" * 64,
        policy_version="v1",
        rule="r",
        approvers=json.dumps(legacy),
        channels="slack,email",
        created_at=1.0,
        expires_at=2.0,
    )
    sessions = db.session_factory(engine)
    async with db.session_scope(sessions) as session:
        await session.execute(insert(Decision.__table__).values(**row))  # type: ignore[attr-defined]

    async def stored() -> list[dict]:
        async with sessions() as session:
            return json.loads(await session.scalar(select(Decision.approvers).where(Decision.id == "d_old")))

    await db.upgrade(engine)
    assert await stored() == [
        {"name": "alice", "contacts": {"slack": ["U0ALICE"], "email": ["alice@example.com"]}},
        {"name": "slack:U0CAROL", "contacts": {"slack": ["U0CAROL"]}},
        {"name": "dave", "contacts": {}},
    ]
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(db._alembic_config(sync), BEFORE))
    assert await stored() == legacy


def test_the_package_exports_what_it_lists():
    import service.approvals

    exported = {name for name in dir(service.approvals) if not name.startswith("_")}
    modules = {name for name in exported if type(getattr(service.approvals, name)).__name__ == "module"}
    assert sorted(service.approvals.__all__) == sorted(exported - modules)
