import http from "node:http";
import type { AddressInfo } from "node:net";

/** One request as the receiver saw it: the raw body bytes as text and the lower-case headers. */
export interface ReceivedRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  rawBody: string;
  receivedAt: number;
}

export interface ReceiverAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export interface WebhookReceiver {
  url: string;
  port: number;
  received: ReceivedRequest[];
  /** Decides each answer; the default answers 200 "ok". */
  respond: (request: ReceivedRequest, index: number) => ReceiverAnswer | Promise<ReceiverAnswer>;
  close(): Promise<void>;
}

/** A local HTTP endpoint standing in for a customer's webhook (or Slack's incoming webhook). */
export async function startWebhookReceiver(path = "/hook"): Promise<WebhookReceiver> {
  const receiver: WebhookReceiver = {
    url: "",
    port: 0,
    received: [],
    respond: () => ({ status: 200, body: "ok" }),
    close: async () => {},
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers))
        if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
      const request: ReceivedRequest = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers,
        rawBody: Buffer.concat(chunks).toString("utf8"),
        receivedAt: Date.now(),
      };
      const index = receiver.received.push(request) - 1;
      Promise.resolve(receiver.respond(request, index)).then(
        (answer) => res.writeHead(answer.status, answer.headers).end(answer.body ?? ""),
        () => res.writeHead(500).end("receiver error"),
      );
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  receiver.port = (server.address() as AddressInfo).port;
  receiver.url = `http://127.0.0.1:${receiver.port}${path}`;
  receiver.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return receiver;
}
