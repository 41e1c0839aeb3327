/** Running a workflow version synchronously, and reading conversations back. */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { JetStreamClient } from "nats";
import { NotFoundError } from "../platform/errors.js";
import type { Trigger } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type Conversation,
  ConversationSchema,
  type ExecuteResponse,
  ExecuteResponseSchema,
} from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/log.js";
import type { NatsNames } from "../platform/nats.js";
import { publishStoredExecution } from "./completion.js";
import { checkWorkflowInput, runWorkflow } from "./engine/run.js";
import type { FunctionSandbox } from "./engine/sandbox.js";
import {
  costJson,
  costMessage,
  executionMessage,
  statusFromText,
  traceSpanMessage,
  traceSpansJson,
  triggerText,
} from "./records.js";
import {
  type ExecutionRow,
  type ExecutorDb,
  findConversation,
  findWorkflow,
  insertExecution,
  listConversationExecutions,
} from "./store.js";
import type { CompiledVersions } from "./versions.js";

export interface ExecutionDeps {
  db: ExecutorDb;
  js: JetStreamClient;
  names: NatsNames;
  log: Logger;
  sandbox: FunctionSandbox;
  versions: CompiledVersions;
  /** Price of one execution, USD. */
  basePriceUsd: number;
}

export interface ExecuteCommand {
  tenantId: string;
  workflowId: string;
  /** 0 = latest published. */
  version: number;
  input: JsonObject;
  /** Empty starts a new conversation. */
  conversationId: string;
  trigger: Trigger;
}

const MICRO_USD_PER_USD = 1_000_000;
const MICRO_USD_PER_CREDIT = 1_000; // 1 credit = USD 0.001

/** Cost rounded to whole micro-dollars, and the credits it takes (rounded up), in integer arithmetic. */
export function priceExecution(costUsd: number): { costUsd: number; credits: number } {
  const micro = Math.round(costUsd * MICRO_USD_PER_USD);
  return {
    costUsd: micro / MICRO_USD_PER_USD,
    credits: Math.floor((micro + MICRO_USD_PER_CREDIT - 1) / MICRO_USD_PER_CREDIT),
  };
}

/**
 * Runs the workflow and answers once the execution is stored; its completion is published before
 * answering when JetStream acks in time, otherwise the outbox sweeper publishes it later.
 */
export async function executeWorkflow(deps: ExecutionDeps, cmd: ExecuteCommand): Promise<ExecuteResponse> {
  const workflow = await findWorkflow(deps.db, cmd.tenantId, cmd.workflowId);
  if (!workflow) throw new NotFoundError(`workflow ${cmd.workflowId} not found`);
  const version = cmd.version === 0 ? workflow.latest_version : cmd.version;
  if (version === 0) throw new NotFoundError(`workflow ${cmd.workflowId} has no published version`);
  const compiled = await deps.versions.load(deps.db, cmd.tenantId, cmd.workflowId, version);
  if (!compiled) throw new NotFoundError(`version ${version} of workflow ${cmd.workflowId} not found`);

  let newConversation: { id: string; createdAt: Date } | undefined;
  let conversationId = cmd.conversationId;
  if (conversationId !== "") {
    const conversation = await findConversation(deps.db, cmd.tenantId, conversationId);
    if (!conversation || conversation.workflow_id !== cmd.workflowId) {
      throw new NotFoundError(`conversation ${conversationId} not found`);
    }
  } else {
    newConversation = { id: newId("conv"), createdAt: new Date() };
    conversationId = newConversation.id;
  }

  const validatedInput = checkWorkflowInput(compiled, cmd.input);
  const startedAt = new Date();
  const result = await runWorkflow(compiled, cmd.input, validatedInput, { sandbox: deps.sandbox });
  const endedAt = new Date();
  const { costUsd, credits } = priceExecution(deps.basePriceUsd);

  const row: ExecutionRow = {
    id: newId("exec", startedAt.getTime()),
    tenant_id: cmd.tenantId,
    workflow_id: cmd.workflowId,
    workflow_version: version,
    conversation_id: conversationId,
    status: result.status,
    trigger: triggerText(cmd.trigger),
    input: cmd.input,
    output: result.output,
    path: result.path,
    error: result.error ?? null,
    warnings: [],
    trace_spans: traceSpansJson(result.spans.map(traceSpanMessage)),
    cost: costUsd,
    cost_detail: costJson(costMessage(costUsd)),
    credit_usage: credits,
    started_at: startedAt,
    ended_at: endedAt,
    duration_ms: endedAt.getTime() - startedAt.getTime(),
    published_at: null,
  };
  await insertExecution(
    deps.db,
    {
      ...row,
      input: JSON.stringify(row.input),
      output: JSON.stringify(row.output),
      trace_spans: JSON.stringify(row.trace_spans),
      cost_detail: JSON.stringify(row.cost_detail),
    },
    newConversation,
  );
  await publishStoredExecution(deps, row, workflow);

  return create(ExecuteResponseSchema, {
    conversationId,
    executionId: row.id,
    output: row.output,
    creditUsage: BigInt(credits),
    status: statusFromText(row.status),
    error: row.error ?? undefined,
  });
}

/** The conversation with its executions, oldest first; NotFound unless it is the tenant's and the workflow's. */
export async function getConversation(
  db: ExecutorDb,
  req: { tenantId: string; workflowId: string; conversationId: string },
): Promise<Conversation> {
  const conversation = await findConversation(db, req.tenantId, req.conversationId);
  if (!conversation || conversation.workflow_id !== req.workflowId) {
    throw new NotFoundError(`conversation ${req.conversationId} not found`);
  }
  const executions = await listConversationExecutions(db, req.tenantId, conversation.id);
  return create(ConversationSchema, {
    id: conversation.id,
    workflowId: conversation.workflow_id,
    createdAt: timestampFromDate(conversation.created_at),
    executions: executions.map(executionMessage),
  });
}
