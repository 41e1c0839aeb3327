import { describe, expect, it } from "vitest";
import { CursorCodec, CursorError, queryFingerprint } from "./cursor.js";

const codec = new CursorCodec("test-secret");
const position = {
  startedAt: new Date(Date.UTC(2030, 5, 7, 8, 9, 10, 11)),
  id: "log_01j0000000000000000000000a",
  seen: 42,
  order: "asc" as const,
  query: queryFingerprint({ workflowIds: ["wf_a"] }),
};

describe("log cursor", () => {
  it("round-trips a position and keeps the seed's {s, id} inside its payload", () => {
    const cursor = codec.encode(position);
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(codec.decode(cursor)).toEqual(position);
    const payload = JSON.parse(Buffer.from(cursor.split(".")[0] as string, "base64url").toString("utf8"));
    expect(payload).toMatchObject({ s: "2030-06-07T08:09:10.011Z", id: position.id });
  });

  it("refuses a cursor whose payload or mac was changed, or that another key signed", () => {
    const cursor = codec.encode(position);
    const [payload, mac] = cursor.split(".") as [string, string];
    const forged = Buffer.from(
      JSON.stringify({ s: "2030-06-07T08:09:10.011Z", id: "log_other", w: 42, o: "asc", q: position.query }),
    ).toString("base64url");
    for (const bad of [
      `${forged}.${mac}`,
      `${payload}.${mac.slice(0, -2)}AA`,
      payload,
      `${cursor}.x`,
      "",
      new CursorCodec("other-secret").encode(position),
      // seed 002's unsigned example
      "eyJzIjoiMjAyNS0wMS0wMVQxMjozNDo1Ni43ODlaIiwiaWQiOiJsb2dfYWJjMTIzIn0",
    ]) {
      expect(() => codec.decode(bad), bad).toThrow(CursorError);
    }
  });

  it("fingerprints filters regardless of list order and duplicates, and tells different filters apart", () => {
    expect(queryFingerprint({ workflowIds: ["b", "a", "a"], level: "" })).toBe(
      queryFingerprint({ level: "", workflowIds: ["a", "b"] }),
    );
    expect(queryFingerprint({ workflowIds: ["a"] })).not.toBe(queryFingerprint({ workflowIds: ["b"] }));
    expect(queryFingerprint({ startDate: new Date(0) })).not.toBe(
      queryFingerprint({ startDate: new Date(1) }),
    );
  });
});
