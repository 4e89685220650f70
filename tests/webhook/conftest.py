import pytest
from pydantic import ValidationError

from service.policy import rules
from tests.webhook.receiver import Receiver

_MODELS_WITH_APPROVALS = ("ApprovalIn", "CaseIn", "RuleIn", "GrantIn", "PolicyFileIn")


@pytest.fixture(autouse=True)
def policy_names_the_webhook():
    """Until the policy takes any loaded channel's name in `approval.channels` (the channels part of issue
    15; today it is a Literal of the built-in four), let these tests' policies name `webhook`, for this test
    only. Does nothing once the policy accepts it."""
    try:
        rules.ApprovalIn.model_validate({"channels": ["webhook"]})
    except ValidationError:
        pass
    else:
        yield
        return
    field = rules.ApprovalIn.model_fields["channels"]
    declared = field.annotation
    field.annotation = list[str]
    _rebuild()
    try:
        yield
    finally:
        field.annotation = declared
        _rebuild()


def _rebuild() -> None:
    for name in _MODELS_WITH_APPROVALS:
        getattr(rules, name).model_rebuild(force=True)


@pytest.fixture
async def receiver():
    async with Receiver() as running:
        yield running


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (bound and released: the OS does not hand it out again at once)."""
    from tests.support.harness import free_port

    return free_port()
