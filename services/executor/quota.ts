/**
 * Execution rate limits and credits for runs no API key started (inbound hooks, schedules): the
 * gateway's Authorize consumes them for the execute routes, these runs ask the auth service here.
 */
import type { Client } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { UnavailableError } from "../platform/errors.js";
import { type AuthService, ExecutionBucket } from "../platform/gen/flowplane/auth/v1/auth_pb.js";

export type AuthClient = Client<typeof AuthService>;

/**
 * Consumes one async execution token of the tenant. Refusals come back as the auth service's
 * ConnectError (RESOURCE_EXHAUSTED with its RateLimitExceeded detail, FAILED_PRECONDITION
 * "insufficient credits"), so the gateway answers them like the execute routes; an unreachable auth
 * service refuses the run (fail closed, as the gateway's limiter does).
 */
export async function consumeAsyncExecution(auth: AuthClient, tenantId: string): Promise<void> {
  try {
    await auth.consumeExecution({ tenantId, bucket: ExecutionBucket.ASYNC });
  } catch (err) {
    if (
      err instanceof ConnectError &&
      (err.code === Code.ResourceExhausted || err.code === Code.FailedPrecondition)
    ) {
      throw err;
    }
    throw new UnavailableError("auth service unavailable; the run was not started");
  }
}
