import { randomBytes } from "node:crypto";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { FastifyInstance } from "fastify";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOGS_CONSUMER } from "../services/logs/ingest.js";
import { logsService } from "../services/logs/service.js";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
  WorkflowStateSchema,
} from "../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { WorkflowService } from "../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { type NatsNames, natsNames } from "../services/platform/nats.js";
import { createRpcClient } from "../services/platform/rpc.js";
import { startService } from "../services/platform/service.js";
import { TEST_NATS_URL, waitFor } from "../test/helpers/infra.js";
import { clientsFor, listenGateway, type Stack, startStack } from "../test/helpers/stack.js";
import { demoWorkflowState } from "./cli/demo-workflow.js";

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  body: any;
}

let stack: Stack;
let names: NatsNames;
let nc: NatsConnection;
const gateways: FastifyInstance[] = [];
let baseUrl: string;

let tenantId: string;
let otherTenantId: string;
let adminKey: string;
let logsKey: string;
let executeOnlyKey: string;
let otherKey: string;
let workflowId: string;

const BASE_MS = Date.UTC(2025, 0, 1, 12, 0, 0, 0);

async function get(path: string, key: string | undefined, url = baseUrl): Promise<Answer> {
  const res = await fetch(`${url}${path}`, { headers: key === undefined ? {} : { "x-api-key": key } });
  const body = (await res.json()) as Answer["body"];
  if (res.status >= 400) expect(typeof body.error, `${path}: ${JSON.stringify(body)}`).toBe("string");
  return { status: res.status, body };
}

function uniqueId(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

function completion(init: {
  tenant?: string;
  startedAtMs: number;
  workflowId?: string;
  status?: ExecutionStatus;
  trigger?: Trigger;
  durationMs?: number;
  cost?: number;
  models?: string[];
}): ExecutionCompleted {
  const cost = init.cost ?? 0.001;
  const durationMs = init.durationMs ?? 100;
  return create(ExecutionCompletedSchema, {
    executionId: uniqueId("exec"),
    tenantId: init.tenant ?? tenantId,
    workflowId: init.workflowId ?? "wf_events",
    workflowVersion: 1,
    workflowName: "Events",
    status: init.status ?? ExecutionStatus.SUCCESS,
    trigger: init.trigger ?? Trigger.API,
    startedAt: timestampFromDate(new Date(init.startedAtMs)),
    endedAt: timestampFromDate(new Date(init.startedAtMs + durationMs)),
    durationMs: BigInt(durationMs),
    cost: {
      total: cost,
      tokens: { prompt: 10n, completion: 5n, total: 15n },
      models: Object.fromEntries(
        (init.models ?? []).map((m) => [m, { input: cost, output: 0, total: cost }]),
      ),
    },
    finalOutput: { secretish: "only when asked" },
    workflowState: create(WorkflowStateSchema, {
      blocks: {
        call: { id: "call", type: "api", name: "Call", config: { url: "https://x.test", apiKey: "sk-123" } },
      },
    }),
  });
}

async function publishAll(events: ExecutionCompleted[]): Promise<void> {
  const js = nc.jetstream();
  let last = 0;
  for (const event of events) {
    const ack = await js.publish(
      names.executionCompleted(event.tenantId),
      toBinary(ExecutionCompletedSchema, event),
      {
        msgID: `${event.executionId}:completed`,
      },
    );
    last = ack.seq;
  }
  const jsm = await nc.jetstreamManager();
  await waitFor(`logs consumer past ${last}`, async () => {
    const info = await jsm.consumers.info(names.executionsStream, LOGS_CONSUMER);
    return info.ack_floor.stream_seq >= last && info.num_ack_pending === 0 ? true : undefined;
  });
}

/** A gateway of its own in front of the stack, with the logs service at `logsUrl`. */
async function startGateway(logsUrl: string): Promise<string> {
  const { gateway, baseUrl: url } = await listenGateway(clientsFor({ ...stack.urls, logs: logsUrl }), {
    config: { bodyLimitBytes: 64 * 1024 },
  });
  gateways.push(gateway);
  return url;
}

beforeAll(async () => {
  stack = await startStack({
    services: ["auth", "executor", "logs"],
    serviceDefaults: false,
    env: {
      // Many calls from one tenant: lift the API-call rate limit out of the way.
      auth: { AUTH_PLAN_PRO_API: "100000/100000" },
      logs: { LOGS_RETENTION_DAYS_DEFAULT: "36500" },
    },
    gateway: { bodyLimitBytes: 64 * 1024 },
    tenant: "Logs API",
  });
  names = natsNames(stack.namespace);
  baseUrl = stack.baseUrl;
  tenantId = stack.tenantId;
  adminKey = stack.adminKey;
  ({ id: otherTenantId, adminKey: otherKey } = await stack.newTenant("Someone else"));
  logsKey = await stack.appKey(tenantId, "poller", ["logs:read"]);
  executeOnlyKey = await stack.appKey(tenantId, "runner", ["workflows:execute"]);
  workflowId = (
    await createRpcClient(WorkflowService, stack.urls.executor!).createWorkflow({
      tenantId,
      name: "Demo",
      description: "Greets a person",
      state: demoWorkflowState(),
      folderId: "fld_demo",
    })
  ).workflow!.id;
  nc = await connect({ servers: TEST_NATS_URL });
});

afterAll(async () => {
  for (const g of gateways) await g.close();
  await nc?.close();
  await stack?.stop();
});

const logsPath = (params: Record<string, string>) =>
  `/api/v1/logs?${new URLSearchParams({ workspaceId: tenantId, ...params })}`;

describe("GET /api/v1/logs", () => {
  const wf = uniqueId("wf");
  const events = () => [
    completion({ startedAtMs: BASE_MS, workflowId: wf, durationMs: 50, cost: 0.001 }),
    completion({
      startedAtMs: BASE_MS + 1000,
      workflowId: wf,
      trigger: Trigger.WEBHOOK,
      cost: 0.01,
      models: ["gpt-4o"],
    }),
    completion({
      startedAtMs: BASE_MS + 2000,
      workflowId: wf,
      status: ExecutionStatus.ERROR,
      durationMs: 5000,
      cost: 0.1,
    }),
  ];
  let published: ExecutionCompleted[] = [];
  beforeAll(async () => {
    published = events();
    await publishAll(published);
  });
  const exec = (...i: number[]) => i.map((n) => published[n]!.executionId);
  const list = async (params: Record<string, string>) => {
    const res = await get(logsPath({ workflowIds: wf, ...params }), logsKey);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return (res.body.data as { executionId: string }[]).map((l) => l.executionId);
  };

  it("filters by every seed 002 parameter", async () => {
    expect(await list({ order: "asc" })).toEqual(exec(0, 1, 2));
    expect(await list({})).toEqual(exec(2, 1, 0));
    expect(await list({ triggers: "webhook,chat" })).toEqual(exec(1));
    expect(await list({ level: "error" })).toEqual(exec(2));
    expect(await list({ startDate: new Date(BASE_MS + 1000).toISOString(), order: "asc" })).toEqual(
      exec(1, 2),
    );
    expect(await list({ endDate: new Date(BASE_MS + 1000).toISOString(), order: "asc" })).toEqual(exec(0, 1));
    expect(await list({ startDate: "2025-01-01", endDate: "2025-01-01T12:00:00.000Z" })).toEqual(exec(0));
    expect(await list({ executionId: published[1]!.executionId })).toEqual(exec(1));
    expect(await list({ minDurationMs: "100", order: "asc" })).toEqual(exec(1, 2));
    expect(await list({ maxDurationMs: "100", order: "asc" })).toEqual(exec(0, 1));
    expect(await list({ minCost: "0.01", order: "asc" })).toEqual(exec(1, 2));
    expect(await list({ maxCost: "0.01", order: "asc" })).toEqual(exec(0, 1));
    expect(await list({ model: "gpt-4o" })).toEqual(exec(1));
    expect(await list({ folderIds: "fld_none" })).toEqual([]);
    expect(await list({ level: "info", minCost: "0.005", triggers: "api,webhook" })).toEqual(exec(1));
  });

  it("answers the seed's list item shapes and only includes output and spans when asked", async () => {
    const basic = await get(logsPath({ workflowIds: wf, limit: "1" }), logsKey);
    expect(Object.keys(basic.body.data[0]).sort()).toEqual(
      [
        "id",
        "workflowId",
        "executionId",
        "level",
        "trigger",
        "startedAt",
        "endedAt",
        "totalDurationMs",
        "cost",
        "files",
      ].sort(),
    );
    expect(basic.body.data[0]).toMatchObject({
      level: "error",
      trigger: "api",
      totalDurationMs: 5000,
      cost: { total: 0.1 },
      files: null,
    });
    const full = await get(
      logsPath({
        workflowIds: wf,
        limit: "1",
        details: "full",
        includeFinalOutput: "true",
        includeTraceSpans: "true",
      }),
      logsKey,
    );
    expect(full.body.data[0]).toMatchObject({
      workflow: { id: wf, name: "Events" },
      finalOutput: { secretish: "only when asked" },
      traceSpans: [],
    });
  });

  it("round-trips cursors in both orders and refuses them for other filters or when tampered", async () => {
    for (const order of ["asc", "desc"]) {
      const first = await get(logsPath({ workflowIds: wf, order, limit: "2" }), logsKey);
      const second = await get(
        logsPath({ workflowIds: wf, order, limit: "2", cursor: first.body.nextCursor }),
        logsKey,
      );
      const seen = [...first.body.data, ...second.body.data].map(
        (l: { executionId: string }) => l.executionId,
      );
      expect(seen).toEqual(order === "asc" ? exec(0, 1, 2) : exec(2, 1, 0));
    }
    const first = await get(logsPath({ workflowIds: wf, order: "asc", limit: "1" }), logsKey);
    const cursor = first.body.nextCursor as string;
    const other = await get(logsPath({ workflowIds: wf, order: "asc", level: "error", cursor }), logsKey);
    expect(other).toMatchObject({ status: 400, body: { error: "cursor does not match the query" } });
    const otherOrder = await get(logsPath({ workflowIds: wf, order: "desc", cursor }), logsKey);
    expect(otherOrder).toMatchObject({ status: 400, body: { error: "cursor does not match the query" } });
    const tampered = await get(
      logsPath({ workflowIds: wf, order: "asc", cursor: `x${cursor.slice(1)}` }),
      logsKey,
    );
    expect(tampered).toMatchObject({ status: 400, body: { error: "cursor is invalid" } });
    // another tenant cannot use it either: it names another query
    const foreign = await get(
      `/api/v1/logs?${new URLSearchParams({ workspaceId: otherTenantId, workflowIds: wf, order: "asc", cursor })}`,
      otherKey,
    );
    expect(foreign.status).toBe(200);
    expect(foreign.body.data).toEqual([]);
  });

  it("refuses bad parameters with 400 naming them", async () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ triggers: "api,carrier-pigeon" }, /^triggers /],
      [{ triggers: "" }, /^triggers /],
      [{ level: "warn" }, /^level /],
      [{ startDate: "yesterday" }, /^startDate /],
      [{ endDate: "2025-13-45T00:00:00Z" }, /^endDate /],
      [{ startDate: "2025-02-01T00:00:00Z", endDate: "2025-01-01T00:00:00Z" }, /^startDate .*endDate/],
      [{ minDurationMs: "abc" }, /^minDurationMs /],
      [{ maxDurationMs: "-5" }, /^maxDurationMs /],
      [{ minDurationMs: "10", maxDurationMs: "5" }, /^minDurationMs .*maxDurationMs/],
      [{ minCost: "cheap" }, /^minCost /],
      [{ maxCost: "1e3" }, /^maxCost /],
      [{ minCost: "2", maxCost: "1" }, /^minCost .*maxCost/],
      [{ executionId: "" }, /^executionId /],
      [{ workflowIds: "," }, /^workflowIds /],
      [{ folderIds: "" }, /^folderIds /],
      [{ model: "" }, /^model /],
      [{ limit: "0" }, /^limit /],
      [{ limit: "1001" }, /^limit /],
      [{ order: "random" }, /^order /],
      [{ details: "all" }, /^details /],
      [{ includeTraceSpans: "1" }, /^includeTraceSpans /],
      [{ includeFinalOutput: "yes" }, /^includeFinalOutput /],
      [{ cursor: "abc" }, /^cursor /],
      [{ colour: "blue" }, /colour/],
    ];
    for (const [params, message] of cases) {
      const res = await get(logsPath(params), logsKey);
      expect(res.status, JSON.stringify(params)).toBe(400);
      expect(res.body.error, JSON.stringify(params)).toMatch(message);
    }
    const missing = await get("/api/v1/logs", logsKey);
    expect(missing).toMatchObject({ status: 400, body: { error: "workspaceId is required" } });
  });

  it("refuses callers without a key (401), without logs:read (403) or for another workspace (403)", async () => {
    expect((await get(logsPath({}), undefined)).status).toBe(401);
    expect((await get(logsPath({}), "fp_test_not_a_real_key")).status).toBe(401);
    expect((await get(logsPath({}), executeOnlyKey)).status).toBe(403);
    const cross = await get(logsPath({}), otherKey);
    expect(cross).toMatchObject({
      status: 403,
      body: { error: "workspaceId does not match the API key's workspace" },
    });
  });
});

describe("seed 002's polling example", () => {
  it("sees every log exactly once, including runs that finish after later-started ones", async () => {
    const processed: string[] = [];
    // The seed's code; only the host and the key differ.
    let cursor: string | null = null;
    const workspaceId = tenantId;
    const startDate = new Date().toISOString();
    async function pollLogs() {
      const params = new URLSearchParams({
        workspaceId,
        startDate,
        order: "asc",
        limit: "100",
      });
      if (cursor) {
        params.append("cursor", cursor);
      }
      const response = await fetch(`${baseUrl}/api/v1/logs?${params}`, {
        headers: {
          "x-api-key": logsKey,
        },
      });
      if (response.ok) {
        // (TypeScript needs the shape; the seed's JavaScript does not.)
        const data = (await response.json()) as {
          data: { executionId: string }[];
          nextCursor: string | null;
        };
        // Process new logs
        for (const log of data.data) {
          processed.push(log.executionId);
        }
        // Update cursor for next poll
        if (data.nextCursor) {
          cursor = data.nextCursor;
        }
      }
    }

    const t0 = Date.parse(startDate);
    const short = [5, 6, 7].map((s) => completion({ startedAtMs: t0 + s * 1000 }));
    await publishAll(short);
    await pollLogs();
    // A long run that started before the short ones finishes now; then more short ones.
    const long = completion({ startedAtMs: t0 + 1000, durationMs: 60_000 });
    const more = [8, 9].map((s) => completion({ startedAtMs: t0 + s * 1000 }));
    await publishAll([long, ...more]);
    await pollLogs();
    await pollLogs();
    // And a real execution through the API.
    const executed = await fetch(`${baseUrl}/api/executeWorkflow`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": adminKey },
      body: JSON.stringify({ workflowId, version: 1, input: { "First Name": "John", Age: 30 } }),
    });
    expect(executed.status).toBe(200);
    const { executionId } = (await executed.json()) as { executionId: string };
    await waitFor("the poller to see the execution", async () => {
      await pollLogs();
      return processed.includes(executionId) ? true : undefined;
    });
    await pollLogs();
    const expected = [...short, long, ...more].map((e) => e.executionId).concat(executionId);
    expect([...processed].sort()).toEqual([...expected].sort());
    expect(processed).toHaveLength(expected.length);
  });
});

describe("GET /api/v1/logs/{id} and /api/v1/logs/executions/{executionId}", () => {
  it("answers a real execution's detail and its workflow snapshot", async () => {
    const executed = await fetch(`${baseUrl}/api/executeWorkflow`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": adminKey },
      body: JSON.stringify({ workflowId, version: 1, input: { "First Name": "Ann", Age: 1 } }),
    });
    const { executionId } = (await executed.json()) as { executionId: string };
    const listed = await waitFor("the execution's log", async () => {
      const res = await get(logsPath({ executionId }), logsKey);
      return res.body.data?.[0] as { id: string } | undefined;
    });
    // The executor's completion carries the workflow's folder.
    const inFolder = await get(logsPath({ folderIds: "fld_demo,fld_other", executionId }), logsKey);
    expect(inFolder.body.data.map((l: { id: string }) => l.id)).toEqual([listed.id]);
    expect((await get(logsPath({ folderIds: "fld_other", executionId }), logsKey)).body.data).toEqual([]);

    const detail = await get(`/api/v1/logs/${listed.id}`, logsKey);
    expect(detail.status).toBe(200);
    expect(detail.body.data).toMatchObject({
      id: listed.id,
      workflowId,
      executionId,
      level: "info",
      trigger: "api",
      workflow: { id: workflowId, name: "Demo", description: "Greets a person" },
      executionData: { finalOutput: { Greeting: "Hello Ann", "Next Age": 2 } },
      cost: { tokens: { prompt: 0, completion: 0, total: 0 }, models: {} },
    });
    expect(detail.body.data.executionData.traceSpans.length).toBeGreaterThan(0);

    const execution = await get(`/api/v1/logs/executions/${executionId}`, logsKey);
    expect(execution.status).toBe(200);
    expect(Object.keys(execution.body).sort()).toEqual([
      "executionId",
      "executionMetadata",
      "workflowId",
      "workflowState",
    ]);
    expect(execution.body).toMatchObject({
      executionId,
      workflowId,
      workflowState: { loops: {}, parallels: {} },
      executionMetadata: {
        trigger: "api",
        totalDurationMs: expect.any(Number),
        cost: { total: expect.any(Number) },
      },
    });
    expect(Object.keys(execution.body.workflowState.blocks).sort()).toEqual([
      "greet",
      "out_age",
      "out_greeting",
      "start",
    ]);
    expect(execution.body.workflowState.blocks.greet).toMatchObject({
      id: "greet",
      type: "function",
      name: "Greet",
    });
    expect(execution.body.workflowState.edges).toHaveLength(3);
    expect(execution.body.executionMetadata.startedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it("redacts secrets in the snapshot", async () => {
    const event = completion({ startedAtMs: BASE_MS + 77 });
    await publishAll([event]);
    const execution = await get(`/api/v1/logs/executions/${event.executionId}`, logsKey);
    expect(execution.body.workflowState.blocks.call.config).toEqual({
      url: "https://x.test",
      apiKey: "[redacted]",
    });
    expect(execution.body.executionMetadata.cost).toMatchObject({
      total: 0.001,
      tokens: { prompt: 10, completion: 5, total: 15 },
    });
  });

  it("answers 404 for missing and other tenants' ids, 401/403 without key or scope", async () => {
    const event = completion({ startedAtMs: BASE_MS + 88 });
    await publishAll([event]);
    const { id } = (await get(logsPath({ executionId: event.executionId }), logsKey)).body.data[0];
    for (const path of [`/api/v1/logs/${id}`, `/api/v1/logs/executions/${event.executionId}`]) {
      expect((await get(path, logsKey)).status).toBe(200);
      expect((await get(path, otherKey)).status).toBe(404);
      expect((await get(path, undefined)).status).toBe(401);
      expect((await get(path, executeOnlyKey)).status).toBe(403);
      expect((await get(`${path}?workspaceId=${otherTenantId}`, logsKey)).status).toBe(403);
      expect((await get(`${path}?colour=red`, logsKey)).status).toBe(400);
    }
    expect((await get("/api/v1/logs/log_missing", logsKey)).status).toBe(404);
    expect((await get("/api/v1/logs/executions/exec_missing", logsKey)).status).toBe(404);
  });
});

describe("infrastructure faults", () => {
  it("answers 503 when the logs service or its database is down, never 401 or 500", async () => {
    // A logs replica whose database connections run through a proxy we cut.
    const sockets = new Set<net.Socket>();
    const dbUrl = new URL(stack.databaseUrl);
    const proxy = net.createServer((inbound) => {
      const upstream = net.connect(Number(dbUrl.port || 5432), dbUrl.hostname);
      sockets.add(inbound).add(upstream);
      inbound.pipe(upstream).pipe(inbound);
      const close = () => {
        inbound.destroy();
        upstream.destroy();
      };
      inbound.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const proxied = new URL(stack.databaseUrl);
    proxied.hostname = "127.0.0.1";
    proxied.port = String((proxy.address() as net.AddressInfo).port);
    const replica = await startService(logsService, {
      DATABASE_URL: proxied.toString(),
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: stack.namespace,
      LOGS_PORT: "0",
      LOG_LEVEL: "silent",
      LOGS_RETENTION_DAYS_DEFAULT: "36500",
    });
    try {
      const url = await startGateway(`http://127.0.0.1:${replica.port}`);
      expect((await get(logsPath({ limit: "1" }), logsKey, url)).status).toBe(200);
      proxy.close();
      for (const s of sockets) s.destroy();
      for (const path of [
        logsPath({}),
        logsPath({ order: "asc" }),
        "/api/v1/logs/log_x",
        "/api/v1/logs/executions/exec_x",
      ]) {
        const res = await get(path, logsKey, url);
        expect(res.status, path).toBe(503);
      }
    } finally {
      await replica.stop();
      if (proxy.listening) proxy.close();
    }
    // The logs service itself unreachable.
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const down = await startGateway(`http://127.0.0.1:${port}`);
    const res = await get(logsPath({}), logsKey, down);
    expect(res).toMatchObject({ status: 503, body: { error: "logs service unavailable" } });
  });
});
