// A real OpenID Connect provider for the tests: panva's certified `oidc-provider`, configured with
// static clients and a few accounts. Usage: node oidc_provider.mjs PORT [REDIRECT_URI ...]
//
// - `holdgate-dashboard` (confidential, authorization code + PKCE): the dashboard's sign-in. Its
//   redirect URIs are the ones given on the command line, and each one's `/login` page is a post-logout
//   redirect URI (RP-initiated logout). The built-in development login form takes any password for the
//   accounts below.
// - `agent-ci`, `agent-alice`, `agent-unmapped` (client credentials): agents. A token asked for with
//   `resource=<URL>` is a JWT (RFC 9068) whose audience is that URL. `agent-alice`'s tokens carry
//   `act_email: alice@example.com` (whom the agent acts for).
// - Dynamic client registration (RFC 7591) is open, as the MCP authorization specification lets clients expect:
//   an interactive agent (authorization code + PKCE, public, loopback redirect) registers itself at `/reg`, then
//   its users sign in; their tokens asked for with `resource=<URL>` are JWTs for that URL too.
// Prints "ready <issuer>" on stdout once it listens.
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const redirectUris = process.argv.slice(3);
const issuer = `http://127.0.0.1:${port}`;

const accounts = {
  alice: { email: 'alice@example.com', groups: ['ops'], name: 'Alice' },
  bob: { email: 'bob@example.com', groups: ['ops', 'sre'], name: 'Bob' },
  carol: { email: 'carol@example.com', groups: ['ops'], name: 'Carol' },
  mallory: { email: 'mallory@example.com', groups: ['interns'], name: 'Mallory' },
};
const actingFor = { 'agent-alice': 'alice@example.com' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'holdgate-dashboard',
      client_secret: 'dashboard-secret-for-tests-only',
      redirect_uris: redirectUris.length ? redirectUris : ['http://127.0.0.1/unused'],
      // RP-initiated logout comes back to the dashboard's login page (`…/login/oidc/callback` -> `…/login`).
      post_logout_redirect_uris: redirectUris.map((uri) => uri.replace(/\/login\/oidc\/callback$/, '/login')),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    ...['agent-ci', 'agent-alice', 'agent-unmapped'].map((id) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
  ],
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: account.email, email_verified: true, name: account.name, groups: account.groups };
      },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups', 'mcp'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => ({
        scope: 'mcp',
        audience: resource,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // Agents' clients register for refresh tokens without asking for `offline_access` (Claude Code and Cursor do).
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  async extraTokenClaims(_ctx, token) {
    const email = actingFor[token.clientId];
    return email ? { act_email: email } : undefined;
  },
  ttl: { AccessToken: 600, ClientCredentials: 600, IdToken: 600, AuthorizationCode: 60, Session: 3600, Interaction: 600, Grant: 3600 },
  cookies: { keys: ['holdgate-tests-only-cookie-key'] },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<pre id="oidc-error">${JSON.stringify(out)}</pre>`;
  },
});
provider.proxy = false;

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
