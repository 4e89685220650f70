"""Link tokens: bound to one decision, one address and one action; expire with the decision."""

from __future__ import annotations

import pytest

from bots.email.links import BadLink, ExpiredLink, LinkClaim, LinkSigner
from tests.support.harness import Clock

KEY = "a-test-secret-key-of-some-length"


def signer(now: float = 1_000.0) -> tuple[LinkSigner, Clock]:
    clock = Clock(now)
    return LinkSigner(KEY, clock=clock), clock


def test_a_signed_claim_verifies_to_itself():
    links, _ = signer()
    claim = LinkClaim("d_abc", "alice@example.com", "approve", 2_000.0)
    token = links.sign(claim)
    assert links.verify(token) == claim
    assert token.replace("-", "").replace("_", "").replace(".", "").isalnum(), "URL-safe"


def test_any_change_to_the_token_is_refused():
    links, _ = signer()
    token = links.sign(LinkClaim("d_abc", "alice@example.com", "approve", 2_000.0))
    for i in range(len(token)):
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        with pytest.raises(BadLink):
            links.verify(changed)
    for broken in ("", "x", token[:-1], token + "x", token.split(".")[0]):
        with pytest.raises(BadLink):
            links.verify(broken)


def test_a_token_from_another_key_is_refused():
    links, _ = signer()
    foreign = LinkSigner("another-secret-key-entirely-000").sign(LinkClaim("d_abc", "a@b.co", "approve", 2_000.0))
    with pytest.raises(BadLink, match="not made by this gateway"):
        links.verify(foreign)


def test_the_link_expires_with_the_decision():
    links, clock = signer(now=1_000.0)
    claim = LinkClaim("d_abc", "alice@example.com", "deny", 1_060.0)
    token = links.sign(claim)
    clock.now = 1_059.9
    assert links.verify(token) == claim
    clock.now = 1_060.0
    with pytest.raises(ExpiredLink) as expired:
        links.verify(token)
    assert expired.value.claim == claim
    assert "1970-01-01T00:17:40Z" in expired.value.message


def test_approve_and_deny_links_differ_and_neither_becomes_the_other():
    links, _ = signer()
    approve = links.sign(LinkClaim("d_abc", "alice@example.com", "approve", 2_000.0))
    deny = links.sign(LinkClaim("d_abc", "alice@example.com", "deny", 2_000.0))
    other = links.sign(LinkClaim("d_xyz", "alice@example.com", "approve", 2_000.0))
    assert len({approve, deny, other}) == 3
    assert links.verify(approve).action == "approve" and links.verify(deny).action == "deny"


def test_the_form_token_belongs_to_one_link_only():
    links, _ = signer()
    a = links.sign(LinkClaim("d_a", "alice@example.com", "approve", 2_000.0))
    b = links.sign(LinkClaim("d_b", "alice@example.com", "approve", 2_000.0))
    assert links.check_form_token(a, links.form_token(a))
    assert not links.check_form_token(a, links.form_token(b))
    assert not links.check_form_token(a, "")
    assert links.form_token(a) != a.rsplit(".", 1)[1], "not the link's own signature"
    assert not LinkSigner("another-secret-key-entirely-000").check_form_token(a, links.form_token(a))
