import { type Kysely, sql } from "kysely";
import type { Database } from "./store.js";

/**
 * Bulk-loads `count` synthetic logs for one tenant in one SQL statement (for the logs benchmark and
 * the query-plan tests): one per `stepMs` from `from`, 20 workflows, every 10th an error, triggers
 * round-robin, durations 0..9999 ms, costs 0..0.0999 USD, a model on every other log.
 */
export async function loadSyntheticLogs(
  db: Kysely<Database>,
  opts: { tenantId: string; count: number; from: Date; stepMs: number },
): Promise<void> {
  await sql`
    insert into execution_logs (
      id, tenant_id, execution_id, workflow_id, workflow_version, workflow_name, workflow_description,
      folder_id, conversation_id, level, trigger, status, started_at, ended_at, total_duration_ms,
      cost_total, cost, models, trace_spans)
    select
      'log_' || md5(${opts.tenantId} || ':' || g),
      ${opts.tenantId},
      'exec_' || md5(${opts.tenantId} || ':' || g),
      'wf_' || (g % 20),
      1,
      'Synthetic',
      '',
      case when g % 3 = 0 then 'fld_a' else '' end,
      '',
      case when g % 10 = 0 then 'error' else 'info' end,
      (array['api','webhook','schedule','manual','chat'])[1 + g % 5],
      case when g % 10 = 0 then 'error' else 'success' end,
      ${opts.from}::timestamptz + (g * ${opts.stepMs}) * interval '1 millisecond',
      ${opts.from}::timestamptz + (g * ${opts.stepMs} + g % 10000) * interval '1 millisecond',
      g % 10000,
      (g % 1000) / 10000.0,
      jsonb_build_object('total', (g % 1000) / 10000.0),
      case when g % 2 = 0 then array['gpt-4o'] else array[]::text[] end,
      '[]'::jsonb
    from generate_series(1, ${opts.count}) as g`.execute(db);
  await sql`analyze execution_logs`.execute(db);
}
