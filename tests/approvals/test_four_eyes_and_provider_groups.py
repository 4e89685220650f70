"""Four eyes and groups from the identity provider, as the votes judge them.

A four-eyes decision refuses the person its agent acts for, on every channel they vote from; without four eyes that
person may approve their own agent's call. The grant that made the call never approves it (the check holdgate had
before `acting_for` existed), whatever the rule. A person signed in with groups from the provider is an approver of
a decision whose rule names one of their groups, and votes as themself. The binding includes whom the agent acts for,
so two people's agents under one grant never share a decision.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service import db
from service.approvals import ApprovalError, ApprovalService, NotAllowed, Voter
from service.models import Decision
from service.policy import ApprovalSpec, Approver

ALICE = Approver(name="alice", contacts={"slack": ("U0ALICE",), "email": ("alice@example.com",)})
BOB = Approver(name="bob", contacts={"slack": ("U0BOB",)})


@pytest.fixture
async def service(tmp_path) -> AsyncIterator[ApprovalService]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    await db.upgrade(engine)
    yield ApprovalService(db.session_factory(engine), clock=lambda: 1_800_000_000.0)
    await engine.dispose()


async def opened(service: ApprovalService, *, acting_for: str | None, grant: str = "ci-bot", **spec) -> Decision:
    from service.policy import Verdict

    verdict = Verdict(action="require_approval", rule="r", approval=ApprovalSpec(approvers=(ALICE, BOB), **spec))
    decision, _ = await service.open_or_join(
        grant=grant,
        server="jobs",
        tool="cancel",
        arguments={},
        args_sha256="0" * 64,
        policy_version="v1",
        verdict=verdict,
        acting_for=acting_for,
    )
    return decision


async def refused(service: ApprovalService, decision: Decision, voter: Voter) -> str | None:
    try:
        await service.check_vote(decision.id, voter, "approve")
    except ApprovalError as exc:
        return exc.message
    return None


async def test_four_eyes_refuses_the_person_the_agent_acts_for_on_every_channel(service):
    decision = await opened(service, acting_for="alice", four_eyes=True)
    for voter in (Voter("person", "alice"), Voter("slack", "U0ALICE"), Voter("email", "ALICE@example.com")):
        message = await refused(service, decision, voter)
        assert message is not None and "alice is the person the agent (ci-bot) acts for" in message
    assert await refused(service, decision, Voter("slack", "U0BOB")) is None
    outcome = await service.vote(decision.id, Voter("slack", "U0BOB"), "approve", via="slack")
    assert outcome.decision.status == "approved" and outcome.decision.decided_by == "bob"


async def test_without_four_eyes_the_person_approves_their_own_agent(service):
    decision = await opened(service, acting_for="alice")
    assert not decision.four_eyes and decision.acting_for == "alice"
    outcome = await service.vote(decision.id, Voter("person", "alice"), "approve", via="api")
    assert outcome.decision.status == "approved"


async def test_a_grant_named_like_a_person_never_approves_its_own_call_whatever_the_rule(service):
    decision = await opened(service, acting_for="alice", grant="alice")  # CallHolding: a grant acting for itself
    with pytest.raises(NotAllowed, match="alice is the grant that made this call and cannot approve it"):
        await service.vote(decision.id, Voter("slack", "U0ALICE"), "approve", via="slack")


async def test_a_provider_group_member_votes_as_themself_only_on_decisions_naming_their_group(service):
    grouped = await opened(service, acting_for=None, groups=("ops",), quorum=2)
    carol = Voter("person", "carol@example.com", groups=frozenset({"ops", "sre"}))
    assert service.approver_name(grouped, carol) == "carol@example.com"
    outcome = await service.vote(grouped.id, carol, "approve", via="dashboard")
    assert not outcome.decided and "carol@example.com recorded; 1 more needed" in outcome.message
    dave = Voter("person", "dave@example.com", groups=frozenset({"ops"}))  # another member: a distinct vote
    assert (await service.vote(grouped.id, dave, "approve", via="dashboard")).decided

    ungrouped = await opened(service, acting_for="x")  # another binding: a new decision, naming no group
    message = await refused(service, ungrouped, carol)
    assert message == f"carol@example.com is not an approver of {ungrouped.id}"
    assert await refused(service, ungrouped, Voter("person", "mallory", groups=frozenset())) is not None


async def test_four_eyes_holds_for_a_provider_group_member_the_agent_acts_for(service):
    decision = await opened(service, acting_for="carol@example.com", groups=("ops",), four_eyes=True)
    carol = Voter("person", "carol@example.com", groups=frozenset({"ops"}))
    message = await refused(service, decision, carol)
    assert message is not None and "acts for" in message


async def test_two_peoples_agents_under_one_grant_never_share_a_decision(service):
    for_alice = await opened(service, acting_for="alice", four_eyes=True)
    for_bob = await opened(service, acting_for="bob", four_eyes=True)
    again_alice = await opened(service, acting_for="alice", four_eyes=True)
    nobody = await opened(service, acting_for=None)
    assert for_alice.id != for_bob.id and again_alice.id == for_alice.id
    assert nobody.id not in {for_alice.id, for_bob.id}
