import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import {
  type Client,
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { rpcContextPropagation } from "./metrics.js";

export interface RpcServer {
  readonly port: number;
  /** Stops accepting connections and waits for in-flight calls, up to `timeoutMs`. */
  close(timeoutMs: number): Promise<void>;
}

/** One h2c port serving gRPC, gRPC-Web and Connect (DESIGN §1). */
export async function startRpcServer(opts: {
  port: number;
  host?: string;
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
}): Promise<RpcServer> {
  const handler = connectNodeAdapter({ routes: opts.routes, interceptors: opts.interceptors ?? [] });
  const server = http2.createServer(handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    async close(timeoutMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // A graceful session close sends GOAWAY and lets the streams already open finish.
      for (const session of sessions) session.close();
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
      await Promise.race([closed, deadline]);
      for (const session of sessions) session.destroy();
    },
  };
}

/** True when the server refused the stream before processing it (RFC 9113 §8.7: safe to retry). */
function isRefusedStream(err: unknown): boolean {
  const cause = err instanceof ConnectError ? err.cause : err;
  return (
    cause instanceof Error &&
    (cause as { code?: unknown }).code === "ERR_HTTP2_STREAM_ERROR" &&
    cause.message.includes("NGHTTP2_REFUSED_STREAM")
  );
}

/**
 * A server going away (GOAWAY while draining) refuses streams it never started; connect-node reports
 * those as Internal. They are retried once on a fresh connection, and if refused again reported as
 * Unavailable, which is what they are.
 */
export function refusedStreamRetry(): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (req.stream || !isRefusedStream(err)) throw err;
      try {
        return await next(req);
      } catch (again) {
        if (!isRefusedStream(again)) throw again;
        throw new ConnectError(
          "service unavailable (stream refused)",
          Code.Unavailable,
          undefined,
          undefined,
          again,
        );
      }
    }
  };
}

/** A typed gRPC client of another service; `baseUrl` like "http://127.0.0.1:50051". */
export function createRpcClient<T extends DescService>(
  service: T,
  baseUrl: string,
  opts: { timeoutMs?: number; interceptors?: Interceptor[] } = {},
): Client<T> {
  const transport = createGrpcTransport({
    baseUrl,
    defaultTimeoutMs: opts.timeoutMs ?? 10_000,
    // The request being served (if any) is named to the callee, for its logs.
    interceptors: [rpcContextPropagation(), refusedStreamRetry(), ...(opts.interceptors ?? [])],
  });
  return createClient(service, transport);
}
