import { createRequire } from "node:module";
import { type Kysely, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../test/helpers/infra.js";
import { createDatabase, parseTimestamptz } from "../platform/db.js";

// pg's own timestamptz parser, which db.ts replaces for every service: the replacement must give
// the very same value for every text PostgreSQL prints.
const postgresDate = createRequire(import.meta.url)("postgres-date") as (v: string) => unknown;

/** Same Date instant (NaN included), or the same non-Date value (±Infinity, null). */
function same(a: unknown, b: unknown): boolean {
  if (a instanceof Date && b instanceof Date) return Object.is(a.getTime(), b.getTime());
  return Object.is(a, b);
}

let db: TestDatabase;
let store: Kysely<unknown>;

beforeAll(async () => {
  db = await createTestDatabase();
  store = createDatabase<unknown>({ url: db.url, schema: "public" });
});

afterAll(async () => {
  await store?.destroy();
  await db?.drop();
});

describe("timestamptz decoding", () => {
  it("gives postgres-date's value for fast-path texts and for the ones it hands back", () => {
    const texts = [
      "2026-11-23 19:11:13+00",
      "2026-11-23 19:11:13.1+00",
      "2026-11-23 19:11:13.123+00",
      "2026-11-23 19:11:13.123456+00",
      "2026-11-23 19:11:13.999999+00",
      "2026-11-23 19:11:13.005+05:30",
      "2026-03-29 01:59:59.5-03:30",
      "1970-01-01 00:00:00-12",
      "0100-02-29 00:00:00+00",
      "9999-12-31 23:59:59.999999+14",
      // Handed to pg's parser: offsets with seconds, years below 100 or past 9999, BC, infinity.
      "1900-01-01 00:00:00+00:19:32",
      "0050-06-01 12:00:00+00",
      "12345-01-01 00:00:00+00",
      "4713-11-24 00:00:00+00 BC",
      "infinity",
      "-infinity",
      "2026-11-23T19:11:13Z",
      "2026-11-23 19:11:13.+00",
      "2026-11-23 19:1x:13+00",
    ];
    for (const text of texts) expect(same(parseTimestamptz(text), postgresDate(text)), text).toBe(true);
  });

  it("decodes what PostgreSQL prints in any session time zone to the same instant pg's parser does", async () => {
    const zones = ["UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Amsterdam", "Pacific/Kiritimati"];
    for (const zone of zones) {
      const rows = await store.transaction().execute(async (tx) => {
        await sql`select set_config('timezone', ${zone}, true)`.execute(tx);
        // 1890–2100 in uneven steps with microseconds: DST changes, historic offsets with seconds.
        const { rows } = await sql<{ at: unknown; text: string; ms: number }>`
          select t as at, t::text as text, floor(extract(epoch from t) * 1000)::float8 as ms
          from (select timestamptz '1890-01-01 00:00:00.000001+00'
                         + g * interval '37 days 1 hour 1 minute 1.234567 second' as t
                from generate_series(0, 2100) as g
                union all select 'infinity'::timestamptz
                union all select '-infinity'::timestamptz
                union all select '0044-03-15 12:00:00+00'::timestamptz
                union all select '0044-03-15 12:00:00+00 BC'::timestamptz) as s`.execute(tx);
        return rows;
      });
      expect(rows.length).toBe(2105);
      for (const row of rows) {
        expect(same(row.at, postgresDate(row.text)), `${zone} ${row.text}`).toBe(true);
        if (row.at instanceof Date && Number.isFinite(row.ms)) {
          expect(row.at.getTime(), `${zone} ${row.text}`).toBe(row.ms);
        }
      }
    }
  });
});
