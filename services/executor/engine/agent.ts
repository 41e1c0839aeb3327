/**
 * The `agent` block: one chat completion against the OpenAI-compatible endpoint configured by
 * EXECUTOR_LLM_BASE_URL (POST <base>/chat/completions, bearer EXECUTOR_LLM_API_KEY). Config: `model`,
 * `systemPrompt` and `userPrompt` (`{{ … }}` templates), optional `temperature` and `maxTokens`.
 *
 * Conversation memory: the messages sent are the system prompt, then the earlier turns of this same
 * block in the conversation (user prompt and reply of each successful run, oldest first, at most
 * EXECUTOR_AGENT_HISTORY_TURNS), then this run's user prompt. The turns come from the trace spans of
 * the conversation's previous executions (agentHistoryFromSpans).
 *
 * Output: `{content, model, tokens}`; the span records model, tokens and cost (price table in cost.ts).
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { type ModelPrices, priceTokens } from "./cost.js";
import type { ExpressionVariables } from "./expressions.js";
import { abortMessage, BlockFailure, type BlockOutcome, type TokenCounts } from "./graph.js";
import { compileBlockTemplate, DefinitionProblem, describeBlock, isPlainObject } from "./problems.js";
import type { CompiledTemplate } from "./templates.js";

export interface AgentBlockConfig {
  model: string;
  systemPrompt?: CompiledTemplate;
  userPrompt: CompiledTemplate;
  temperature?: number;
  maxTokens?: number;
}

export interface LlmSettings {
  /** e.g. http://127.0.0.1:8000/v1; empty when no endpoint is configured. */
  baseUrl: string;
  apiKey: string;
  timeoutMs: number;
  prices: ModelPrices;
  historyTurns: number;
}

export interface AgentTurn {
  user: string;
  assistant: string;
}

/** Block id → earlier turns of that agent block in the conversation, oldest first. */
export type AgentHistory = ReadonlyMap<string, readonly AgentTurn[]>;

export function readAgentConfig(block: Block): AgentBlockConfig {
  const where = describeBlock(block);
  const config = block.config ?? {};
  if (typeof config.model !== "string" || config.model.trim() === "") {
    throw new DefinitionProblem(`${where}: an agent block needs config.model`);
  }
  if (typeof config.userPrompt !== "string" || config.userPrompt.trim() === "") {
    throw new DefinitionProblem(`${where}: an agent block needs config.userPrompt`);
  }
  const out: AgentBlockConfig = {
    model: config.model,
    userPrompt: compileBlockTemplate(block, "config.userPrompt", config.userPrompt),
  };
  if (config.systemPrompt !== undefined && config.systemPrompt !== null && config.systemPrompt !== "") {
    out.systemPrompt = compileBlockTemplate(block, "config.systemPrompt", config.systemPrompt);
  }
  if (config.temperature !== undefined && config.temperature !== null) {
    if (typeof config.temperature !== "number" || config.temperature < 0 || config.temperature > 2) {
      throw new DefinitionProblem(`${where}: config.temperature must be a number from 0 to 2`);
    }
    out.temperature = config.temperature;
  }
  if (config.maxTokens !== undefined && config.maxTokens !== null) {
    if (
      typeof config.maxTokens !== "number" ||
      !Number.isInteger(config.maxTokens) ||
      config.maxTokens <= 0
    ) {
      throw new DefinitionProblem(`${where}: config.maxTokens must be a positive integer`);
    }
    out.maxTokens = config.maxTokens;
  }
  return out;
}

interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** Throws ExpressionError when a prompt fails to render, BlockFailure when the call does. */
export async function runAgentBlock(
  blockId: string,
  config: AgentBlockConfig,
  settings: LlmSettings,
  history: AgentHistory,
  variables: ExpressionVariables,
  signal: AbortSignal | undefined,
): Promise<BlockOutcome> {
  const systemPrompt = config.systemPrompt?.renderText(variables);
  const userPrompt = config.userPrompt.renderText(variables);
  const turns = (history.get(blockId) ?? []).slice(-settings.historyTurns);
  const messages: ChatMessage[] = [];
  if (systemPrompt !== undefined && systemPrompt !== "")
    messages.push({ role: "system", content: systemPrompt });
  for (const turn of turns) {
    messages.push({ role: "user", content: turn.user }, { role: "assistant", content: turn.assistant });
  }
  messages.push({ role: "user", content: userPrompt });
  const input: JsonObject = { model: config.model, userPrompt, historyTurns: turns.length };
  if (systemPrompt !== undefined) input.systemPrompt = systemPrompt;

  if (settings.baseUrl === "") {
    throw new BlockFailure("no LLM endpoint is configured (EXECUTOR_LLM_BASE_URL)", input);
  }
  const request: JsonObject = { model: config.model, messages: messages as unknown as JsonValue[] };
  if (config.temperature !== undefined) request.temperature = config.temperature;
  if (config.maxTokens !== undefined) request.max_tokens = config.maxTokens;

  const deadline = AbortSignal.timeout(settings.timeoutMs);
  let reply: unknown;
  try {
    const response = await fetch(`${settings.baseUrl.replace(/\/+$/, "")}/chat/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(settings.apiKey === "" ? {} : { authorization: `Bearer ${settings.apiKey}` }),
      },
      body: JSON.stringify(request),
      signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
    });
    const text = await response.text();
    if (!response.ok) {
      throw new BlockFailure(`the LLM endpoint answered ${response.status}: ${text.slice(0, 200)}`, input);
    }
    reply = JSON.parse(text);
  } catch (err) {
    if (err instanceof BlockFailure) throw err;
    if (signal?.aborted) throw new BlockFailure(abortMessage(signal), input);
    if (deadline.aborted)
      throw new BlockFailure(`the LLM call timed out after ${settings.timeoutMs} ms`, input);
    throw new BlockFailure(`the LLM call failed: ${err instanceof Error ? err.message : String(err)}`, input);
  }

  const { content, tokens, model } = readCompletion(reply, config.model, input);
  const cost = priceTokens(settings.prices, model, tokens);
  return {
    input,
    output: { content, model, tokens: { ...tokens } },
    model,
    tokens,
    cost,
  };
}

function readCompletion(reply: unknown, requestedModel: string, input: JsonObject) {
  const body = isPlainObject(reply) ? reply : {};
  const choice = Array.isArray(body.choices) && isPlainObject(body.choices[0]) ? body.choices[0] : undefined;
  const message = choice && isPlainObject(choice.message) ? choice.message : undefined;
  if (typeof message?.content !== "string") {
    throw new BlockFailure("the LLM endpoint's answer has no choices[0].message.content", input);
  }
  const usage = isPlainObject(body.usage) ? body.usage : {};
  const count = (value: unknown) =>
    typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : 0;
  const prompt = count(usage.prompt_tokens);
  const completion = count(usage.completion_tokens);
  const tokens: TokenCounts = {
    prompt,
    completion,
    total: typeof usage.total_tokens === "number" ? count(usage.total_tokens) : prompt + completion,
  };
  // Prices are looked up by the model that was asked for: endpoints often answer with a dated variant.
  return { content: message.content, tokens, model: requestedModel };
}

/**
 * Agent turns recorded in stored trace spans (their JSON form), oldest execution first: for each
 * successful agent span (also inside loop and parallel iterations, not inside child workflows), the
 * user prompt it sent and the reply it got.
 */
export function agentHistoryFromSpans(executions: ReadonlyArray<readonly JsonValue[]>): AgentHistory {
  const history = new Map<string, AgentTurn[]>();
  const visit = (span: JsonValue) => {
    if (!isPlainObject(span)) return;
    if (span.type === "agent" && span.status === "success" && typeof span.blockId === "string") {
      const user = isPlainObject(span.input) ? span.input.userPrompt : undefined;
      const assistant = isPlainObject(span.output) ? span.output.content : undefined;
      if (typeof user === "string" && typeof assistant === "string") {
        const turns = history.get(span.blockId) ?? [];
        turns.push({ user, assistant });
        history.set(span.blockId, turns);
      }
    }
    if (span.type !== "workflow" && Array.isArray(span.children)) {
      for (const child of span.children) visit(child);
    }
  };
  for (const spans of executions) for (const span of spans) visit(span);
  return history;
}
