/** The fuzz and security suites' names for the shared in-process stack (test/helpers/stack.ts). */
import { type Answer, type Stack, sendTo, startStack as startSharedStack } from "../helpers/stack.js";

export type { Answer, Stack, Tenant } from "../helpers/stack.js";

/** All four services and the gateway; `extra` is the executor's environment over the defaults. */
export function startStack(extra: Record<string, string> = {}): Promise<Stack> {
  return startSharedStack({ env: { executor: extra }, tenant: false });
}

export const send = sendTo;

/** The fuzz invariant: success, or a 4xx carrying {"error": string}. Returns a reason when broken. */
export function invariantBreach(answer: Answer): string | undefined {
  if (answer.status >= 500) return `status ${answer.status}: ${answer.text.slice(0, 300)}`;
  if (answer.status >= 400) {
    if (answer.body === undefined || typeof answer.body.error !== "string") {
      return `status ${answer.status} without {"error"}: ${answer.text.slice(0, 300)}`;
    }
  }
  return undefined;
}
