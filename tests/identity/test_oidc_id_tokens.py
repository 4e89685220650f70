"""The ID token and the answers a provider sends back at sign-in, checked by holdgate whatever the provider says.

A provider answered through an httpx MockTransport (the `transport` seam of `OidcClient`): its token endpoint returns
whatever ID token a case needs, signed with real keys. The sign-in against a real provider, in a real browser, is
test_oidc_sign_in.py.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr

from service.identity import OidcClient, OidcError
from service.settings import OidcSettings

ISSUER = "https://idp.example.com"
CLIENT = "holdgate"
REDIRECT = "https://holdgate.example.com/login/oidc/callback"
NOW = 1_800_000_000.0
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeProvider:
    """Discovery, keys, token and userinfo endpoints; `id_claims`/`userinfo` set per case; requests recorded."""

    def __init__(self) -> None:
        self.id_claims: dict[str, Any] = {}
        self.id_key = KEY
        self.id_alg = "RS256"
        self.userinfo: dict[str, Any] | None = None
        self.token_requests: list[dict[str, list[str]]] = []
        self.end_session: Any = None
        self.down = False

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if self.down:
            raise httpx2.ConnectError("provider down", request=request)
        if path == "/.well-known/openid-configuration":
            metadata = {
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/auth",
                "token_endpoint": f"{ISSUER}/token",
                "userinfo_endpoint": f"{ISSUER}/me",
                "jwks_uri": f"{ISSUER}/jwks",
            }
            if self.end_session is not None:
                metadata["end_session_endpoint"] = self.end_session
            return httpx2.Response(200, json=metadata)
        if path == "/jwks":
            return httpx2.Response(
                200, json={"keys": [{**json.loads(RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k"}]}
            )
        if path == "/token":
            self.token_requests.append(parse_qs(request.content.decode()))
            id_token = jwt.encode(self.id_claims, self.id_key, algorithm=self.id_alg, headers={"kid": "k"})
            return httpx2.Response(200, json={"access_token": "at", "token_type": "Bearer", "id_token": id_token})
        if path == "/me":
            return httpx2.Response(200, json=self.userinfo) if self.userinfo is not None else httpx2.Response(401)
        return httpx2.Response(404)


def client(provider: FakeProvider, **settings: Any) -> OidcClient:
    oidc = OidcSettings(issuer=ISSUER, client_id=CLIENT, client_secret=SecretStr("s"), **settings)
    return OidcClient(oidc, clock=lambda: NOW, transport=httpx2.MockTransport(provider.handle))


async def sign_in(check: OidcClient, provider: FakeProvider, claims: dict[str, Any], **params: str):
    begun = await check.start(REDIRECT)
    provider.id_claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "00u1",
        "exp": NOW + 300,
        "iat": NOW,
        "nonce": begun.nonce,
        "email": "alice@example.com",
    }
    provider.id_claims.update(claims)
    provider.id_claims = {k: v for k, v in provider.id_claims.items() if v is not ...}
    answer = {"code": "c0de", "state": begun.state, **params}
    return await check.finish(
        redirect_uri=REDIRECT, params=answer, state=begun.state, nonce=begun.nonce, code_verifier=begun.code_verifier
    )


async def test_the_authorization_request_carries_pkce_state_and_nonce_and_the_exchange_the_verifier():
    provider = FakeProvider()
    check = client(provider)
    begun = await check.start(REDIRECT)
    asked = parse_qs(urlsplit(begun.url).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["state"] == [begun.state]
    assert asked["nonce"] == [begun.nonce] and asked["redirect_uri"] == [REDIRECT]
    assert asked["scope"] == ["openid email profile"] and asked["response_type"] == ["code"]
    identity = await sign_in(check, provider, {})
    assert (identity.subject, identity.person_value, identity.groups) == ("00u1", "alice@example.com", frozenset())
    [exchange] = provider.token_requests
    assert exchange["grant_type"] == ["authorization_code"] and exchange["code"] == ["c0de"]
    assert len(exchange["code_verifier"][0]) >= 43


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"nonce": "replayed"}, "nonce is not this sign-in's"),
        ({"nonce": ...}, "nonce is not this sign-in's"),
        ({"aud": "another-client"}, "does not verify"),
        ({"aud": [CLIENT, "other"], "azp": "other"}, "issued to another client"),
        ({"iss": "https://evil.example.com"}, "does not verify"),
        ({"exp": NOW - 61}, "has expired"),
        ({"exp": ...}, "does not verify"),
        ({"email_verified": False}, "has not verified the address"),
    ],
)
async def test_an_id_token_that_is_not_for_this_sign_in_is_refused(claims, says):
    provider = FakeProvider()
    with pytest.raises(OidcError) as info:
        await sign_in(client(provider), provider, claims)
    assert says in str(info.value)


async def test_id_tokens_signed_otherwise_are_refused():
    provider = FakeProvider()
    provider.id_key = STRANGER
    with pytest.raises(OidcError, match="does not verify"):
        await sign_in(client(provider), provider, {})
    provider.id_key, provider.id_alg = "the client secret, as HS256 would use it", "HS256"
    with pytest.raises(OidcError, match="'HS256', which is not accepted"):
        await sign_in(client(provider), provider, {})


async def test_the_callbacks_own_parameters_are_checked_before_any_exchange():
    provider = FakeProvider()
    check = client(provider)
    for params, says in [
        ({"error": "access_denied", "error_description": "user said no"}, "refused the sign-in: user said no"),
        ({"state": "forged"}, "state does not match"),
        ({"iss": "https://evil.example.com"}, "came from 'https://evil.example.com'"),
        ({"code": ""}, "sent no authorization code"),
    ]:
        with pytest.raises(OidcError) as info:
            await sign_in(check, provider, {}, **params)
        assert says in str(info.value)
    assert provider.token_requests == []


async def test_missing_claims_come_from_userinfo_only_for_the_same_subject():
    provider = FakeProvider()
    check = client(provider, groups_claim="groups")
    provider.userinfo = {"sub": "00u1", "groups": ["ops", 7, "", "x" * 201], "email": "mallory@example.com"}
    identity = await sign_in(check, provider, {})
    assert identity.groups == frozenset({"ops"}) and identity.person_value == "alice@example.com"  # ID token wins
    provider.userinfo = {"sub": "someone-else", "groups": ["ops"]}
    assert (await sign_in(check, provider, {})).groups == frozenset()
    provider.userinfo = None  # userinfo refuses: the ID token's claims stand
    assert (await sign_in(check, provider, {"groups": "ops"})).groups == frozenset({"ops"})


@pytest.mark.parametrize(
    ("advertised", "expected"),
    [
        (f"{ISSUER}/logout", f"{ISSUER}/logout?client_id=holdgate&post_logout_redirect_uri="),
        (f"{ISSUER}/logout?tenant=x", f"{ISSUER}/logout?tenant=x&client_id=holdgate&post_logout_redirect_uri="),
        (None, None),  # no RP-initiated logout at this provider: sign-out stays at holdgate
        ("javascript:alert(1)", None),  # not a URL the browser may be sent to
        (["not", "a", "string"], None),
    ],
)
async def test_the_end_session_url_names_the_client_and_where_to_come_back(advertised, expected):
    provider = FakeProvider()
    provider.end_session = advertised
    url = await client(provider).end_session_url("https://holdgate.example.com/login")
    if expected is None:
        assert url is None
    else:
        assert url == expected + "https%3A%2F%2Fholdgate.example.com%2Flogin"


async def test_a_provider_that_cannot_be_reached_at_sign_out_leaves_the_browser_here():
    provider = FakeProvider()
    provider.down = True
    assert await client(provider).end_session_url("https://holdgate.example.com/login") is None
