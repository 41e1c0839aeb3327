import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { generateApiKey, hashApiKey, parseApiKey, visiblePrefix } from "./keys.js";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** Another base62 character than `c`, so the key keeps its shape and only the checksum can catch it. */
function otherChar(c: string): string {
  return BASE62[(BASE62.indexOf(c) + 1) % BASE62.length]!;
}

describe("API keys", () => {
  it("generates keys of the documented shape that parse back", () => {
    const seen = new Set<string>();
    for (const env of ["live", "test"] as const) {
      for (let i = 0; i < 200; i++) {
        const key = generateApiKey(env);
        expect(key).toMatch(new RegExp(`^fp_${env}_[0-9A-Za-z]{36}$`));
        expect(parseApiKey(key)).toEqual({ env, key });
        seen.add(key);
      }
    }
    expect(seen.size).toBe(400);
  });

  it("refuses a key with any single character of its random part or checksum changed", () => {
    for (let n = 0; n < 20; n++) {
      const key = generateApiKey("live");
      for (let i = "fp_live_".length; i < key.length; i++) {
        const changed = key.slice(0, i) + otherChar(key[i]!) + key.slice(i + 1);
        expect(parseApiKey(changed), `changed at ${i}: ${changed}`).toBeUndefined();
      }
    }
  });

  it("refuses a key whose env tag was swapped, since the checksum covers it", () => {
    const key = generateApiKey("live");
    expect(parseApiKey(key.replace(/^fp_live_/, "fp_test_"))).toBeUndefined();
  });

  it("refuses truncated, extended and padded keys", () => {
    const key = generateApiKey("test");
    for (let length = 0; length < key.length; length++) {
      expect(parseApiKey(key.slice(0, length))).toBeUndefined();
    }
    expect(parseApiKey(`${key}A`)).toBeUndefined();
    expect(parseApiKey(` ${key}`)).toBeUndefined();
    expect(parseApiKey(`${key}\n`)).toBeUndefined();
  });

  it("refuses a wrong prefix or environment", () => {
    const key = generateApiKey("live");
    const rest = key.slice("fp_live_".length);
    for (const prefix of ["fx_live_", "FP_live_", "fp_prod_", "fp_Live_", "fplive_", "sk_live_", ""]) {
      expect(parseApiKey(prefix + rest)).toBeUndefined();
    }
    expect(parseApiKey("fp_live_bogus")).toBeUndefined();
  });

  it("hashes with SHA-256 hex and shows only the first 12 characters", () => {
    const key = generateApiKey("live");
    expect(hashApiKey(key)).toBe(createHash("sha256").update(key).digest("hex"));
    expect(hashApiKey(key)).toMatch(/^[0-9a-f]{64}$/);
    expect(visiblePrefix(key)).toBe(key.slice(0, 12));
    expect(visiblePrefix(key)).toMatch(/^fp_live_[0-9A-Za-z]{4}$/);
  });
});
