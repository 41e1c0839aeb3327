/**
 * Model prices and an execution's cost: each agent span's tokens priced from the per-model table
 * (EXECUTOR_MODEL_PRICES, USD per million tokens; a model missing from it costs nothing), summed per
 * model, plus the per-execution base price.
 */
import type { BlockSpan, SpanCost, TokenCounts } from "./graph.js";

export interface ModelPrice {
  inputPerMTokUsd: number;
  outputPerMTokUsd: number;
}

export type ModelPrices = Readonly<Record<string, ModelPrice>>;

export class ModelPricesError extends Error {}

/** Parses the EXECUTOR_MODEL_PRICES JSON: `{"<model>": {"inputPerMTokUsd": n, "outputPerMTokUsd": n}}`. */
export function parseModelPrices(text: string): ModelPrices {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ModelPricesError("is not JSON");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new ModelPricesError(
      'must be an object {"<model>": {"inputPerMTokUsd": n, "outputPerMTokUsd": n}}',
    );
  }
  const prices: Record<string, ModelPrice> = {};
  for (const [model, price] of Object.entries(parsed)) {
    const { inputPerMTokUsd, outputPerMTokUsd } = (price ?? {}) as Record<string, unknown>;
    for (const [key, value] of [
      ["inputPerMTokUsd", inputPerMTokUsd],
      ["outputPerMTokUsd", outputPerMTokUsd],
    ] as const) {
      if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
        throw new ModelPricesError(`${model}.${key} must be a number ≥ 0`);
      }
    }
    prices[model] = {
      inputPerMTokUsd: inputPerMTokUsd as number,
      outputPerMTokUsd: outputPerMTokUsd as number,
    };
  }
  return prices;
}

export function priceTokens(prices: ModelPrices, model: string, tokens: TokenCounts): SpanCost {
  const price = prices[model];
  const input = price ? (tokens.prompt * price.inputPerMTokUsd) / 1_000_000 : 0;
  const output = price ? (tokens.completion * price.outputPerMTokUsd) / 1_000_000 : 0;
  return { input, output, total: input + output };
}

export interface ModelUsage {
  input: number;
  output: number;
  total: number;
  tokens: TokenCounts;
}

/** The seeds' cost object: total USD, tokens, and per-model costs. */
export interface RunCost {
  total: number;
  tokens: TokenCounts;
  models: Record<string, ModelUsage>;
}

/** Sums the model usage of `spans` and their children (loop/parallel iterations, child workflows). */
export function costOfSpans(spans: readonly BlockSpan[], basePriceUsd: number): RunCost {
  const cost: RunCost = { total: basePriceUsd, tokens: { prompt: 0, completion: 0, total: 0 }, models: {} };
  const visit = (span: BlockSpan) => {
    if (span.model !== undefined && span.tokens !== undefined) {
      const spanCost = span.cost ?? { input: 0, output: 0, total: 0 };
      const usage = cost.models[span.model] ?? {
        input: 0,
        output: 0,
        total: 0,
        tokens: { prompt: 0, completion: 0, total: 0 },
      };
      cost.models[span.model] = usage;
      usage.input += spanCost.input;
      usage.output += spanCost.output;
      usage.total += spanCost.total;
      addTokens(usage.tokens, span.tokens);
      addTokens(cost.tokens, span.tokens);
      cost.total += spanCost.total;
    }
    for (const child of span.children ?? []) visit(child);
  };
  for (const span of spans) visit(span);
  return cost;
}

function addTokens(into: TokenCounts, tokens: TokenCounts): void {
  into.prompt += tokens.prompt;
  into.completion += tokens.completion;
  into.total += tokens.total;
}
