import { type ChildProcess, fork } from "node:child_process";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { freePort } from "../test/helpers/infra.js";

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));

function startGateway(env: Record<string, string>): ChildProcess {
  return fork(MAIN, [], {
    execArgv: ["--import", "tsx"],
    env: { ...process.env, LOG_LEVEL: "silent", ...env },
    stdio: ["ignore", "ignore", "pipe", "ipc"],
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

describe("gateway process", () => {
  it("exits 2 naming the variable when the configuration is invalid", async () => {
    const child = startGateway({ GATEWAY_PORT: "eighty", AUTH_URL: "ftp://nowhere" });
    let stderr = "";
    child.stderr?.on("data", (chunk) => {
      stderr += String(chunk);
    });
    expect(await exited(child)).toBe(2);
    expect(stderr).toContain("GATEWAY_PORT");
    expect(stderr).toContain("AUTH_URL");
  });

  it("reports ready with its port, serves /healthz and stops with exit 0 on SIGTERM", async () => {
    const child = startGateway({ GATEWAY_PORT: "0", GATEWAY_HOST: "127.0.0.1" });
    const exit = exited(child);
    const ready = await new Promise<{ ready: boolean; port: number }>((resolve, reject) => {
      child.once("message", (msg) => resolve(msg as { ready: boolean; port: number }));
      child.once("exit", (code) => reject(new Error(`gateway exited with ${code} before it was ready`)));
    });
    expect(ready.ready).toBe(true);
    expect(ready.port).toBeGreaterThan(0);
    const res = await fetch(`http://127.0.0.1:${ready.port}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
    child.kill("SIGTERM");
    expect(await exit).toBe(0);
  });

  it("stops within SHUTDOWN_TIMEOUT_MS on SIGTERM even when a request in flight never completes", async () => {
    // An auth service that accepts calls and never answers: the request hangs inside the gateway.
    const hung = http2.createServer();
    hung.on("stream", () => {});
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    const authPort = (hung.address() as AddressInfo).port;
    try {
      const child = startGateway({
        GATEWAY_PORT: "0",
        GATEWAY_HOST: "127.0.0.1",
        AUTH_URL: `http://127.0.0.1:${authPort}`,
        GATEWAY_RPC_TIMEOUT_MS: "600000",
        SHUTDOWN_TIMEOUT_MS: "300",
      });
      const exit = exited(child);
      const ready = await new Promise<{ port: number }>((resolve, reject) => {
        child.once("message", (msg) => resolve(msg as { port: number }));
        child.once("exit", (code) => reject(new Error(`gateway exited with ${code} before it was ready`)));
      });
      let arrived: () => void = () => {};
      const requestArrived = new Promise<void>((resolve) => {
        arrived = resolve;
      });
      hung.once("stream", () => arrived());
      const pending = fetch(`http://127.0.0.1:${ready.port}/api/v1/tokens`, {
        headers: { "x-api-key": "fp_test_0123456789abcdef0123456789abcdef01234567" },
      }).then(
        (res) => res.status,
        () => "connection closed",
      );
      await requestArrived;
      child.kill("SIGTERM");
      // Without the deadline the close would wait for the 10-minute RPC deadline.
      expect(await exit).toBe(1);
      expect(await pending).toBe("connection closed");
    } finally {
      hung.close();
    }
  });

  it("serves its admin port: alive, not ready while the auth service is unreachable, and metrics", async () => {
    // Nothing listens on this port: the gateway cannot authorize anything.
    const authPort = await freePort();
    const child = startGateway({
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      AUTH_URL: `http://127.0.0.1:${authPort}`,
    });
    const exit = exited(child);
    const ready = await new Promise<{ adminPort: number }>((resolve, reject) => {
      child.once("message", (msg) => resolve(msg as { adminPort: number }));
      child.once("exit", (code) => reject(new Error(`gateway exited with ${code} before it was ready`)));
    });
    expect(ready.adminPort).toBeGreaterThan(0);
    const admin = `http://127.0.0.1:${ready.adminPort}`;
    expect((await fetch(`${admin}/healthz`)).status).toBe(200);
    const readyz = await fetch(`${admin}/readyz`);
    expect(readyz.status).toBe(503);
    const body = (await readyz.json()) as { status: string; checks: Record<string, string> };
    expect(body.status).toBe("not ready");
    expect(body.checks.auth).not.toBe("ok");
    const metrics = await fetch(`${admin}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain("nodejs_eventloop_lag_seconds");
    child.kill("SIGTERM");
    expect(await exit).toBe(0);
  });

  it("stops with exit 0 when its parent's IPC channel closes", async () => {
    const child = startGateway({ GATEWAY_PORT: "0", GATEWAY_HOST: "127.0.0.1" });
    const exit = exited(child);
    await new Promise((resolve) => child.once("message", resolve));
    child.disconnect();
    expect(await exit).toBe(0);
  });
});
