/** The engine's spans and cost as the events/v1 messages (the seeds' traceSpans and cost shapes). */
import { create, fromJson } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  type Cost,
  CostSchema,
  ModelCostSchema,
  SpanCostSchema,
  TokensSchema,
  type TraceSpan,
  TraceSpanSchema,
} from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import type { RunCost } from "./cost.js";
import type { BlockSpan, TokenCounts } from "./graph.js";

function tokensMessage(tokens: TokenCounts) {
  return create(TokensSchema, {
    prompt: BigInt(tokens.prompt),
    completion: BigInt(tokens.completion),
    total: BigInt(tokens.total),
  });
}

/** A span with its children, tokens, cost, model and loop/parallel iteration fields. */
export function traceSpanMessage(span: BlockSpan): TraceSpan {
  return create(TraceSpanSchema, {
    id: span.id,
    blockId: span.blockId,
    name: span.name,
    type: span.type,
    status: span.status,
    startTime: timestampFromDate(span.startTime),
    endTime: timestampFromDate(span.endTime),
    duration: BigInt(span.durationMs),
    input: span.input === undefined ? undefined : fromJson(ValueSchema, span.input),
    output: span.output === undefined ? undefined : fromJson(ValueSchema, span.output),
    error: span.error,
    model: span.model,
    tokens: span.tokens === undefined ? undefined : tokensMessage(span.tokens),
    cost: span.cost === undefined ? undefined : create(SpanCostSchema, span.cost),
    loopId: span.loopId,
    parallelId: span.parallelId,
    iterationIndex: span.iterationIndex,
    children: (span.children ?? []).map(traceSpanMessage),
  });
}

/** Total, tokens and per-model costs; tokens and models are left out when no model was used. */
export function costMessage(cost: RunCost): Cost {
  const message = create(CostSchema, { total: cost.total });
  const models = Object.entries(cost.models);
  if (models.length > 0) {
    message.tokens = tokensMessage(cost.tokens);
    for (const [model, usage] of models) {
      message.models[model] = create(ModelCostSchema, {
        input: usage.input,
        output: usage.output,
        total: usage.total,
        tokens: tokensMessage(usage.tokens),
      });
    }
  }
  return message;
}
