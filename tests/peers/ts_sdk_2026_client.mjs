// A 2026-07-28 era client built on the TypeScript SDK v2 (@modelcontextprotocol/client), for tests that
// need a real client of that era other than the Python SDK's.
//
// Run: `node ts_sdk_2026_client.mjs URL TOKEN TOOL ARGUMENTS_JSON`. It connects with the protocol
// version pinned to 2026-07-28 (no fallback to the handshake), lists tools and resources, calls TOOL
// with ARGUMENTS_JSON, and prints one JSON line: {protocolVersion, tools, resources, result}. Any
// failure exits 1 with the error on stderr.

import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [url, token, tool, argumentsJson] = process.argv.slice(2);
const client = new Client(
  { name: "ts-sdk-2026-client", version: "1.0.0" },
  { versionNegotiation: { mode: { pin: "2026-07-28" } } },
);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
try {
  await client.connect(transport);
  const tools = await client.listTools();
  const resources = await client.listResources();
  const result = await client.callTool({ name: tool, arguments: JSON.parse(argumentsJson) });
  process.stdout.write(
    JSON.stringify({
      protocolVersion: client.getNegotiatedProtocolVersion(),
      tools: tools.tools.map((t) => t.name),
      resources: resources.resources.map((r) => r.uri),
      result,
    }) + "\n",
  );
  await client.close();
} catch (error) {
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(1);
}
