import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { Kysely, PostgresDialect, type PostgresPool, type PostgresPoolClient, sql } from "kysely";
import { FileMigrationProvider, Migrator } from "kysely/migration";
import pg from "pg";

// int8 (counts, ms) as numbers and numeric (USD) as numbers: values stay far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number.parseInt(v, 10));
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (v) => Number.parseFloat(v));

const parseTimestamptzSlowly = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ, "text") as (
  v: string,
) => unknown;

/** The value of the `count` ASCII digits at `at`, or -1 when one of them is not a digit. */
function digitsAt(v: string, at: number, count: number): number {
  let n = 0;
  for (let i = at; i < at + count; i++) {
    const d = v.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/**
 * timestamptz → Date, the same Date pg's own parser (postgres-date) returns, without its regular
 * expressions: they were the largest single cost of decoding a page of logs (two timestamps a row).
 * Handles what PostgreSQL prints with DateStyle ISO, `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM]`, for
 * years 100–9999; anything else (BC, infinity, other offsets or styles) goes to pg's parser.
 */
export function parseTimestamptz(v: string): unknown {
  const n = v.length;
  // The offset: ±HH (n - 3) or ±HH:MM (n - 6).
  let zone = n - 3;
  let sign = v.charCodeAt(zone);
  if (sign !== 43 && sign !== 45) {
    zone = n - 6;
    sign = v.charCodeAt(zone);
    if ((sign !== 43 && sign !== 45) || v.charCodeAt(n - 3) !== 58) return parseTimestamptzSlowly(v);
  }
  if (
    zone < 19 ||
    v.charCodeAt(4) !== 45 ||
    v.charCodeAt(7) !== 45 ||
    v.charCodeAt(10) !== 32 ||
    v.charCodeAt(13) !== 58 ||
    v.charCodeAt(16) !== 58
  ) {
    return parseTimestamptzSlowly(v);
  }
  const year = digitsAt(v, 0, 4);
  const month = digitsAt(v, 5, 2);
  const day = digitsAt(v, 8, 2);
  const hour = digitsAt(v, 11, 2);
  const minute = digitsAt(v, 14, 2);
  const second = digitsAt(v, 17, 2);
  const zoneHours = digitsAt(v, zone + 1, 2);
  const zoneMinutes = zone === n - 3 ? 0 : digitsAt(v, n - 2, 2);
  let ms = 0;
  if (zone > 19) {
    // Same arithmetic as postgres-date (1000 × the fraction; Date.UTC truncates), so the same Date.
    if (v.charCodeAt(19) !== 46 || zone === 20 || digitsAt(v, 20, zone - 20) < 0) {
      return parseTimestamptzSlowly(v);
    }
    ms = 1000 * Number.parseFloat(v.slice(19, zone));
  }
  if (
    year < 100 ||
    month < 0 ||
    day < 0 ||
    hour < 0 ||
    minute < 0 ||
    second < 0 ||
    zoneHours < 0 ||
    zoneMinutes < 0
  ) {
    return parseTimestamptzSlowly(v);
  }
  const offsetMs = (sign === 45 ? -1 : 1) * (zoneHours * 3600 + zoneMinutes * 60) * 1000;
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second, ms) - offsetMs);
}
pg.types.setTypeParser(pg.types.builtins.TIMESTAMPTZ, parseTimestamptz);

export interface DatabaseOptions {
  url: string;
  /** The service's own schema; unqualified table names resolve to it. */
  schema: string;
  maxConnections?: number;
}

const poolsOfDatabases = new WeakMap<object, pg.Pool>();

/** The pg pool behind a database made by createDatabase (for pool metrics). */
export function poolOf(db: object): pg.Pool | undefined {
  return poolsOfDatabases.get(db);
}

/**
 * Marks a hot query (`.modifyEnd(sql.raw(PREPARED_QUERY))`) to run as a named prepared statement: the
 * connection plans it once instead of on every call. Planning a keyset page costs more than running
 * it (about 0.4 ms against 0.2 ms at depth), so the logs pages use it.
 */
export const PREPARED_QUERY = "/* fp:prepared */";

const statementNames = new Map<string, string>();

function statementNameOf(text: string): string {
  let name = statementNames.get(text);
  if (name === undefined) {
    name = `fp_${createHash("sha256").update(text).digest("hex").slice(0, 24)}`;
    // Filter combinations give a bounded but open set of texts; forget them all rather than grow.
    if (statementNames.size >= 1000) statementNames.clear();
    statementNames.set(text, name);
  }
  return name;
}

/** The pool kysely sees: marked queries become named statements (pg prepares each once per connection). */
function preparingPool(pool: pg.Pool): PostgresPool {
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect();
      // pg's callback form under our own promise. Measured on a 100-row page: with pg's promise
      // form young-generation GCs cost 0.2–0.3 ms of CPU per query (more than decoding the rows:
      // far more of each result survives a scavenge); with this form 0.02–0.04 ms.
      const query = (text: string, values: unknown[]) =>
        new Promise<pg.QueryResult>((resolve, reject) => {
          const done = (err: Error | null, result: pg.QueryResult) => (err ? reject(err) : resolve(result));
          if (text.includes(PREPARED_QUERY))
            client.query({ name: statementNameOf(text), text, values }, done);
          else client.query(text, values, done);
        });
      // processID lets kysely cancel a running query from a control connection.
      return {
        query,
        release: () => client.release(),
        processID: (client as unknown as { processID?: number }).processID,
      } as unknown as PostgresPoolClient;
    },
    end: () => pool.end(),
    Client: (pool as unknown as Pick<PostgresPool, "Client">).Client,
    options: pool.options,
  };
}

export function createDatabase<DB>(opts: DatabaseOptions): Kysely<DB> {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.maxConnections ?? 10,
    options: `-c search_path=${opts.schema}`,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client losing its connection must not crash the process; the next query reports it.
  pool.on("error", () => {});
  // Nor a checked-out one: pg emits 'error' on it as well as failing its query, and a checked-out
  // client has no listener of the pool's (a connection cut while a query runs crashed the process).
  pool.on("connect", (client) => client.on("error", () => {}));
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: preparingPool(pool) }) });
  poolsOfDatabases.set(db, pool);
  return db;
}

/**
 * Creates the schema and applies the service's migrations, under an advisory lock so replicas
 * starting together migrate once. `folder` must be absolute.
 */
export async function migrateToLatest(
  db: Kysely<unknown>,
  schema: string,
  folder: string,
): Promise<string[]> {
  await sql`create schema if not exists ${sql.id(schema)}`.execute(db);
  const migrator = new Migrator({
    db,
    provider: new FileMigrationProvider({ fs, path, migrationFolder: folder }),
    migrationTableSchema: schema,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}

/** Cheap liveness probe of the pool. */
export async function pingDatabase(db: Kysely<unknown>): Promise<void> {
  await sql`select 1`.execute(db);
}
