import { describe, expect, it } from "vitest";
import { decodeLogCursor, encodeLogCursor } from "./cursor.js";

// nextCursor from seed 002's QueryLogs response example.
const SEED_CURSOR = "eyJzIjoiMjAyNS0wMS0wMVQxMjozNDo1Ni43ODlaIiwiaWQiOiJsb2dfYWJjMTIzIn0";

describe("log cursor", () => {
  it("has exactly the shape of seed 002's example nextCursor", () => {
    expect(JSON.parse(Buffer.from(SEED_CURSOR, "base64url").toString("utf8"))).toEqual({
      s: "2025-01-01T12:34:56.789Z",
      id: "log_abc123",
    });
    const decoded = decodeLogCursor(SEED_CURSOR);
    expect(decoded?.startedAt.toISOString()).toBe("2025-01-01T12:34:56.789Z");
    expect(decoded?.id).toBe("log_abc123");
    // Encoding the same position gives back the seed's bytes: no padding, same key order.
    expect(encodeLogCursor({ startedAt: new Date("2025-01-01T12:34:56.789Z"), id: "log_abc123" })).toBe(
      SEED_CURSOR,
    );
  });

  it("round-trips a position", () => {
    const position = {
      startedAt: new Date(Date.UTC(2030, 5, 7, 8, 9, 10, 11)),
      id: "log_01j0000000000000000000000a",
    };
    const cursor = encodeLogCursor(position);
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeLogCursor(cursor)).toEqual(position);
  });

  it.each([
    ["empty-looking garbage", "!!!"],
    ["padding", `${SEED_CURSOR}=`],
    ["not JSON", Buffer.from("hello").toString("base64url")],
    ["JSON but not an object", Buffer.from("42").toString("base64url")],
    ["missing id", Buffer.from('{"s":"2025-01-01T12:34:56.789Z"}').toString("base64url")],
    ["empty id", Buffer.from('{"s":"2025-01-01T12:34:56.789Z","id":""}').toString("base64url")],
    ["id not a string", Buffer.from('{"s":"2025-01-01T12:34:56.789Z","id":7}').toString("base64url")],
    ["not a date", Buffer.from('{"s":"yesterday","id":"log_a"}').toString("base64url")],
    ["date without ms", Buffer.from('{"s":"2025-01-01T12:34:56Z","id":"log_a"}').toString("base64url")],
    [
      "date with offset",
      Buffer.from('{"s":"2025-01-01T12:34:56.789+01:00","id":"log_a"}').toString("base64url"),
    ],
    ["too long", "a".repeat(600)],
  ])("rejects %s", (_what, cursor) => {
    expect(decodeLogCursor(cursor)).toBeUndefined();
  });
});
