/**
 * Regression (found by `npm run chaos`): a backend killed in the middle of a call resets its HTTP/2
 * streams, which connect reports as Canceled; the gateway answered 499 ("client closed request") to
 * a client that was still waiting, so it neither looked like an outage nor got retried. A call cut
 * off by the backend is a 503 naming the backend.
 */
import http2 from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../services/auth/keys.js";
import { clientsFor, listenGateway } from "../test/helpers/stack.js";
import { labelBackendError } from "./errors.js";

describe("a backend that dies mid-call", () => {
  let backend: http2.Http2Server;
  let gateway: FastifyInstance;
  let baseUrl: string;
  let streams = 0;

  beforeAll(async () => {
    // Takes every call, then drops the connection as a killed process would.
    backend = http2.createServer();
    const sockets = new Set<Socket>();
    backend.on("connection", (socket: Socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
    });
    backend.on("stream", () => {
      streams++;
      setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, 20);
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
    ({ gateway, baseUrl } = await listenGateway(
      clientsFor({ auth: url, executor: url, logs: url, notifier: url }),
      {
        config: { bodyLimitBytes: 64 * 1024 },
      },
    ));
  });

  afterAll(async () => {
    await gateway?.close();
    await new Promise<void>((resolve) => (backend ? backend.close(() => resolve()) : resolve()));
  });

  it("answers 503 naming the backend, not 499", async () => {
    const res = await fetch(`${baseUrl}/api/v1/tokens`, { headers: { "x-api-key": generateApiKey("live") } });
    expect(streams).toBeGreaterThan(0);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: string };
    expect(body.error).toMatch(/^auth service unavailable/);
  });

  it("labels a Canceled backend error as Unavailable; other codes pass unchanged", () => {
    const cut = labelBackendError("executor", new ConnectError("stream closed with CANCEL", Code.Canceled));
    expect(cut).toBeInstanceOf(ConnectError);
    expect((cut as ConnectError).code).toBe(Code.Unavailable);
    expect((cut as ConnectError).rawMessage).toBe("executor service unavailable");
    const notFound = new ConnectError("no such workflow", Code.NotFound);
    expect(labelBackendError("executor", notFound)).toBe(notFound);
  });
});
