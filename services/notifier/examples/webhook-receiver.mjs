// Verifying Flowplane webhooks in Node (no dependencies). Use the raw body exactly as received:
// the signature covers those bytes, and the signed timestamp is what stops a replay.
import crypto from "node:crypto";
import http from "node:http";

// How old a delivery may be; a captured request replayed later is refused.
export const TOLERANCE_MS = 5 * 60 * 1000;

/**
 * `signature` is the `sim-signature` header: `t=<ms>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
 * True only for a correct signature whose signed timestamp is within TOLERANCE_MS of `now`.
 */
export function verifyWebhookSignature(body, signature, secret, now = Date.now()) {
  const parts = {};
  for (const part of String(signature ?? "").split(",")) {
    const i = part.indexOf("=");
    if (i > 0) parts[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  const timestamp = Number(parts.t);
  if (!/^\d{1,16}$/.test(parts.t ?? "") || !/^[0-9a-f]{64}$/.test(parts.v1 ?? "")) return false;
  // Not the sim-timestamp header: only the timestamp inside the signature cannot be changed.
  if (Math.abs(now - timestamp) > TOLERANCE_MS) return false;
  const expected = crypto.createHmac("sha256", secret).update(`${parts.t}.`).update(body).digest();
  // Constant-time: the time taken says nothing about how much of a forged signature was right.
  return crypto.timingSafeEqual(expected, Buffer.from(parts.v1, "hex"));
}

/** A minimal receiver: 401 unless signed and fresh, then the event parsed from the verified bytes. */
export function createReceiver(secret, onEvent) {
  return http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      if (!verifyWebhookSignature(body, req.headers["sim-signature"], secret)) {
        res.writeHead(401).end("invalid or expired signature");
        return;
      }
      // Retries repeat the Idempotency-Key: handle each key once.
      onEvent(JSON.parse(body.toString("utf8")), req.headers["idempotency-key"]);
      res.writeHead(200).end("ok");
    });
  });
}
