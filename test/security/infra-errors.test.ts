/**
 * Regression (found by `npm run chaos`, PostgreSQL crash under load): a query on a pooled pg client
 * whose connection had just broken threw "Client has encountered a connection error and is not
 * queryable" (no SQLSTATE, no errno), which mapped to Internal, so the gateway answered 500 instead
 * of 503. Every error pg raises for a lost connection is Unavailable.
 */
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toConnectError } from "../../services/platform/errors.js";
import { createTestDatabase, type TestDatabase } from "../helpers/infra.js";

describe("errors of a lost PostgreSQL connection", () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  afterAll(async () => {
    await db?.drop();
  });

  /** Runs `query` on a client whose backend was terminated (as a crash does) and returns the errors. */
  async function errorsAfterTermination(): Promise<Error[]> {
    const client = new pg.Client({ connectionString: db.url });
    client.on("error", () => {}); // the asynchronous notice of the broken connection
    await client.connect();
    const pidRow = await client.query<{ pid: number }>("select pg_backend_pid() as pid");
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    await admin.query("select pg_terminate_backend($1)", [pidRow.rows[0]!.pid]);
    await admin.end();
    const errors: Error[] = [];
    for (let i = 0; i < 2; i++) {
      await client.query("select 1").catch((err: Error) => errors.push(err));
    }
    await client.end().catch(() => {});
    const closed = new pg.Client({ connectionString: db.url });
    await closed.connect();
    await closed.end();
    await closed.query("select 1").catch((err: Error) => errors.push(err));
    return errors;
  }

  it("maps every one of them to Unavailable, not Internal", async () => {
    const errors = await errorsAfterTermination();
    expect(errors.length).toBe(3);
    expect(errors.map((err) => err.message).join(" | ")).toMatch(/not queryable/);
    for (const err of errors)
      expect([err.message, Code[toConnectError(err).code]]).toEqual([err.message, "Unavailable"]);
  });

  it("names the exact message that escaped", () => {
    const err = new Error("Client has encountered a connection error and is not queryable");
    expect(toConnectError(err).code).toBe(Code.Unavailable);
    expect(toConnectError(new Error("Client was closed and is not queryable")).code).toBe(Code.Unavailable);
    expect(toConnectError(new Error("something else broke")).code).toBe(Code.Internal);
  });
});
