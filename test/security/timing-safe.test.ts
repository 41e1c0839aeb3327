/**
 * Timing-safe comparisons (issue 9). Every place that checks a caller-supplied secret against ours:
 *
 * - log cursors: HMAC-SHA256 of the payload (services/logs/cursor.ts) → crypto.timingSafeEqual;
 * - inbound hook secrets: SHA-256 of the x-hook-secret header against the stored digest
 *   (services/executor/hooks.ts) → crypto.timingSafeEqual;
 * - API keys: looked up by the SHA-256 of the whole key (services/auth). The database compares
 *   digests, never the key, so timing can only reveal how much of a digest of the caller's own
 *   guess matched, which gives no information about a stored key (it would need a SHA-256 preimage);
 * - webhook signatures are checked by customers' receivers: the documented receiver
 *   (services/notifier/examples/webhook-receiver.mjs, tested in webhook-replay.test.ts) uses crypto.timingSafeEqual.
 *
 * The behaviour is tested (equal-length wrong values are refused, and the refusal went through
 * timingSafeEqual), plus a narrow source check that no `===`/`!==` sits on a MAC, digest or secret.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { generateApiKey } from "../../services/auth/keys.js";
import { CursorCodec, CursorError } from "../../services/logs/cursor.js";
import { type Stack, send, startStack, type Tenant } from "../fuzz/harness.js";

// Counts calls of crypto.timingSafeEqual made by the modules under test (they import it by name).
const calls = vi.hoisted(() => ({ timingSafeEqual: 0 }));
vi.mock("node:crypto", async (importOriginal) => {
  const original = await importOriginal<typeof import("node:crypto")>();
  const timingSafeEqual: typeof original.timingSafeEqual = (a, b) => {
    calls.timingSafeEqual++;
    return original.timingSafeEqual(a, b);
  };
  return { ...original, default: { ...original, timingSafeEqual }, timingSafeEqual };
});

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const source = (file: string) => readFile(`${ROOT}${file}`, "utf8");

/** Flips one character of a base64url or hex string without changing its length or alphabet. */
function flipLast(text: string): string {
  const last = text.at(-1)!;
  const replacement = last === "A" ? "B" : last === "0" ? "1" : /[0-9]/.test(last) ? "0" : "A";
  return text.slice(0, -1) + replacement;
}

/** Comparisons written with === or !== in `text` whose operands look like secrets, MACs or digests. */
function secretComparisons(text: string): string[] {
  const suspicious = /\b\w*(mac|signature|digest|secret|expected|given)\w*\b/i;
  return text
    .split("\n")
    .filter((line) => /[!=]==/.test(line) && !line.trim().startsWith("//") && !line.trim().startsWith("*"))
    .filter((line) =>
      line
        .split(/&&|\|\||\?|:|\(|\)/)
        .filter((part) => /[!=]==/.test(part))
        .some((part) => {
          const operands = part.split(/[!=]==/).map((s) => s.trim());
          // `.length`, `typeof`, empty-string and null checks say nothing about a secret's content.
          if (operands.some((op) => /^(""|''|null|undefined|\d+)$/.test(op) || op.startsWith("typeof"))) {
            return false;
          }
          return operands.some((op) => suspicious.test(op) && !op.endsWith(".length"));
        }),
    );
}

describe("log cursor MAC", () => {
  const codec = new CursorCodec("a-cursor-secret-for-tests");
  const cursor = codec.encode({
    startedAt: new Date("2026-01-01T00:00:00.000Z"),
    id: "log_01",
    seen: 0,
    order: "asc",
    query: "q",
  });

  it("accepts its own cursor", () => {
    expect(codec.decode(cursor).id).toBe("log_01");
  });

  it("refuses an equal-length wrong MAC, comparing in constant time", () => {
    const [payload, mac] = cursor.split(".") as [string, string];
    const forged = `${payload}.${flipLast(mac)}`;
    expect(forged.length).toBe(cursor.length);
    const before = calls.timingSafeEqual;
    expect(() => codec.decode(forged)).toThrow(CursorError);
    expect(calls.timingSafeEqual).toBeGreaterThan(before);
  });

  it("refuses a cursor signed with another secret and a truncated MAC", () => {
    const other = new CursorCodec("another-secret").encode(codec.decode(cursor));
    expect(() => codec.decode(other)).toThrow(CursorError);
    const [payload, mac] = cursor.split(".") as [string, string];
    expect(() => codec.decode(`${payload}.${mac.slice(0, -4)}`)).toThrow(CursorError);
  });

  it("has no === on the MAC in its source", async () => {
    const text = await source("services/logs/cursor.ts");
    expect(text).toMatch(/timingSafeEqual\(given, expected\)/);
    expect(secretComparisons(text)).toEqual([]);
  });
});

describe("inbound hook secret and API keys", () => {
  let stack: Stack;
  let tenant: Tenant;
  let hook: { id: string; secret: string };

  beforeAll(async () => {
    stack = await startStack();
    tenant = await stack.newTenant("timing");
    const workflow = await send(stack.baseUrl, "POST", "/api/v1/workflows", {
      key: tenant.adminKey,
      json: {
        name: "hooked",
        state: {
          blocks: {
            start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
            out: { id: "out", type: "output", name: "ok", config: { value: "true" } },
          },
          edges: [{ id: "e1", source: "start", target: "out" }],
        },
      },
    });
    expect(workflow.status).toBe(201);
    const created = await send(stack.baseUrl, "POST", `/api/v1/workflows/${workflow.body.id}/hooks`, {
      key: tenant.adminKey,
      json: {},
    });
    expect(created.status).toBe(201);
    hook = { id: created.body.id, secret: created.body.secret };
  }, 120_000);

  afterAll(async () => {
    await stack?.stop();
  }, 60_000);

  const trigger = (secret: string) =>
    send(stack.baseUrl, "POST", `/api/v1/hooks/${hook.id}`, {
      headers: { "x-hook-secret": secret },
      json: {},
    });

  it("refuses an equal-length wrong hook secret through timingSafeEqual, and lets the right one through", async () => {
    const before = calls.timingSafeEqual;
    const wrong = await trigger(flipLast(hook.secret));
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toBe("invalid hook secret");
    expect(calls.timingSafeEqual).toBeGreaterThan(before);
    expect((await trigger(hook.secret.slice(0, -1))).status).toBe(401);
    expect((await trigger(`${hook.secret}x`)).status).toBe(401);
    // The right secret passes the check. (The in-process harness gives its executor no AUTH_URL, so the
    // run's credit check then answers 503; what matters here is that the secret was accepted.)
    const right = await trigger(hook.secret);
    expect(right.status).not.toBe(401);
    expect([202, 503]).toContain(right.status);
  });

  it("refuses a well-formed API key that was never issued, and one differing in a single character", async () => {
    const never = await send(stack.baseUrl, "GET", "/api/v1/tokens", { key: generateApiKey("live") });
    expect(never.status).toBe(401);
    const altered = await send(stack.baseUrl, "GET", "/api/v1/tokens", { key: flipLast(tenant.adminKey) });
    expect(altered.status).toBe(401);
    expect((await send(stack.baseUrl, "GET", "/api/v1/tokens", { key: tenant.adminKey })).status).toBe(200);
  });

  it("compares hook secrets and API keys only as digests, never the secrets themselves", async () => {
    const hooks = await source("services/executor/hooks.ts");
    expect(hooks).toMatch(/timingSafeEqual\(sha256\(req\.secret\), expected\)/);
    expect(secretComparisons(hooks)).toEqual([]);
    const tokens = await source("services/auth/tokens.ts");
    // The key is hashed before any lookup or comparison; what is compared is that hash.
    expect(tokens).toMatch(/const hash = hashApiKey\(input\.apiKey\);/);
    const keyComparisons = tokens
      .split("\n")
      .filter((line) => /apiKey|secret/i.test(line) && /[!=]==/.test(line));
    for (const line of keyComparisons) expect(line).toMatch(/secret_hash [!=]== hash\b/);
  });
});
