import { promises as fs } from "node:fs";
import path from "node:path";
import { Kysely, PostgresDialect, sql } from "kysely";
import { FileMigrationProvider, Migrator } from "kysely/migration";
import pg from "pg";

// int8 (counts, ms) as numbers and numeric (USD) as numbers: values stay far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number.parseInt(v, 10));
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (v) => Number.parseFloat(v));

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
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
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
