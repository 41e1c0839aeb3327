/** The engine's settings (environment variables), merged into the executor's settings. */
import { ConfigError, type ConfigOf, env } from "../../platform/config.js";
import { ModelPricesError, parseModelPrices } from "./cost.js";
import type { EngineSettings } from "./run.js";

export const engineSettingsSpec = {
  apiAllowPrivate: env.oneOf(
    "EXECUTOR_API_ALLOW_PRIVATE",
    "let api blocks reach loopback, private and link-local addresses (true only for local development)",
    ["true", "false"] as const,
    "false",
  ),
  apiTimeoutMs: env.int(
    "EXECUTOR_API_TIMEOUT_MS",
    "default and maximum duration of one api block request, ms",
    {
      default: 10_000,
      min: 1,
      max: 600_000,
    },
  ),
  llmBaseUrl: env.string(
    "EXECUTOR_LLM_BASE_URL",
    "OpenAI-compatible endpoint of agent blocks, e.g. https://api.openai.com/v1 (empty: agent blocks fail)",
    "",
  ),
  llmApiKey: env.string("EXECUTOR_LLM_API_KEY", "bearer token sent to EXECUTOR_LLM_BASE_URL", ""),
  llmTimeoutMs: env.int("EXECUTOR_LLM_TIMEOUT_MS", "longest one agent block's chat completion may take, ms", {
    default: 60_000,
    min: 1,
    max: 600_000,
  }),
  modelPrices: env.string(
    "EXECUTOR_MODEL_PRICES",
    'agent model prices, JSON {"<model>": {"inputPerMTokUsd": n, "outputPerMTokUsd": n}} (USD per million tokens)',
    "{}",
  ),
  agentHistoryTurns: env.int(
    "EXECUTOR_AGENT_HISTORY_TURNS",
    "earlier conversation turns an agent block sends as history",
    { default: 20, min: 0, max: 1_000 },
  ),
  waitMaxMs: env.int(
    "EXECUTOR_WAIT_MAX_MS",
    "longest a wait block waits (longer durations are clamped), ms",
    {
      default: 300_000,
      min: 0,
      max: 86_400_000,
    },
  ),
  loopMaxIterations: env.int(
    "EXECUTOR_LOOP_MAX_ITERATIONS",
    "most iterations of one loop or parallel block",
    { default: 1_000, min: 1, max: 1_000_000 },
  ),
  parallelConcurrency: env.int(
    "EXECUTOR_PARALLEL_CONCURRENCY",
    "default and maximum iterations of one parallel block running at once",
    { default: 10, min: 1, max: 1_000 },
  ),
  workflowMaxDepth: env.int("EXECUTOR_WORKFLOW_MAX_DEPTH", "deepest nesting of workflow blocks", {
    default: 5,
    min: 1,
    max: 50,
  }),
};

/** The engine's settings from the loaded config; ConfigError when EXECUTOR_MODEL_PRICES is malformed. */
export function readEngineSettings(config: ConfigOf<typeof engineSettingsSpec>): EngineSettings {
  let prices: EngineSettings["llm"]["prices"];
  try {
    prices = parseModelPrices(config.modelPrices);
  } catch (err) {
    if (err instanceof ModelPricesError) throw new ConfigError([`EXECUTOR_MODEL_PRICES ${err.message}`]);
    throw err;
  }
  return {
    api: { allowPrivate: config.apiAllowPrivate === "true", timeoutMs: config.apiTimeoutMs },
    llm: {
      baseUrl: config.llmBaseUrl,
      apiKey: config.llmApiKey,
      timeoutMs: config.llmTimeoutMs,
      prices,
      historyTurns: config.agentHistoryTurns,
    },
    maxWaitMs: config.waitMaxMs,
    maxIterations: config.loopMaxIterations,
    parallelConcurrency: config.parallelConcurrency,
    maxWorkflowDepth: config.workflowMaxDepth,
  };
}
