import { OutboundRefusedError, OutboundTimeoutError } from "../../platform/outbound.js";

/** What one delivery attempt came to, whatever the channel. */
export interface AttemptOutcome {
  /** success: done; retry: worth another attempt; fail: never; gone: the endpoint asked to stop (410). */
  verdict: "success" | "retry" | "fail" | "gone";
  /** HTTP status or SMTP reply code; 0 when no answer arrived. */
  statusCode: number;
  responseSnippet: string;
  error: string;
  /** From a Retry-After header on 429/503. */
  retryAfterMs?: number;
}

export const SNIPPET_CHARS = 1024;

/** Retry-After as seconds or an HTTP date, in ms from `nowMs`; undefined when absent or unusable. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** Seed 002: only 5xx and 429 (and no answer at all) are retried; 410 disables the subscription. */
export function outcomeOfHttpAnswer(
  status: number,
  body: string,
  headers: Record<string, string>,
  nowMs: number,
): AttemptOutcome {
  const snippet = body.slice(0, SNIPPET_CHARS);
  if (status >= 200 && status < 300)
    return { verdict: "success", statusCode: status, responseSnippet: snippet, error: "" };
  if (status === 410)
    return {
      verdict: "gone",
      statusCode: status,
      responseSnippet: snippet,
      error: "endpoint answered 410 Gone",
    };
  if (status === 429 || status >= 500) {
    const retryAfterMs =
      status === 429 || status === 503 ? parseRetryAfter(headers["retry-after"], nowMs) : undefined;
    return { verdict: "retry", statusCode: status, responseSnippet: snippet, error: "", retryAfterMs };
  }
  const error =
    status >= 300 && status < 400 ? `redirect (${status}) not followed` : `endpoint answered ${status}`;
  return { verdict: "fail", statusCode: status, responseSnippet: snippet, error };
}

/** A request that got no answer: refused targets never retry, network errors and timeouts do. */
export function outcomeOfHttpError(err: unknown): AttemptOutcome {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof OutboundRefusedError) {
    return { verdict: "fail", statusCode: 0, responseSnippet: "", error: `refused: ${message}` };
  }
  const code = (err as { code?: unknown } | null)?.code;
  const error =
    err instanceof OutboundTimeoutError
      ? message
      : typeof code === "string"
        ? `${code}: ${message}`
        : message;
  return { verdict: "retry", statusCode: 0, responseSnippet: "", error };
}
