// A TypeScript-SDK MCP client, as most real clients are: connect to URL with a bearer token, call one tool
// and print one JSON line per event on stdout ("ready", then "result" or "error"). The request timeout is the
// SDK's own (60 s unless TIMEOUT_MS is set), with no progress token, like the MCP Inspector CLI.
// Usage: node held_client.mjs URL TOKEN TOOL ARGS_JSON [TIMEOUT_MS]
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, tool, args, timeoutMs] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "held-client", version: "0" });
await client.connect(transport);
say({ event: "ready", sessionId: transport.sessionId });
try {
  const options = timeoutMs ? { timeout: Number(timeoutMs) } : undefined;
  const result = await client.callTool({ name: tool, arguments: JSON.parse(args) }, undefined, options);
  say({ event: "result", result });
} catch (error) {
  say({ event: "error", code: error.code ?? null, message: String(error.message ?? error) });
}
await client.close();
