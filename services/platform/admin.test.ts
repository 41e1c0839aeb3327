import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, freePort, type TestDatabase, waitFor } from "../../test/helpers/infra.js";
import { logsService } from "../logs/service.js";
import { Health, ServingStatus } from "./health.js";
import { createRpcClient } from "./rpc.js";
import { type RunningService, startService } from "./service.js";

/** A nats-server of this test's own, so it can be stopped and started again on the same port. */
class OwnNatsServer {
  private child: ChildProcess | undefined;
  constructor(
    readonly port: number,
    private readonly storeDir: string,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const child = spawn(
      "nats-server",
      ["-js", "-sd", this.storeDir, "-a", "127.0.0.1", "-p", String(this.port)],
      {
        stdio: "ignore",
      },
    );
    this.child = child;
    await waitFor(
      "nats-server to accept connections",
      () =>
        new Promise<true | undefined>((resolve) => {
          const socket = net.connect(this.port, "127.0.0.1");
          socket.once("connect", () => {
            socket.destroy();
            resolve(true);
          });
          socket.once("error", () => resolve(undefined));
        }),
      30_000,
    );
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
    this.child = undefined;
  }
}

interface ReadyBody {
  status: string;
  checks: Record<string, string>;
}

async function readyz(adminPort: number): Promise<{ status: number; body: ReadyBody }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
  return { status: res.status, body: (await res.json()) as ReadyBody };
}

describe("admin port: health and readiness", () => {
  let db: TestDatabase;
  let storeDir: string;
  let nats: OwnNatsServer;
  let running: RunningService;

  beforeAll(async () => {
    db = await createTestDatabase();
    storeDir = await mkdtemp(path.join(tmpdir(), "flowplane-nats-"));
    nats = new OwnNatsServer(await freePort(), storeDir);
    await nats.start();
    running = await startService(logsService, {
      DATABASE_URL: db.url,
      NATS_URL: nats.url,
      FLOWPLANE_NAMESPACE: "readiness",
      LOGS_PORT: "0",
      LOGS_ADMIN_PORT: "0",
      LOG_LEVEL: "silent",
    });
  }, 60_000);

  afterAll(async () => {
    await running?.stop();
    await nats?.stop();
    await db?.drop();
    if (storeDir) await rm(storeDir, { recursive: true, force: true });
  }, 60_000);

  it("answers /healthz while alive and 404 on unknown paths", async () => {
    const health = await fetch(`http://127.0.0.1:${running.adminPort}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });
    expect((await fetch(`http://127.0.0.1:${running.adminPort}/nope`)).status).toBe(404);
  });

  it("goes not ready when NATS is unreachable and ready again when it returns, and gRPC health follows", async () => {
    const healthClient = createRpcClient(Health, `http://127.0.0.1:${running.port}`, { timeoutMs: 5_000 });
    const ready = await readyz(running.adminPort);
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({
      status: "ready",
      checks: { database: "ok", nats: "ok", "consumer logs": "ok" },
    });
    expect((await healthClient.check({ service: "" })).status).toBe(ServingStatus.SERVING);

    await nats.stop();
    const down = await waitFor(
      "/readyz to answer 503",
      async () => {
        const answer = await readyz(running.adminPort);
        return answer.status === 503 ? answer : undefined;
      },
      30_000,
    );
    expect(down.body.status).toBe("not ready");
    expect(down.body.checks.nats).not.toBe("ok");
    expect(down.body.checks.database).toBe("ok");
    // /healthz stays 200: the process is alive, only not ready.
    expect((await fetch(`http://127.0.0.1:${running.adminPort}/healthz`)).status).toBe(200);
    await waitFor(
      "gRPC health to say NOT_SERVING",
      async () => {
        const { status } = await healthClient.check({ service: "" });
        return status === ServingStatus.NOT_SERVING ? true : undefined;
      },
      30_000,
    );

    await nats.start();
    const back = await waitFor(
      "/readyz to answer 200 again",
      async () => {
        const answer = await readyz(running.adminPort);
        return answer.status === 200 ? answer : undefined;
      },
      60_000,
    );
    expect(back.body.checks).toEqual({ database: "ok", nats: "ok", "consumer logs": "ok" });
    await waitFor(
      "gRPC health to say SERVING again",
      async () => {
        const { status } = await healthClient.check({ service: "" });
        return status === ServingStatus.SERVING ? true : undefined;
      },
      30_000,
    );
  }, 120_000);

  it("serves Prometheus metrics with default Node metrics and the RPC series", async () => {
    const res = await fetch(`http://127.0.0.1:${running.adminPort}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const text = await res.text();
    expect(text).toContain("nodejs_eventloop_lag_seconds");
    // The health checks above went through the RPC server interceptor.
    expect(text).toMatch(
      /flowplane_rpc_server_requests_total\{method="grpc\.health\.v1\.Health\/Check",code="ok"\} [1-9]/,
    );
    expect(text).toMatch(/flowplane_db_pool_connections\{pool="logs",state="total"\} [1-9]/);
  });
});
