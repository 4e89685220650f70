"""What checking an agent's OAuth access token costs on each MCP request (service.identity.AccessTokenVerifier).

Signs RS256 access tokens with a 2048-bit key, serves the issuer's metadata and key set from memory (an httpx
MockTransport: no network in the figure), and times `verify(token, server)`:

  - first use: a token never seen (parse, signature, issuer, audience, times, grant map): what the first request
    of each new token pays;
  - reuse: the same token again, as an agent sends it on every request until it expires (the verifier remembers
    tokens it verified and checks only their times and grant).

Usage: python bench/bench_access_tokens.py [--tokens 500] [--reuse 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.identity import AccessTokenVerifier, IssuerKeys
from service.settings import OAuthSettings

ISSUER = "https://idp.example.com"
PUBLIC = "https://holdgate.example.com"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issuer(request: httpx2.Request) -> httpx2.Response:
    if request.url.path == "/.well-known/openid-configuration":
        return httpx2.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"})
    jwk = {**json.loads(RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1"}
    return httpx2.Response(200, json={"keys": [jwk]})


def token(now: float, n: int) -> str:
    claims = {"iss": ISSUER, "aud": f"{PUBLIC}/mcp/jobs", "exp": now + 600, "iat": now, "client_id": "agent-ci"}
    return jwt.encode({**claims, "jti": str(n)}, KEY, algorithm="RS256", headers={"kid": "k1"})


async def main(tokens: int, reuse: int) -> None:
    now = time.time()
    keys = IssuerKeys(ISSUER, transport=httpx2.MockTransport(issuer))
    check = AccessTokenVerifier(OAuthSettings(issuer=ISSUER, grants={"agent-ci": "ci-bot"}), PUBLIC, keys=keys)
    fresh = [token(now, n) for n in range(tokens)]
    await check.verify(token(now, -1), "jobs")  # discovery and the key set, outside the figures
    started = time.perf_counter()
    for raw in fresh:
        await check.verify(raw, "jobs")
    first = (time.perf_counter() - started) / tokens
    started = time.perf_counter()
    for _ in range(reuse):
        await check.verify(fresh[0], "jobs")
    again = (time.perf_counter() - started) / reuse
    print(f"first use: {first * 1e6:,.0f} µs per token ({tokens} tokens)")
    print(f"reuse:     {again * 1e6:,.1f} µs per request ({reuse} requests)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--reuse", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.reuse))
