import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { OutboundRefusedError, OutboundTimeoutError } from "../platform/outbound.js";
import { outcomeOfHttpAnswer, outcomeOfHttpError, parseRetryAfter } from "./channels/outcome.js";
import { DEFAULT_RETRY_DELAYS_MS, MAX_ATTEMPTS, retryDelayMs } from "./deliveries.js";
import { serializeEvent } from "./payload.js";
import { devEncryptionKey, parseEncryptionKey, SecretBox } from "./secrets.js";

describe("retry schedule", () => {
  it("waits 5 s, 15 s, 1 min, 3 min between the 5 attempts, plus up to 10 % jitter", () => {
    const none = () => 0;
    const most = () => 0.999999;
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, DEFAULT_RETRY_DELAYS_MS, none))).toEqual([
      5_000, 15_000, 60_000, 180_000,
    ]);
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, DEFAULT_RETRY_DELAYS_MS, most))).toEqual([
      5_500, 16_500, 66_000, 198_000,
    ]);
    expect(retryDelayMs(1, DEFAULT_RETRY_DELAYS_MS, () => 0.5)).toBe(5_250);
    expect(MAX_ATTEMPTS).toBe(5);
    expect(retryDelayMs(5, DEFAULT_RETRY_DELAYS_MS, none)).toBeUndefined();
  });

  it("honours Retry-After within the schedule: longer waits up to the 10 min step, never shorter", () => {
    const none = () => 0;
    expect(retryDelayMs(1, DEFAULT_RETRY_DELAYS_MS, none, 30_000)).toBe(30_000);
    expect(retryDelayMs(1, DEFAULT_RETRY_DELAYS_MS, none, 1_000)).toBe(5_000);
    expect(retryDelayMs(2, DEFAULT_RETRY_DELAYS_MS, none, 3_600_000)).toBe(600_000);
    expect(retryDelayMs(5, DEFAULT_RETRY_DELAYS_MS, none, 1_000)).toBeUndefined();
  });

  it("reads Retry-After as seconds or an HTTP date", () => {
    const now = Date.UTC(2026, 0, 1, 0, 0, 0);
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter(new Date(now + 30_000).toUTCString(), now)).toBe(30_000);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});

describe("which answers are retried", () => {
  it.each([
    [200, "success"],
    [204, "success"],
    [301, "fail"],
    [400, "fail"],
    [401, "fail"],
    [404, "fail"],
    [410, "gone"],
    [429, "retry"],
    [500, "retry"],
    [502, "retry"],
    [503, "retry"],
  ])("HTTP %i → %s", (status, verdict) => {
    expect(outcomeOfHttpAnswer(status, "x".repeat(5000), {}, Date.now())).toMatchObject({
      verdict,
      statusCode: status,
      responseSnippet: "x".repeat(1024),
    });
  });

  it("takes Retry-After only from 429 and 503", () => {
    expect(outcomeOfHttpAnswer(429, "", { "retry-after": "7" }, 0).retryAfterMs).toBe(7000);
    expect(outcomeOfHttpAnswer(503, "", { "retry-after": "7" }, 0).retryAfterMs).toBe(7000);
    expect(outcomeOfHttpAnswer(500, "", { "retry-after": "7" }, 0).retryAfterMs).toBeUndefined();
  });

  it("retries network errors and timeouts, never refused targets", () => {
    expect(
      outcomeOfHttpError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })).verdict,
    ).toBe("retry");
    expect(outcomeOfHttpError(new OutboundTimeoutError(30_000))).toMatchObject({
      verdict: "retry",
      error: "request timed out after 30000 ms",
    });
    expect(outcomeOfHttpError(new OutboundRefusedError("loopback")).verdict).toBe("fail");
  });
});

describe("secrets at rest", () => {
  it("seals with AES-256-GCM bound to the subscription id", () => {
    const box = new SecretBox(randomBytes(32));
    const sealed = box.seal("whsec_abc", "sub_1");
    expect(sealed).not.toContain("whsec_abc");
    expect(sealed).not.toBe(box.seal("whsec_abc", "sub_1"));
    expect(box.open(sealed, "sub_1")).toBe("whsec_abc");
    expect(() => box.open(sealed, "sub_2")).toThrow();
    expect(() => new SecretBox(randomBytes(32)).open(sealed, "sub_1")).toThrow();
  });

  it("parses 32-byte keys as hex or base64 and refuses anything else", () => {
    const key = randomBytes(32);
    expect(parseEncryptionKey(key.toString("hex")).equals(key)).toBe(true);
    expect(parseEncryptionKey(key.toString("base64")).equals(key)).toBe(true);
    expect(() => parseEncryptionKey("short")).toThrow(/32 bytes/);
    expect(() => parseEncryptionKey(randomBytes(16).toString("hex"))).toThrow(/32 bytes/);
    expect(devEncryptionKey()).toHaveLength(32);
  });
});

describe("payload bytes", () => {
  it("are what JSON.stringify gives back after parsing (the seed's receiver re-serialises)", () => {
    const body = serializeEvent({
      id: "evt_1",
      type: "workflow.execution.completed",
      timestamp: 1735925767890,
      data: { a: 0.1 + 0.2, b: 'ünï\u2028cödé "q"', c: [1e21, -0, null], d: { "2": 1, x: { y: [] } } },
      links: { log: "/v1/logs?executionId=e", execution: "/v1/logs/executions/e" },
    });
    expect(JSON.stringify(JSON.parse(body))).toBe(body);
    expect(Object.keys(JSON.parse(body))).toEqual(["id", "type", "timestamp", "data", "links"]);
  });
});
