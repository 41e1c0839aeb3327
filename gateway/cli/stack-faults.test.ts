/**
 * The fault-injection hooks of the local stack that `npm run chaos` drives: kill -9 of one process
 * and its restart, and a crash and restart of the embedded PostgreSQL and nats-server on the same
 * ports and data; the stack serves executions again after each.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../../test/helpers/infra.js";
import { bootstrapDemo } from "./bootstrap.js";
import { pickPort } from "./ports.js";
import { isAlive } from "./processes.js";
import { type Stack, startStack } from "./stack.js";

describe("stack fault injection", () => {
  let dataDir: string;
  let stack: Stack;
  let demo: { apiKey: string; workflowId: string };

  const execute = async () => {
    const res = await fetch(`${stack.gatewayUrl}/api/executeWorkflow`, {
      method: "POST",
      headers: { "x-api-key": demo.apiKey, "content-type": "application/json" },
      body: JSON.stringify({
        workflowId: demo.workflowId,
        version: 1,
        input: { "First Name": "Kill", Age: 9 },
      }),
    }).catch(() => undefined);
    return res?.status;
  };
  const servesAgain = (what: string) =>
    waitFor(
      `executions after ${what}`,
      async () => ((await execute()) === 200 ? true : undefined),
      90_000,
      200,
    );

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-faults-"));
    // Its own embedded servers (this file's process only): those are what it crashes.
    delete process.env.DATABASE_URL;
    delete process.env.NATS_URL;
    stack = await startStack({
      dataDir,
      namespace: "faults",
      infrastructurePorts: { postgres: await pickPort(0), nats: await pickPort(0) },
      ports: { auth: 0, executor: 0, logs: 0, notifier: 0, gateway: 0 },
      logDir: path.join(dataDir, "logs"),
      logLevel: "warn",
      report: () => {},
    });
    demo = await bootstrapDemo({ serviceUrls: stack.serviceUrls, gatewayUrl: stack.gatewayUrl, dataDir });
  }, 180_000);

  afterAll(async () => {
    await stack?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }, 120_000);

  it("lists every process, PostgreSQL and nats-server among its pids", () => {
    const names = stack.allPids().map((p) => p.name);
    expect(names.sort()).toEqual(["auth", "executor", "gateway", "logs", "nats", "notifier", "postgres"]);
  });

  it("kills a process with SIGKILL and starts it again on the same port", async () => {
    expect(await execute()).toBe(200);
    const before = stack.pids().executor!;
    await stack.killProcess("executor");
    expect(isAlive(before)).toBe(false);
    expect(stack.pids().executor).toBeUndefined();
    await stack.startProcess("executor");
    expect(stack.pids().executor).not.toBe(before);
    await servesAgain("the executor's restart");
  }, 120_000);

  it.each(["nats", "postgres"] as const)(
    "crashes %s and starts it again on the same port and data",
    async (which) => {
      const pidOf = () => stack.allPids().find((p) => p.name === which)!.pid;
      const before = pidOf();
      const url = which === "nats" ? stack.natsUrl : stack.databaseUrl;
      await stack.restartInfrastructure(which);
      expect(isAlive(before)).toBe(false);
      expect(pidOf()).not.toBe(before);
      expect(which === "nats" ? stack.natsUrl : stack.databaseUrl).toBe(url);
      await servesAgain(`${which}'s restart`);
    },
    150_000,
  );
});
