import { createHmac } from "node:crypto";
import { safeFetch } from "../../platform/outbound.js";
import { inSpan, SpanKind, traceHeaders } from "../../platform/telemetry.js";
import { type AttemptOutcome, outcomeOfHttpAnswer, outcomeOfHttpError } from "./outcome.js";

export interface WebhookTarget {
  url: string;
  secret: string | undefined;
  standardWebhooks: boolean;
}

export interface WebhookMessage {
  deliveryId: string;
  eventType: string;
  /** The exact bytes sent and signed. */
  body: string;
}

/** `t=<ms>,v1=<hex HMAC-SHA256(secret, "<ms>.<body>")>` (seed 002). */
export function simSignature(secret: string, timestampMs: number, body: string): string {
  const digest = createHmac("sha256", secret).update(`${timestampMs}.${body}`).digest("hex");
  return `t=${timestampMs},v1=${digest}`;
}

/** Standard Webhooks v1: base64 HMAC-SHA256 over "<id>.<seconds>.<body>" with the decoded whsec_ key. */
export function standardWebhookSignature(
  secret: string,
  id: string,
  timestampSeconds: number,
  body: string,
): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  return `v1,${createHmac("sha256", key).update(`${id}.${timestampSeconds}.${body}`).digest("base64")}`;
}

/** The headers of one attempt: identity headers are fixed per delivery, timestamp and signature per attempt. */
export function webhookHeaders(
  target: WebhookTarget,
  message: WebhookMessage,
  nowMs: number,
): Record<string, string> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "user-agent": "Flowplane-Webhooks/1.0",
    "sim-event": message.eventType,
    "sim-timestamp": String(nowMs),
    "sim-delivery-id": message.deliveryId,
    "idempotency-key": message.deliveryId,
  };
  if (target.secret) headers["sim-signature"] = simSignature(target.secret, nowMs, message.body);
  if (target.standardWebhooks && target.secret) {
    const seconds = Math.floor(nowMs / 1000);
    headers["webhook-id"] = message.deliveryId;
    headers["webhook-timestamp"] = String(seconds);
    headers["webhook-signature"] = standardWebhookSignature(
      target.secret,
      message.deliveryId,
      seconds,
      message.body,
    );
  }
  return headers;
}

/**
 * One attempt, in a client span whose `traceparent` goes with the request: the receiver sees the
 * trace of the REST call that caused the event.
 */
export async function sendWebhook(
  target: WebhookTarget,
  message: WebhookMessage,
  opts: { timeoutMs: number; allowPrivate: boolean; nowMs: number },
): Promise<AttemptOutcome> {
  return inSpan(
    "notifier",
    "webhook POST",
    {
      kind: SpanKind.CLIENT,
      attributes: { "http.request.method": "POST", "flowplane.delivery_id": message.deliveryId },
    },
    async (span) => {
      try {
        const answer = await safeFetch(target.url, {
          method: "POST",
          headers: { ...webhookHeaders(target, message, opts.nowMs), ...traceHeaders() },
          body: message.body,
          timeoutMs: opts.timeoutMs,
          allowPrivate: opts.allowPrivate,
        });
        span?.setAttribute("http.response.status_code", answer.status);
        return outcomeOfHttpAnswer(answer.status, answer.body, answer.headers, Date.now());
      } catch (err) {
        span?.setAttribute("error.type", err instanceof Error ? err.name : "error");
        return outcomeOfHttpError(err);
      }
    },
  );
}
