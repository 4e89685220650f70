"""Odd access tokens and odd issuers, against the verifier with real keys and real signatures.

The issuer's documents are served by an httpx MockTransport (the `transport` seam of `IssuerKeys`), so each case
can count the fetches and take the issuer down; the tests with a real provider are in test_oauth_agents.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from service.identity import AccessTokenVerifier, IssuerKeys, IssuerUnavailable, TokenRefused
from service.identity.access_tokens import www_authenticate
from service.settings import OAuthSettings, Settings

ISSUER = "https://idp.example.com/tenant"
PUBLIC = "https://holdgate.example.com"
RESOURCE = f"{PUBLIC}/mcp/jobs"
NOW = 1_800_000_000.0
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Issuer:
    """The issuer's metadata and key set, counting fetches; `down` makes it answer 503."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.keys = {"k1": KEY}
        self.fetches: list[str] = []
        self.down = False

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.fetches.append(request.url.path)
        if self.down:
            return httpx2.Response(503)
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx2.Response(200, json={"issuer": self.issuer, "jwks_uri": "https://idp.example.com/jwks"})
        if request.url.path == "/jwks":
            keys = [{**json.loads(RSAAlgorithm.to_jwk(k.public_key())), "kid": kid} for kid, k in self.keys.items()]
            return httpx2.Response(200, json={"keys": keys})
        return httpx2.Response(404)


def verifier(issuer: Issuer, clock: list[float] | None = None, **settings: Any) -> AccessTokenVerifier:
    now = clock or [NOW]
    oauth = OAuthSettings(issuer=ISSUER, grants={"agent-ci": "ci-bot"}, **settings)
    keys = IssuerKeys(ISSUER, transport=httpx2.MockTransport(issuer.handle), clock=lambda: now[0])
    return AccessTokenVerifier(oauth, PUBLIC, keys=keys, clock=lambda: now[0])


def token(claims: dict[str, Any] | None = None, *, key=KEY, kid: str = "k1", alg: str = "RS256", **headers) -> str:
    body = {"iss": ISSUER, "aud": RESOURCE, "exp": NOW + 600, "iat": NOW, "client_id": "agent-ci", "sub": "agent-ci"}
    body.update(claims or {})
    return jwt.encode(
        {k: v for k, v in body.items() if v is not ...}, key, algorithm=alg, headers={"kid": kid, **headers}
    )


async def refusal(check: AccessTokenVerifier, raw: str) -> TokenRefused:
    with pytest.raises(TokenRefused) as info:
        await check.verify(raw, "jobs")
    return info.value


async def test_a_good_token_is_its_grant():
    caller = await verifier(Issuer()).verify(token(), "jobs")
    assert (caller.grant, caller.acting_for, caller.subject) == ("ci-bot", None, "agent-ci")


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"exp": ...}, "no 'exp' claim"),
        ({"exp": "soon"}, "exp is not a finite number"),
        ({"exp": NOW - 31}, "the token expired at"),
        ({"nbf": NOW + 31}, "not valid before"),
        ({"iat": NOW + 3600}, "issued in the future"),
        ({"aud": [f"{PUBLIC}/mcp/time"]}, "not for this server"),
        ({"aud": ...}, "no 'aud' claim"),
        ({"iss": "https://evil.example.com"}, "issued by 'https://evil.example.com'"),
        ({"iss": ...}, "issued by None"),
    ],
)
async def test_bad_claims_are_401_saying_which(claims, says):
    refused = await refusal(verifier(Issuer()), token(claims))
    assert refused.status == 401 and refused.error == "invalid_token" and says in refused.description


async def test_nan_and_infinite_expiry_never_mean_valid_forever():
    check = verifier(Issuer())
    for raw_exp in ("NaN", "Infinity", "1e400"):
        body = json.dumps({"iss": ISSUER, "aud": RESOURCE, "client_id": "agent-ci"})[:-1] + f', "exp": {raw_exp}}}'
        raw = jwt.api_jws.encode(body.encode(), KEY, algorithm="RS256", headers={"kid": "k1"})
        assert "exp is not a finite number" in (await refusal(check, raw)).description


async def test_within_the_leeway_an_expired_token_still_counts():
    assert (await verifier(Issuer()).verify(token({"exp": NOW - 29}), "jobs")).grant == "ci-bot"


async def test_algorithms_off_the_list_are_refused_before_any_key_is_read():
    issuer = Issuer()
    check = verifier(issuer)
    confused = jwt.api_jws.encode(
        json.dumps({"iss": ISSUER, "aud": RESOURCE, "exp": NOW + 60, "client_id": "agent-ci"}).encode(),
        "a shared secret of at least 32 bytes",
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    assert "'HS256' are not accepted" in (await refusal(check, confused)).description
    assert issuer.fetches == []


async def test_a_token_that_is_not_a_jwt_is_refused_plainly():
    check = verifier(Issuer())
    for raw in ("a.b.c", "....", "x" * 100_000 + ".y.z", "eyJhbGciOiJSUzI1NiJ9.\x00.sig"):
        refused = await refusal(check, raw)
        assert refused.status == 401 and "not a well-formed JWT" in refused.description


async def test_an_unknown_key_makes_one_fetch_then_waits_before_asking_again():
    issuer = Issuer()
    clock = [NOW]
    check = verifier(issuer, clock)
    await check.verify(token(), "jobs")
    assert issuer.fetches == ["/tenant/.well-known/openid-configuration", "/jwks"]
    clock[0] += 31
    assert "does not publish (kid 'k9')" in (await refusal(check, token(kid="k9", key=OTHER_KEY))).description
    assert issuer.fetches[-1] == "/jwks" and len(issuer.fetches) == 3
    for _ in range(50):  # a flood of made-up key ids: no further fetch within 30 s
        await refusal(check, token(kid="k9", key=OTHER_KEY))
    assert len(issuer.fetches) == 3

    issuer.keys["k2"] = OTHER_KEY  # the issuer rotates its keys
    clock[0] += 31
    assert (await check.verify(token(kid="k2", key=OTHER_KEY), "jobs")).grant == "ci-bot"
    assert len(issuer.fetches) == 4


async def test_a_signature_by_another_key_under_a_known_kid_does_not_verify():
    refused = await refusal(verifier(Issuer()), token(key=OTHER_KEY))
    assert "does not verify" in refused.description


async def test_an_issuer_out_of_reach_or_naming_another_issuer_is_unavailable_not_a_bad_token():
    down = Issuer()
    down.down = True
    with pytest.raises(IssuerUnavailable, match=r"answered HTTP 503"):
        await verifier(down).verify(token(), "jobs")
    with pytest.raises(IssuerUnavailable, match=re.escape("names the issuer 'https://idp.example.com/other'")):
        await verifier(Issuer("https://idp.example.com/other")).verify(token(), "jobs")


async def test_the_grant_claim_must_be_mapped_and_a_string():
    check = verifier(Issuer(), acting_for_claim="act")
    for claims, says in [
        ({"client_id": "agent-x"}, "client_id 'agent-x' is not mapped to a grant"),
        ({"client_id": ["agent-ci"]}, "no 'client_id' claim"),
        ({"client_id": "a" * 201}, "no 'client_id' claim"),
    ]:
        refused = await refusal(check, token(claims))
        assert refused.status == 403 and refused.error == "insufficient_scope" and says in refused.description
    caller = await check.verify(token({"act": "alice@example.com"}), "jobs")
    assert caller.acting_for == "alice@example.com"
    assert (await check.verify(token({"act": 7}), "jobs")).acting_for is None


def test_the_challenge_is_a_valid_quoted_string_whatever_the_description():
    refused = TokenRefused(401, "invalid_token", 'bad "quote" \\ and ünïcode\nline')
    value = www_authenticate(PUBLIC, "jobs", refused)
    assert value == (
        f'Bearer resource_metadata="{PUBLIC}/.well-known/oauth-protected-resource/mcp/jobs", '
        'error="invalid_token", error_description="bad ?quote? ? and ?n?code?line"'
    )


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"oauth_issuer": ISSUER}, "HOLDGATE_PUBLIC_URL is not"),
        ({"oauth_issuer": ISSUER, "public_url": PUBLIC, "oauth_algorithms": ["RS256", "HS256"]}, "may not allow HS256"),
        ({"oauth_issuer": ISSUER, "public_url": PUBLIC, "oauth_algorithms": ["none"]}, "may not allow none"),
        ({"oauth_issuer": "idp.example.com", "public_url": PUBLIC}, "must be an http(s) URL"),
        ({"oidc_issuer": ISSUER}, "HOLDGATE_OIDC_CLIENT_ID is not"),
    ],
)
def test_identity_settings_that_cannot_work_are_refused_naming_the_variable(settings, says):
    with pytest.raises(ValueError) as info:
        Settings(_env_file=None, **settings)
    assert says in str(info.value)


def test_flat_and_nested_environment_names_set_the_identity_sections(monkeypatch):
    monkeypatch.setenv("HOLDGATE_OAUTH_ISSUER", ISSUER)
    monkeypatch.setenv("HOLDGATE_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("HOLDGATE_OAUTH_GRANTS", '{"agent-ci": "ci-bot"}')
    monkeypatch.setenv("HOLDGATE_OIDC_ISSUER", ISSUER)
    monkeypatch.setenv("HOLDGATE_OIDC_CLIENT_ID", "holdgate")
    monkeypatch.setenv("HOLDGATE_OIDC_CLIENT_SECRET", "s3cret-value")
    monkeypatch.setenv("HOLDGATE_TOKEN_SIGN_IN", "false")
    settings = Settings(_env_file=None)
    assert settings.oauth.grants == {"agent-ci": "ci-bot"} and settings.oidc.client_id == "holdgate"
    assert not settings.oidc.token_sign_in and "s3cret" not in repr(settings)


async def test_an_issuer_that_is_down_is_asked_again_only_after_a_pause_and_known_keys_keep_working():
    issuer = Issuer()
    clock = [NOW]
    check = verifier(issuer, clock)
    issuer.down = True
    for _ in range(20):  # a burst of requests while the issuer is down: one attempt, the rest answered at once
        with pytest.raises(IssuerUnavailable):
            await check.verify(token(), "jobs")
    assert len(issuer.fetches) == 2  # discovery tried both metadata locations, once
    issuer.down = False
    clock[0] += 6
    assert (await check.verify(token(), "jobs")).grant == "ci-bot"

    issuer.down = True
    clock[0] += 3601  # the cached key set is old, and cannot be fetched again: its keys still verify
    fetches = len(issuer.fetches)
    assert (await check.verify(token({"exp": clock[0] + 60, "iat": clock[0]}), "jobs")).grant == "ci-bot"
    assert len(issuer.fetches) == fetches + 1


async def test_huge_or_odd_values_from_an_unverified_token_are_cut_in_the_refusal():
    check = verifier(Issuer())
    refused = await refusal(check, token({"iss": "https://evil.example.com/" + "x" * 100_000}))
    assert "issued by 'https://evil.example.com/xxx" in refused.description and len(refused.description) < 400
    refused = await refusal(check, token({"aud": ["a" * 5000] * 20}))
    assert "not for this server" in refused.description and len(refused.description) < 400
    refused = await refusal(check, token(kid="\x00" * 1000, key=OTHER_KEY))
    assert "does not publish" in refused.description and len(refused.description) < 400
    assert "\x00" not in www_authenticate(PUBLIC, "jobs", refused)
