import { createHash } from "node:crypto";
import type { OutgoingHttpHeaders } from "node:http";
import { create, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { TokenKind } from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { ExecutionStatus, Trigger } from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { type LiveEvent, LiveEventKind } from "../../services/platform/gen/flowplane/events/v1/run_pb.js";
import {
  type ExecuteResponse,
  ExecuteResponseSchema,
} from "../../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { ExecutionBucket, principalOf, requireScope, workflowIdOfBody } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { badRequest, errorAnswer, labelBackendError } from "../errors.js";
import { executeResponseJson } from "../json.js";
import { errorResponses, objectOf } from "../openapi.js";

interface ExecuteBody {
  workflowId: string;
  version?: number;
  input?: JsonObject;
  conversationId?: string;
}

interface SyncExecuteBody extends ExecuteBody {
  stream?: boolean;
}

export interface ExecuteRouteSettings {
  /** GATEWAY_SYNC_WAIT_MS: a sync run still going after this long answers 202. */
  syncWaitMs: number;
  /** GATEWAY_RPC_TIMEOUT_MS: the deadline of an RPC beyond the time a run is allowed to take. */
  rpcTimeoutMs: number;
}

const executeBodySchema = {
  type: "object",
  required: ["workflowId"],
  additionalProperties: false,
  properties: {
    workflowId: { type: "string", minLength: 1, maxLength: 200 },
    // int32 in the contract; 0 (latest) is expressed by leaving it out.
    version: { type: "integer", minimum: 1, maximum: 2_147_483_647 },
    input: { type: "object" },
    conversationId: { type: "string", maxLength: 200 },
  },
} as const;

const syncExecuteBodySchema = {
  ...executeBodySchema,
  properties: {
    ...executeBodySchema.properties,
    stream: {
      type: "boolean",
      description: "answer Server-Sent Events of the run's progress (same as Accept: text/event-stream)",
    },
  },
} as const;

const executionStatus = { type: "string", enum: ["queued", "running", "success", "error"] } as const;

const executeResponseSchema = {
  type: "object",
  description: "The finished execution",
  required: ["conversationId", "executionId", "output", "creditUsage", "status"],
  properties: {
    conversationId: { type: "string", description: "pass it back to continue the conversation" },
    executionId: { type: "string" },
    output: {
      type: "object",
      additionalProperties: true,
      description: "output block name → value",
    },
    creditUsage: { type: "integer", description: "credits charged (1 credit = USD 0.001)" },
    status: executionStatus,
    error: { type: "string", description: "why the run failed (status error)" },
  },
} as const;

const stillRunningSchema = objectOf(
  {
    conversationId: { type: "string" },
    executionId: { type: "string", description: "poll GET /api/v1/executions/{executionId} (the Location)" },
    status: { type: "string", enum: ["running"] },
    creditUsage: { type: "integer", enum: [0], description: "charged when the run ends" },
  },
  "The run is still going after the gateway's sync wait (GATEWAY_SYNC_WAIT_MS, 30 s by default); it " +
    "finishes in the background. Poll the Location header, GET /api/v1/executions/{executionId}.",
);

const SSE_DESCRIPTION = [
  "With `stream: true` or `Accept: text/event-stream`: Server-Sent Events, each with `id: <n>` (1, 2, …),",
  "`event:` and one line of JSON `data:`:",
  '`started` {"conversationId", "executionId"};',
  '`block` {"blockId", "name", "type", "status" (running, success, error, skipped), "startedAt",',
  '"endedAt"?, "durationMs"?, "error"?} as blocks start and finish, in the order they run;',
  "`result`: exactly the JSON body of the non-streaming answer, last;",
  '`error` {"error", "code"}: the stream failed outside the run (e.g. the executor went away), last.',
  "No sync wait applies; a client that disconnects does not stop or repeat the run.",
  "Refusals before the run starts (key, scope, rate limit, input) are ordinary JSON errors.",
].join(" ");

const backgroundResponseSchema = objectOf(
  {
    conversationId: { type: "string", description: "poll it with POST /api/getConversationById" },
    executionId: { type: "string", description: "or poll GET /api/v1/executions/{id}" },
    creditUsage: { type: "integer", enum: [0], description: "nothing ran yet" },
    status: { type: "string", enum: ["queued"] },
  },
  "The queued execution",
);

const IDEMPOTENCY_KEY_FORMAT = /^[\x21-\x7e]{1,255}$/;

const idempotencyHeaderDocs = {
  type: "object",
  properties: {
    "idempotency-key": {
      type: "string",
      pattern: "^[\\x21-\\x7e]{1,255}$",
      description:
        "Makes retries safe: within 24 h, the same key with the same body answers the first " +
        "response again (header Idempotent-Replayed: true) without running again; with another " +
        "body, or while the first request is still running, 409. Keys are per workspace.",
    },
  },
} as const;

/** JSON with object keys sorted at every depth, so equal bodies serialize equally. */
function canonicalJson(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k] as JsonValue)}`);
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The Idempotency-Key header and what "the same request" is for it: the route and the canonical
 * JSON body (so key order and whitespace do not matter). Empty when the header is absent.
 */
function idempotencyOf(request: FastifyRequest): { idempotencyKey: string; requestFingerprint: string } {
  const header = request.headers["idempotency-key"];
  if (header === undefined) return { idempotencyKey: "", requestFingerprint: "" };
  const key = Array.isArray(header) ? undefined : header;
  if (key === undefined || !IDEMPOTENCY_KEY_FORMAT.test(key)) {
    throw badRequest("Idempotency-Key must be given once, as 1 to 255 visible ASCII characters");
  }
  const fingerprint = createHash("sha256")
    .update(`${request.routeOptions.url}\n${canonicalJson(request.body as JsonValue)}`)
    .digest("hex");
  return { idempotencyKey: key, requestFingerprint: fingerprint };
}

function markReplay(reply: FastifyReply, replay: boolean): void {
  if (replay) reply.header("idempotent-replayed", "true");
}

// How long a streamed run waits for the gateway's watch before starting anyway (the gateway or its
// client went away in between); the watch normally attaches one round trip after the answer.
const STREAM_START_HOLD_MS = 5_000;
// A comment line this often keeps proxies from closing a quiet stream (a long wait block).
const STREAM_KEEPALIVE_MS = 15_000;

function wantsEventStream(request: FastifyRequest): boolean {
  const accept = request.headers.accept;
  return typeof accept === "string" && /(^|,)\s*text\/event-stream\s*(;|,|$)/i.test(accept);
}

function isFinal(status: ExecutionStatus): boolean {
  return status === ExecutionStatus.SUCCESS || status === ExecutionStatus.ERROR;
}

/** A live block event as the stream's `block` data. */
function blockEventJson(event: LiveEvent, startedAt: Map<string, Date>): Record<string, unknown> {
  const at = event.at ? timestampDate(event.at) : new Date();
  const base = { blockId: event.blockId, name: event.blockName, type: event.blockType };
  if (event.kind === LiveEventKind.BLOCK_STARTED) {
    startedAt.set(event.blockId, at);
    return { ...base, status: "running", startedAt: at.toISOString() };
  }
  const started = startedAt.get(event.blockId) ?? at;
  startedAt.delete(event.blockId);
  return {
    ...base,
    status: event.blockStatus || "success",
    startedAt: started.toISOString(),
    endedAt: at.toISOString(),
    durationMs: at.getTime() - started.getTime(),
    ...(event.error !== undefined ? { error: event.error } : {}),
  };
}

/**
 * Answers Server-Sent Events for a sync run the executor answered at once (`res`, status running,
 * or final on an idempotent replay): `started`, a `block` per live block event from WatchExecution,
 * then `result` (the non-streaming answer's body) or `error`. The run is not tied to this
 * connection: a client that goes away only ends the watch.
 */
async function streamExecution(
  request: FastifyRequest,
  reply: FastifyReply,
  clients: GatewayClients,
  res: ExecuteResponse,
): Promise<void> {
  const tenantId = principalOf(request).tenantId;
  const { executionId, conversationId } = res;
  reply.hijack();
  const raw = reply.raw;
  // Headers set so far (x-request-id, rate limits, CORS, Idempotent-Replayed) go out with the stream.
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) headers[name] = value;
  }
  raw.writeHead(200, {
    ...headers,
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    // Tells nginx-style proxies not to buffer the stream.
    "x-accel-buffering": "no",
  });
  const closed = new AbortController();
  raw.on("close", () => closed.abort());
  let id = 0;
  const send = (event: string, data: unknown) => {
    if (raw.writableEnded || raw.destroyed) return;
    id += 1;
    raw.write(`id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const keepalive = setInterval(() => {
    if (!raw.writableEnded && !raw.destroyed) raw.write(": keep-alive\n\n");
  }, STREAM_KEEPALIVE_MS);
  const resultOf = async (): Promise<ExecuteResponse> => {
    const { execution } = await clients.executions.getExecution({ tenantId, executionId });
    return create(ExecuteResponseSchema, {
      conversationId,
      executionId,
      output: execution!.output ?? {},
      creditUsage: execution!.creditUsage,
      status: execution!.status,
      error: execution!.error,
    });
  };

  try {
    send("started", { conversationId, executionId });
    let result: ExecuteResponse | undefined = isFinal(res.status) ? res : undefined;
    if (!result) {
      const startedAt = new Map<string, Date>();
      let finished = false;
      // No deadline: the stream lasts as long as the run (whose own timeout ends it).
      const watch = clients.executions.watchExecution(
        { tenantId, executionId },
        { signal: closed.signal, timeoutMs: 0 },
      );
      for await (const { event } of watch) {
        if (!event) continue;
        if (event.kind === LiveEventKind.BLOCK_STARTED || event.kind === LiveEventKind.BLOCK_FINISHED) {
          send("block", blockEventJson(event, startedAt));
        } else if (event.kind === LiveEventKind.EXECUTION_FINISHED) {
          finished = true;
          break;
        }
      }
      if (closed.signal.aborted) return;
      // The finished event carries no credits; the stored execution does (and covers a watch that
      // ended early).
      result = await resultOf();
      if (!finished && !isFinal(result.status)) {
        send("error", { error: "the execution's progress could not be followed", code: "unavailable" });
        return;
      }
    }
    send("result", executeResponseJson(result));
  } catch (err) {
    if (closed.signal.aborted) return;
    const answer = errorAnswer(labelBackendError("executor", err), request.id, 0);
    if (!answer || answer.status >= 500) {
      const level = answer?.status === 503 || answer?.status === 504 ? "warn" : "error";
      request.log[level]({ err, executionId }, "execution stream failed");
    }
    const body =
      answer && answer.status !== 500 ? answer.body : { error: "internal error", code: "internal" };
    send("error", { error: body.error, code: body.code });
  } finally {
    clearInterval(keepalive);
    if (!raw.writableEnded) raw.end();
  }
}

/**
 * `x-flowplane-trigger: manual` marks a run started by a person (the `flowplane run` CLI). Only admin
 * keys may say so; integrations' app keys always run as "api", so their logs cannot be disguised.
 */
function triggerOf(request: FastifyRequest): Trigger {
  const hint = request.headers["x-flowplane-trigger"];
  if (hint === "manual" && principalOf(request).kind === TokenKind.ADMIN) return Trigger.MANUAL;
  return Trigger.API;
}

/** The fields both execute RPCs take from the request: who runs what, with which input, how. */
function executeFieldsOf(request: FastifyRequest<{ Body: ExecuteBody }>) {
  const { workflowId, version, input, conversationId } = request.body;
  return {
    tenantId: principalOf(request).tenantId,
    workflowId,
    version: version ?? 0,
    input: input ?? {},
    conversationId: conversationId ?? "",
    trigger: triggerOf(request),
    ...idempotencyOf(request),
  };
}

/**
 * POST /api/executeWorkflow (seed 001): runs a workflow synchronously.
 * POST /api/executeWorkflowBackground (seed 001): queues it and answers at once.
 */
export function registerExecuteRoutes(
  app: FastifyInstance,
  clients: GatewayClients,
  settings: ExecuteRouteSettings,
): void {
  app.post<{ Body: SyncExecuteBody }>(
    "/api/executeWorkflow",
    {
      schema: {
        summary: "Run a workflow and wait for its output",
        description:
          "Runs the workflow's latest (or the given) version with `input` and answers with the " +
          "output components. Consumes one token of the workspace's sync execution bucket. A run " +
          "still going after the gateway's sync wait (30 s by default) answers 202 with a Location " +
          "to poll and finishes in the background. " +
          SSE_DESCRIPTION,
        tags: ["execute"],
        body: syncExecuteBodySchema,
        response: {
          200: {
            description: "The finished execution, or its progress as Server-Sent Events",
            content: {
              "application/json": { schema: executeResponseSchema },
              "text/event-stream": {
                schema: { type: "string", description: SSE_DESCRIPTION },
              },
            },
          },
          202: stillRunningSchema,
          ...errorResponses([400, 404, 409, 413, 415]),
        },
      },
      config: {
        openapi: {
          headers: {
            ...idempotencyHeaderDocs,
            properties: {
              ...idempotencyHeaderDocs.properties,
              accept: {
                type: "string",
                description: "text/event-stream asks for Server-Sent Events (as `stream: true` does)",
              },
            },
          },
        },
      },
      preValidation: requireScope(clients.auth, "workflows:execute", workflowIdOfBody, {
        bucket: ExecutionBucket.SYNC,
      }),
    },
    async (request, reply) => {
      const streaming = request.body.stream === true || wantsEventStream(request);
      const res = await clients.executions.execute(
        {
          ...executeFieldsOf(request),
          // A stream answers once the run is stored and watches it; the run waits for the watch.
          maxWaitMs: streaming ? 0 : settings.syncWaitMs,
          startWhenWatchedMs: streaming ? STREAM_START_HOLD_MS : 0,
        },
        { timeoutMs: settings.syncWaitMs + settings.rpcTimeoutMs },
      );
      markReplay(reply, res.idempotentReplay);
      if (streaming) return streamExecution(request, reply, clients, res);
      if (res.status === ExecutionStatus.RUNNING) {
        return reply.code(202).header("location", `/api/v1/executions/${res.executionId}`).send({
          conversationId: res.conversationId,
          executionId: res.executionId,
          status: "running",
          creditUsage: 0,
        });
      }
      return executeResponseJson(res);
    },
  );

  app.post<{ Body: ExecuteBody }>(
    "/api/executeWorkflowBackground",
    {
      schema: {
        summary: "Queue a workflow run and answer at once",
        description:
          "Stores a queued execution and answers with its conversationId and executionId at once " +
          "(creditUsage 0); poll POST /api/getConversationById or GET /api/v1/executions/{id}. " +
          "Consumes one token of the workspace's async execution bucket.",
        tags: ["execute"],
        body: executeBodySchema,
        response: { 200: backgroundResponseSchema, ...errorResponses([400, 404, 409, 413, 415]) },
      },
      config: { openapi: { headers: idempotencyHeaderDocs } },
      preValidation: requireScope(clients.auth, "workflows:execute", workflowIdOfBody, {
        bucket: ExecutionBucket.ASYNC,
      }),
    },
    async (request, reply) => {
      const res = await clients.executions.executeBackground(executeFieldsOf(request));
      markReplay(reply, res.idempotentReplay);
      return {
        conversationId: res.conversationId,
        creditUsage: Number(res.creditUsage),
        executionId: res.executionId,
        status: "queued",
      };
    },
  );
}
