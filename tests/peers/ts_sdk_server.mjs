// An upstream built on the TypeScript MCP SDK 1.15.0 (the floor of the Cross-LLM server's `^1.15.0`),
// registering its tools the way the Cross-LLM server does: `server.tool(name, description, {shape}, cb)`.
// This SDK validates `arguments` against the tool's schema as sent, so a tools/call without
// `arguments` is refused with -32602 even for a tool whose schema is empty, while `{}` is accepted
// (1.32.2, which server-everything brings, reads a missing `arguments` as `{}`; servers pinned to older
// releases do not).
// That is the behaviour the gateway must not break.
//
// Run: `node ts_sdk_server.mjs stdio` or `node ts_sdk_server.mjs http PORT` (Streamable HTTP at
// /mcp, one SDK server and transport per session, as the SDK's own examples do).

import { randomUUID } from "node:crypto";
import { createServer } from "node:http";

import { McpServer } from "mcp-sdk-v1-15/server/mcp.js";
import { StdioServerTransport } from "mcp-sdk-v1-15/server/stdio.js";
import { StreamableHTTPServerTransport } from "mcp-sdk-v1-15/server/streamableHttp.js";
import { isInitializeRequest } from "mcp-sdk-v1-15/types.js";
import { z } from "zod-v3";

function buildServer() {
  const server = new McpServer({ name: "ts-sdk-upstream", version: "1.0.0" });
  server.tool("get-user-preferences", "Read the stored preferences (no arguments).", {}, async () => ({
    content: [{ type: "text", text: JSON.stringify({ defaultModel: "none", costPreference: "cheaper" }) }],
  }));
  server.tool(
    "list-async-jobs",
    "List jobs, optionally filtered by status.",
    { status: z.enum(["pending", "processing", "completed", "failed", "cancelled"]).optional() },
    async ({ status }) => ({ content: [{ type: "text", text: `jobs (status=${status ?? "any"}): none` }] }),
  );
  return server;
}

async function serveHttp(port) {
  const transports = new Map();
  const http = createServer(async (req, res) => {
    if (!req.url.startsWith("/mcp")) {
      res.writeHead(404).end();
      return;
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined;
    const sessionId = req.headers["mcp-session-id"];
    let transport = sessionId ? transports.get(sessionId) : undefined;
    if (!transport && req.method === "POST" && isInitializeRequest(body)) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => transports.set(id, transport),
      });
      transport.onclose = () => transport.sessionId && transports.delete(transport.sessionId);
      await buildServer().connect(transport);
    }
    if (!transport) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32001, message: "Session not found" } }));
      return;
    }
    await transport.handleRequest(req, res, body);
  });
  http.listen(port, "127.0.0.1", () => process.stderr.write(`ts-sdk-upstream listening on ${port}\n`));
}

const [mode, port] = process.argv.slice(2);
if (mode === "http") {
  await serveHttp(Number(port));
} else {
  await buildServer().connect(new StdioServerTransport());
}
