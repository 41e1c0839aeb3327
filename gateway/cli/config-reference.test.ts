import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { renderConfigReference, withConfigReference } from "./config-reference.js";

describe("configuration reference", () => {
  it("lists every variable once with the processes that read it", () => {
    const table = renderConfigReference();
    expect(table).toMatch(/\| `DATABASE_URL` \| auth, executor, logs, notifier \| \(required\) \|/);
    expect(table).toMatch(/\| `GATEWAY_PORT` \| gateway \| `8080` \|/);
    const names = [...table.matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1]);
    expect(new Set(names).size).toBe(names.length);
  });

  it("is current in README.md (run `npm run docs:config` after changing a setting)", async () => {
    const readme = await readFile(new URL("../../README.md", import.meta.url), "utf8");
    expect(withConfigReference(readme)).toBe(readme);
  });
});
