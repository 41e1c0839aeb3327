import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  ExecutionStatus,
  TraceSpanSchema,
  Trigger,
} from "../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { ExecuteResponseSchema } from "../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { LogEntrySchema } from "../services/platform/gen/flowplane/logs/v1/logs_pb.js";
import { executeResponseJson, logDetailJson, logListItemJson, traceSpanJson } from "./json.js";

const started = new Date("2025-01-01T12:34:56.789Z");
const ended = new Date("2025-01-01T12:34:57.123Z");

describe("REST JSON shapes", () => {
  it("maps a trace span with its children, omitting what is unset", () => {
    const span = create(TraceSpanSchema, {
      id: "span_loop",
      blockId: "loop1",
      name: "Loop",
      type: "loop",
      status: "success",
      startTime: timestampFromDate(started),
      endTime: timestampFromDate(ended),
      duration: 334n,
      children: [
        {
          id: "span_agent",
          blockId: "agent",
          name: "Agent",
          type: "agent",
          status: "error",
          duration: 12n,
          input: { kind: { case: "stringValue", value: "hi" } },
          error: "model refused",
          model: "gpt-4o",
          tokens: { prompt: 3n, completion: 4n, total: 7n },
          cost: { input: 0.001, output: 0.002, total: 0.003 },
          loopId: "loop1",
          iterationIndex: 0,
        },
      ],
    });
    expect(traceSpanJson(span)).toEqual({
      id: "span_loop",
      blockId: "loop1",
      name: "Loop",
      type: "loop",
      status: "success",
      startTime: "2025-01-01T12:34:56.789Z",
      endTime: "2025-01-01T12:34:57.123Z",
      duration: 334,
      children: [
        {
          id: "span_agent",
          blockId: "agent",
          name: "Agent",
          type: "agent",
          status: "error",
          startTime: null,
          endTime: null,
          duration: 12,
          input: "hi",
          error: "model refused",
          model: "gpt-4o",
          tokens: { prompt: 3, completion: 4, total: 7 },
          cost: { input: 0.001, output: 0.002, total: 0.003 },
          loopId: "loop1",
          iterationIndex: 0,
        },
      ],
    });
  });

  it("maps an execute answer with strings for the status and numbers for credits", () => {
    const res = create(ExecuteResponseSchema, {
      conversationId: "conv_1",
      executionId: "exec_1",
      output: { Greeting: "Hello John" },
      creditUsage: 1n,
      status: ExecutionStatus.ERROR,
      error: "block greet failed",
    });
    expect(executeResponseJson(res)).toEqual({
      conversationId: "conv_1",
      executionId: "exec_1",
      output: { Greeting: "Hello John" },
      creditUsage: 1,
      status: "error",
      error: "block greet failed",
    });
  });

  it("shapes log list items by details and include flags, and the detail with full cost", () => {
    const entry = create(LogEntrySchema, {
      id: "log_1",
      workflowId: "wf_1",
      executionId: "exec_1",
      level: "info",
      trigger: Trigger.SCHEDULE,
      startedAt: timestampFromDate(started),
      endedAt: timestampFromDate(ended),
      totalDurationMs: 334n,
      cost: {
        total: 0.00234,
        tokens: { prompt: 123n, completion: 456n, total: 579n },
        models: {
          "gpt-4o": {
            input: 0.001,
            output: 0.00134,
            total: 0.00234,
            tokens: { prompt: 123n, completion: 456n, total: 579n },
          },
        },
      },
      workflow: { id: "wf_1", name: "My Workflow", description: "Process customer data" },
      finalOutput: { ok: true },
    });
    const basic = { full: false, includeFinalOutput: false, includeTraceSpans: false };
    expect(logListItemJson(entry, basic)).toEqual({
      id: "log_1",
      workflowId: "wf_1",
      executionId: "exec_1",
      level: "info",
      trigger: "schedule",
      startedAt: "2025-01-01T12:34:56.789Z",
      endedAt: "2025-01-01T12:34:57.123Z",
      totalDurationMs: 334,
      cost: { total: 0.00234 },
      files: null,
    });
    const full = logListItemJson(entry, { full: true, includeFinalOutput: true, includeTraceSpans: true });
    expect(full).toMatchObject({
      workflow: { id: "wf_1", name: "My Workflow", description: "Process customer data" },
      finalOutput: { ok: true },
      traceSpans: [],
    });
    expect(logDetailJson(entry)).toMatchObject({
      executionData: { traceSpans: [], finalOutput: { ok: true } },
      cost: {
        total: 0.00234,
        tokens: { prompt: 123, completion: 456, total: 579 },
        models: {
          "gpt-4o": {
            input: 0.001,
            output: 0.00134,
            total: 0.00234,
            tokens: { prompt: 123, completion: 456, total: 579 },
          },
        },
      },
    });
  });
});
