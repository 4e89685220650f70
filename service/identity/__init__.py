"""Identity from the team's identity provider: who an approver is (OIDC sign-in) and which agent a token is (OAuth).

`IssuerKeys` reads an issuer's metadata and signing keys (discovery, JWKS, cached); `AccessTokenVerifier` checks an
agent's JWT access token for one `/mcp/<server>` resource (MCP authorization, RFC 9068/9728) and maps it to a
grant; `OidcClient` runs the dashboard's authorization-code sign-in with PKCE and checks the ID token. Nothing here
knows the policy: mapping a claim to a policy person is `Policy.person_for_identity`.
"""

from service.identity.access_tokens import AccessTokenVerifier, OAuthCaller, TokenRefused, resource_metadata
from service.identity.keys import IssuerKeys, IssuerUnavailable
from service.identity.oidc import OidcClient, OidcError, SignedInIdentity, SignInStart

__all__ = [
    "AccessTokenVerifier",
    "IssuerKeys",
    "IssuerUnavailable",
    "OAuthCaller",
    "OidcClient",
    "OidcError",
    "SignInStart",
    "SignedInIdentity",
    "TokenRefused",
    "resource_metadata",
]
