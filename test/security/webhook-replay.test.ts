/**
 * Webhook replay (issue 9): the documented Node receiver (services/notifier/examples/webhook-receiver.mjs, used as it
 * is, unchanged) refuses a correctly signed delivery whose signed timestamp is older than its
 * tolerance, even when the replayer refreshes the unsigned sim-timestamp header, and accepts a fresh
 * one. The seed's own snippet, by contrast, checks only the sim-timestamp header, which is not
 * signed: it accepts such a replay (kept here as the reason the documented receiver differs).
 */
import crypto from "node:crypto";
import type http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { simSignature } from "../../services/notifier/channels/webhook.js";

interface ReceiverModule {
  TOLERANCE_MS: number;
  verifyWebhookSignature(
    body: string | Buffer,
    signature: string | undefined,
    secret: string,
    now?: number,
  ): boolean;
  createReceiver(
    secret: string,
    onEvent: (event: unknown, idempotencyKey: string | undefined) => void,
  ): http.Server;
}

const RECEIVER_FILE = fileURLToPath(
  new URL("../../services/notifier/examples/webhook-receiver.mjs", import.meta.url),
);
const SECRET = "receiver-secret";
const body = JSON.stringify({
  id: "evt_1",
  type: "workflow.execution.completed",
  timestamp: 1,
  data: { executionId: "exec_1", status: "success" },
});

/** The seed's Node verifier and replay check (seed 002), as published. */
function seedVerifyWebhookSignature(rawBody: string, signature: string, secret: string) {
  const [timestampPart, signaturePart] = signature.split(",");
  const timestamp = timestampPart!.replace("t=", "");
  const expectedSignature = signaturePart!.replace("v1=", "");
  const signatureBase = `${timestamp}.${rawBody}`;
  const hmac = crypto.createHmac("sha256", secret);
  hmac.update(signatureBase);
  return hmac.digest("hex") === expectedSignature;
}
function seedAccepts(headers: Record<string, string>, rawBody: string): boolean {
  if (!seedVerifyWebhookSignature(rawBody, headers["sim-signature"]!, SECRET)) return false;
  const timestamp = Number.parseInt(headers["sim-timestamp"]!, 10);
  return !(timestamp < Date.now() - 5 * 60 * 1000);
}

describe("the documented webhook receiver", () => {
  let receiver: ReceiverModule;
  let server: http.Server;
  let url: string;
  const events: { event: unknown; key: string | undefined }[] = [];

  beforeAll(async () => {
    // A computed specifier: the example is plain JavaScript without type declarations.
    receiver = (await import(pathToFileURL(RECEIVER_FILE).href)) as ReceiverModule;
    server = receiver.createReceiver(SECRET, (event, key) => events.push({ event, key }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });

  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });

  /** What the notifier sends for one attempt at `atMs` (the same signing code). */
  const delivery = (atMs: number) => ({
    "content-type": "application/json",
    "sim-timestamp": String(atMs),
    "sim-signature": simSignature(SECRET, atMs, body),
    "idempotency-key": "dlv_1",
  });
  const post = (headers: Record<string, string>, payload = body) =>
    fetch(url, { method: "POST", headers, body: payload }).then((res) => res.status);

  it("accepts a fresh, correctly signed delivery", async () => {
    expect(await post(delivery(Date.now()))).toBe(200);
    expect(events.at(-1)).toEqual({ event: JSON.parse(body), key: "dlv_1" });
  });

  it("refuses the same signed delivery replayed after the tolerance, even with a fresh sim-timestamp", async () => {
    const captured = delivery(Date.now() - receiver.TOLERANCE_MS - 60_000);
    const accepted = events.length;
    expect(await post(captured)).toBe(401);
    expect(await post({ ...captured, "sim-timestamp": String(Date.now()) })).toBe(401);
    expect(events.length).toBe(accepted);
    // The seed's snippet trusts the unsigned header: this is the replay it lets through.
    expect(seedAccepts({ ...captured, "sim-timestamp": String(Date.now()) }, body)).toBe(true);
  });

  it("draws the line at the tolerance, using the signed timestamp", () => {
    const sentAt = 1_700_000_000_000;
    const signature = simSignature(SECRET, sentAt, body);
    const { TOLERANCE_MS, verifyWebhookSignature } = receiver;
    expect(verifyWebhookSignature(body, signature, SECRET, sentAt + TOLERANCE_MS)).toBe(true);
    expect(verifyWebhookSignature(body, signature, SECRET, sentAt + TOLERANCE_MS + 1)).toBe(false);
    expect(verifyWebhookSignature(Buffer.from(body), signature, SECRET, sentAt + 1_000)).toBe(true);
  });

  it("refuses a tampered body, a wrong secret, an equal-length wrong signature and malformed headers", async () => {
    const now = Date.now();
    const headers = delivery(now);
    const { verifyWebhookSignature } = receiver;
    expect(await post(headers, body.replace("success", "error__"))).toBe(401);
    expect(verifyWebhookSignature(body, simSignature("other", now, body), SECRET, now)).toBe(false);
    const signature = headers["sim-signature"];
    const last = signature.at(-1) === "0" ? "1" : "0";
    expect(verifyWebhookSignature(body, signature.slice(0, -1) + last, SECRET, now)).toBe(false);
    for (const bad of [undefined, "", "t=,v1=", `t=${now}`, `v1=${signature.split("v1=")[1]}`, "garbage"]) {
      expect(verifyWebhookSignature(body, bad, SECRET, now)).toBe(false);
    }
    expect(await post({ "content-type": "application/json" })).toBe(401);
  });
});
