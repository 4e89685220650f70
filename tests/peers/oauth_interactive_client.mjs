// An MCP client that signs in interactively, as Claude Code and Cursor do, with the TypeScript SDK's own OAuth
// (the `authProvider` of its Streamable HTTP transport): on holdgate's 401 the SDK reads the resource metadata,
// the provider's metadata, registers the client (RFC 7591), and hands over an authorization URL (PKCE, `resource`);
// the test opens it in a browser; the provider redirects the browser to this script's loopback callback, and the
// SDK exchanges the code (code_verifier, `resource`) for a token and connects again.
//
// Usage: node oauth_interactive_client.mjs SDK URL CALLBACK_PORT TOOL ARGS_JSON [SCOPE]
//   SDK: "v1.15" (mcp-sdk-v1-15), "v1" (@modelcontextprotocol/sdk) or "v2" (@modelcontextprotocol/client).
//   SCOPE: the scope configured in the client (its metadata's `scope`), which the SDK asks for when nothing
//   else tells it which (1.32 and v2 ask for the resource metadata's `scopes_supported` first; 1.15 only for this).
// Prints one JSON line per step on stdout: {"event": "sdk", name, version},
// {"event": "registered", client} (what registration gave it), {"event": "authorize", url} (open it),
// {"event": "callback", query}, then {"event": "done", tokens, tokenSaves, tools, result}; a failure is
// {"event": "error", message, tokens, tokenSaves} and exit code 1 (tokenSaves: how often the SDK stored tokens).
import { readFileSync } from "node:fs";
import { createServer } from "node:http";

const [sdk, url, callbackPort, tool, args, scope] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const packages = { "v1.15": "mcp-sdk-v1-15", v1: "@modelcontextprotocol/sdk", v2: "@modelcontextprotocol/client" };
const pkg = packages[sdk];
if (!pkg) throw new Error(`unknown SDK ${sdk}: one of ${Object.keys(packages).join(", ")}`);
// v2 exports everything from its root; 1.x from one module per part.
const parts = sdk === "v2" ? [""] : ["/client/index.js", "/client/streamableHttp.js", "/client/auth.js"];
const modules = await Promise.all(parts.map((part) => import(pkg + part)));
const { Client, StreamableHTTPClientTransport, UnauthorizedError } = Object.assign({}, ...modules);
const { version } = JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url)));
say({ event: "sdk", name: pkg, version });

// Claude Code's kind of redirect URI: a loopback port the user chooses (`--callback-port`).
const redirectUrl = `http://localhost:${callbackPort}/callback`;

// The provider as a desktop client keeps it (in memory here): what it registered, its tokens, its PKCE verifier.
class InMemoryOAuthClientProvider {
  constructor() {
    this.saved = { tokenSaves: 0 };
  }
  get redirectUrl() {
    return redirectUrl;
  }
  get clientMetadata() {
    return {
      client_name: "holdgate test interactive client",
      redirect_uris: [redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none", // a public client, as a desktop agent is
      ...(scope ? { scope } : {}),
    };
  }
  clientInformation() {
    return this.saved.client;
  }
  saveClientInformation(client) {
    say({ event: "registered", client }); // only after a dynamic registration: no client id was configured
    this.saved.client = client;
  }
  tokens() {
    return this.saved.tokens;
  }
  saveTokens(tokens) {
    this.saved.tokenSaves += 1; // the code's exchange, then each refresh
    this.saved.tokens = tokens;
  }
  redirectToAuthorization(authorizationUrl) {
    say({ event: "authorize", url: authorizationUrl.toString() });
  }
  saveCodeVerifier(verifier) {
    this.saved.verifier = verifier;
  }
  codeVerifier() {
    return this.saved.verifier;
  }
}

// The loopback callback: the first request to /callback carries the code (or the provider's error); its query.
function waitForCallback() {
  return new Promise((resolve, reject) => {
    const server = createServer((req, res) => {
      const asked = new URL(req.url, redirectUrl);
      if (asked.pathname !== "/callback") {
        res.writeHead(404).end();
        return;
      }
      say({ event: "callback", query: Object.fromEntries(asked.searchParams) });
      const code = asked.searchParams.get("code");
      res.writeHead(code ? 200 : 400, { "Content-Type": "text/html" });
      res.end(code ? "<h1 id=signed-in>Signed in: back to the agent.</h1>" : "<h1 id=refused>Not signed in.</h1>");
      server.close();
      if (code) resolve(asked.searchParams);
      else reject(new Error(`the provider answered ${asked.search}`));
    });
    server.on("error", reject);
    server.listen(Number(callbackPort), "127.0.0.1");
  });
}

const provider = new InMemoryOAuthClientProvider();
const client = new Client({ name: "oauth-interactive-client", version: "0" });
try {
  const callback = waitForCallback();
  // The transport that got the 401 finishes the sign-in: it holds the `resource_metadata` URL from holdgate's
  // WWW-Authenticate (1.15 would otherwise look for the metadata at the host's root), as the SDK's example does.
  const first = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  try {
    await client.connect(first);
    throw new Error("connected without signing in");
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  const answer = await callback;
  // v2 takes the whole redirect (it checks the provider's `iss`, RFC 9207); 1.x the code.
  await first.finishAuth(sdk === "v2" ? answer : answer.get("code"));
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { authProvider: provider }));
  const tools = await client.listTools();
  const result = await client.callTool({ name: tool, arguments: JSON.parse(args) });
  const { tokens, tokenSaves } = provider.saved;
  say({ event: "done", tokens, tokenSaves, tools: tools.tools.map((t) => t.name), result });
  await client.close();
} catch (error) {
  const { tokens = null, tokenSaves } = provider.saved;
  say({ event: "error", message: String(error?.message ?? error), tokens, tokenSaves });
  process.exit(1);
}
