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
import { contextFromHeaders, inSpan, SpanKind, traceHeaders, tracingEnabled } from "./telemetry.js";

function rpcAttributes(req: { service: DescService; method: { name: string } }) {
  return { "rpc.system": "connect_rpc", "rpc.service": req.service.typeName, "rpc.method": req.method.name };
}

/**
 * Client span per call, its traceparent sent in the request headers so the callee continues the
 * trace. Only unary calls get a span: a stream lives as long as its watcher.
 */
export function rpcClientTracing(): Interceptor {
  return (next) => async (req) => {
    if (!tracingEnabled()) return next(req);
    if (req.stream) {
      for (const [name, value] of Object.entries(traceHeaders())) req.header.set(name, value);
      return next(req);
    }
    const name = `${req.service.typeName}/${req.method.name}`;
    return inSpan("rpc-client", name, { kind: SpanKind.CLIENT, attributes: rpcAttributes(req) }, (span) => {
      for (const [header, value] of Object.entries(traceHeaders())) req.header.set(header, value);
      return next(req).catch((err: unknown) => {
        span?.setAttribute("rpc.connect_rpc.error_code", Code[ConnectError.from(err).code] ?? "unknown");
        throw err;
      });
    });
  };
}

const SERVER_FAULTS = new Set([Code.Internal, Code.Unknown, Code.Unavailable, Code.DataLoss]);

/**
 * Outermost server interceptor of `service`: continues the caller's trace (a missing or malformed
 * traceparent starts a new one) with a server span around the call.
 */
export function rpcServerTracing(service: string): Interceptor {
  return (next) => async (req) => {
    if (!tracingEnabled()) return next(req);
    const parent = contextFromHeaders((name) => req.header.get(name));
    const name = `${req.service.typeName}/${req.method.name}`;
    return inSpan(
      service,
      name,
      {
        kind: SpanKind.SERVER,
        parent,
        attributes: rpcAttributes(req),
        // Refusals of bad requests are the caller's problem, not a failure of this service.
        isFailure: (err) => SERVER_FAULTS.has(ConnectError.from(err).code),
      },
      (span) =>
        next(req).catch((err: unknown) => {
          span?.setAttribute("rpc.connect_rpc.error_code", Code[ConnectError.from(err).code] ?? "unknown");
          throw err;
        }),
    );
  };
}

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
    interceptors: [
      rpcClientTracing(),
      rpcContextPropagation(),
      refusedStreamRetry(),
      ...(opts.interceptors ?? []),
    ],
  });
  return createClient(service, transport);
}
