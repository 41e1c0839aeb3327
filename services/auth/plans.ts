import { env, type Setting } from "../platform/config.js";
import type { PlanName } from "./store.js";

/** A token bucket's shape: refilled at `perMinute` per minute, holding at most `burst`. */
export interface BucketSpec {
  perMinute: number;
  burst: number;
}

export interface PlanLimits {
  /** API calls (X-RateLimit-* headers). */
  api: BucketSpec;
  /** Workflow-execution buckets (body `limits.workflowExecutionRateLimit`). */
  sync: BucketSpec;
  async: BucketSpec;
  /** USD per billing period. */
  usageLimitUsd: number;
}

export type PlanTable = Record<PlanName, PlanLimits>;

const PLAN_NAMES: PlanName[] = ["free", "pro", "team", "enterprise"];

// API calls: DESIGN §5 (seed 002). Execution buckets: Pro as in seed 002, the others scaled alike.
const DEFAULTS: Record<PlanName, { api: string; sync: string; async: string; usage: number }> = {
  free: { api: "10/20", sync: "10/20", async: "50/100", usage: 5 },
  pro: { api: "30/60", sync: "60/120", async: "200/400", usage: 10 },
  team: { api: "60/120", sync: "120/240", async: "500/1000", usage: 100 },
  enterprise: { api: "120/240", sync: "300/600", async: "1000/2000", usage: 1000 },
};

const BUCKET_PATTERN = /^[1-9]\d{0,6}\/[1-9]\d{0,6}$/;

function bucketSetting(plan: PlanName, kind: "api" | "sync" | "async"): Setting<string> {
  const what = kind === "api" ? "API calls" : `${kind} workflow executions`;
  return env.pattern(
    `AUTH_PLAN_${plan.toUpperCase()}_${kind.toUpperCase()}`,
    `${what} of the ${plan} plan as <per minute>/<burst>`,
    BUCKET_PATTERN,
    DEFAULTS[plan][kind],
  );
}

/** Settings AUTH_PLAN_<PLAN>_{API,SYNC,ASYNC} and AUTH_PLAN_<PLAN>_USAGE_LIMIT_USD. */
export const planSettings = Object.fromEntries(
  PLAN_NAMES.flatMap((plan) => [
    [`${plan}Api`, bucketSetting(plan, "api")],
    [`${plan}Sync`, bucketSetting(plan, "sync")],
    [`${plan}Async`, bucketSetting(plan, "async")],
    [
      `${plan}UsageLimitUsd`,
      env.number(
        `AUTH_PLAN_${plan.toUpperCase()}_USAGE_LIMIT_USD`,
        `usage limit of the ${plan} plan per billing period, USD`,
        { default: DEFAULTS[plan].usage, min: 0 },
      ),
    ],
  ]),
) as Record<`${PlanName}${"Api" | "Sync" | "Async"}`, Setting<string>> &
  Record<`${PlanName}UsageLimitUsd`, Setting<number>>;

function parseBucket(text: string): BucketSpec {
  const [perMinute, burst] = text.split("/").map(Number);
  return { perMinute: perMinute!, burst: burst! };
}

type PlanConfig = {
  [K in keyof typeof planSettings]: (typeof planSettings)[K] extends Setting<infer T> ? T : never;
};

export function planTable(config: PlanConfig): PlanTable {
  const table = {} as PlanTable;
  for (const plan of PLAN_NAMES) {
    table[plan] = {
      api: parseBucket(config[`${plan}Api`]),
      sync: parseBucket(config[`${plan}Sync`]),
      async: parseBucket(config[`${plan}Async`]),
      usageLimitUsd: config[`${plan}UsageLimitUsd`],
    };
  }
  return table;
}
