/**
 * A deterministic OpenAI-compatible chat completion server on 127.0.0.1 for tests. POST
 * /v1/chat/completions answers `echo: <last user message> (history: <n>)`, where n counts the
 * messages between the system prompt and the last user message; usage counts one prompt token per
 * word of every message and one completion token per word of the answer. The model "fail-500"
 * answers 500; a wrong bearer token answers 401. Every request body is kept for assertions.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  [key: string]: unknown;
}

export interface LlmServer {
  /** Base URL for EXECUTOR_LLM_BASE_URL, ending in /v1. */
  baseUrl: string;
  requests: ChatRequest[];
  close(): Promise<void>;
}

function words(text: string): number {
  return text.split(/\s+/).filter((w) => w !== "").length;
}

/** The answer the server gives to `messages`. */
export function echoAnswer(messages: ChatMessage[]): string {
  const lastUser = [...messages].reverse().find((m) => m.role === "user");
  const history = messages.filter((m) => m.role !== "system").length - 1;
  return `echo: ${lastUser?.content ?? ""} (history: ${history})`;
}

export async function startLlmServer(options: { apiKey?: string } = {}): Promise<LlmServer> {
  const requests: ChatRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const reply = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
        reply(404, { error: { message: "not found" } });
        return;
      }
      if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        reply(401, { error: { message: "invalid api key" } });
        return;
      }
      let request: ChatRequest;
      try {
        request = JSON.parse(Buffer.concat(chunks).toString("utf8")) as ChatRequest;
      } catch {
        reply(400, { error: { message: "body is not JSON" } });
        return;
      }
      requests.push(request);
      if (request.model === "fail-500") {
        reply(500, { error: { message: "model exploded" } });
        return;
      }
      const content = echoAnswer(request.messages);
      const promptTokens = request.messages.reduce((sum, m) => sum + words(m.content), 0);
      const completionTokens = words(content);
      reply(200, {
        id: `chatcmpl-${requests.length}`,
        object: "chat.completion",
        created: Math.floor(Date.now() / 1000),
        model: request.model,
        choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
        usage: {
          prompt_tokens: promptTokens,
          completion_tokens: completionTokens,
          total_tokens: promptTokens + completionTokens,
        },
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
