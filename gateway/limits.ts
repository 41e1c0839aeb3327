import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { FastifyRequest } from "fastify";
import type { ExecutionRateLimit, Limits } from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { limitsOf } from "./auth.js";

function executionBucketJson(bucket: ExecutionRateLimit | undefined) {
  if (!bucket) return null;
  return {
    requestsPerMinute: bucket.requestsPerMinute,
    maxBurst: bucket.maxBurst,
    remaining: bucket.remaining,
    resetAt: bucket.resetAt ? timestampDate(bucket.resetAt).toISOString() : null,
  };
}

/** The seed's `limits` block: workflow-execution buckets and billing-period usage. */
export function limitsJson(limits: Limits | undefined) {
  const buckets = limits?.workflowExecutionRateLimit;
  const usage = limits?.usage;
  return {
    workflowExecutionRateLimit: {
      sync: executionBucketJson(buckets?.sync),
      async: executionBucketJson(buckets?.async),
    },
    usage: usage
      ? {
          currentPeriodCost: usage.currentPeriodCost,
          limit: usage.limit,
          plan: usage.plan,
          isExceeded: usage.isExceeded,
        }
      : null,
  };
}

/** The `limits` block of this request, from its Authorize call (requireScope with includeLimits). */
export function limitsBlock(request: FastifyRequest) {
  return limitsJson(limitsOf(request));
}
