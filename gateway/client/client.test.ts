import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { generateSchema, openApiDocument } from "./generate.js";
import { createFlowplaneClient } from "./index.js";

describe("the typed REST client", () => {
  it("schema.ts is what the generator writes from the current routes (run `npx tsx gateway/client/generate.ts`)", async () => {
    const committed = await readFile(new URL("./schema.ts", import.meta.url), "utf8");
    const generated = await generateSchema();
    expect(generated).toBe(committed);
    // Deterministic: a second build of the gateway gives the same file.
    expect(await generateSchema()).toBe(generated);
  }, 30_000);

  it("covers every route of the document", async () => {
    const document = await openApiDocument();
    const schema = await readFile(new URL("./schema.ts", import.meta.url), "utf8");
    const routes = Object.keys(document.paths ?? {});
    expect(routes.length).toBeGreaterThan(20);
    for (const route of routes) expect(schema).toContain(`"${route}": {`);
  }, 30_000);

  it("sends the key, JSON body and path parameters, and splits data from error by status", async () => {
    const requests: Request[] = [];
    const answers = [
      Response.json({ data: { id: "tok_1", key: "fp_test_new" } }, { status: 200 }),
      Response.json({ error: "token not found", code: "not_found" }, { status: 404 }),
    ];
    const client = createFlowplaneClient({
      baseUrl: "http://gateway.test/",
      apiKey: "fp_test_key",
      headers: { "x-flowplane-trigger": "manual" },
      fetch: async (request) => {
        requests.push(request.clone());
        return answers.shift()!;
      },
    });
    const rotated = await client.POST("/api/v1/tokens/{id}/rotate", {
      params: { path: { id: "tok_1" } },
      body: { gracePeriodSeconds: 60 },
    });
    expect(rotated.data?.data.key).toBe("fp_test_new");
    expect(rotated.error).toBeUndefined();
    const missing = await client.GET("/api/v1/tokens/{id}", { params: { path: { id: "tok_2" } } });
    expect(missing.data).toBeUndefined();
    expect(missing.error).toEqual({ error: "token not found", code: "not_found" });
    expect(missing.response.status).toBe(404);

    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      "POST http://gateway.test/api/v1/tokens/tok_1/rotate",
      "GET http://gateway.test/api/v1/tokens/tok_2",
    ]);
    expect(requests[0]!.headers.get("x-api-key")).toBe("fp_test_key");
    expect(requests[0]!.headers.get("x-flowplane-trigger")).toBe("manual");
    expect(await requests[0]!.json()).toEqual({ gracePeriodSeconds: 60 });
  });
});
