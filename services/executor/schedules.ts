/**
 * Cron schedules: each tick of a schedule starts one background run. Every executor replica checks
 * the schedules, and a tick fires on exactly one of them: the tick's row (schedule id, tick time) is
 * inserted with ON CONFLICT DO NOTHING in the same transaction as the queued execution, so the
 * replica whose insert wins queues the run and the others do nothing. The winner then consumes one
 * token of the tenant's async execution bucket at the auth service; a refused tick (rate limit,
 * insufficient credits, auth unreachable) is recorded as an execution with status error naming the
 * refusal, so it shows in the workflow's logs.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { Cron } from "croner";
import { InvalidArgumentError, NotFoundError } from "../platform/errors.js";
import { Trigger } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { type Schedule, ScheduleSchema } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import { publishStoredExecution } from "./completion.js";
import {
  type ExecuteCommand,
  type ExecutionDeps,
  prepareExecution,
  publishRunRequest,
  queuedExecutionRow,
  workflowInfo,
} from "./executions.js";
import { consumeAsyncExecution } from "./quota.js";
import type { ExecutorDb, ScheduleRow } from "./store.js";

const MAX_SCHEDULES_PER_WORKFLOW = 50;
// Ticks missed while no replica was polling (a pause, a restart) are not caught up beyond these.
const MAX_TICKS_PER_POLL = 10;
// Tick rows only guard against a second replica firing the same tick; a day later none will.
const TICK_RETENTION_MS = 24 * 60 * 60 * 1000;
const CLEANUP_EVERY_POLLS = 600;

function compileCron(cron: string, timezone: string): Cron {
  return new Cron(cron, { paused: true, timezone });
}

function checkTimezone(timezone: string): void {
  try {
    new Intl.DateTimeFormat("en", { timeZone: timezone });
  } catch {
    throw new InvalidArgumentError(`timezone ${JSON.stringify(timezone)} is not an IANA time zone`);
  }
}

export function scheduleMessage(row: ScheduleRow): Schedule {
  let next: Date | null = null;
  try {
    next = compileCron(row.cron, row.timezone).nextRun();
  } catch {
    next = null;
  }
  return create(ScheduleSchema, {
    id: row.id,
    workflowId: row.workflow_id,
    version: row.version,
    cron: row.cron,
    timezone: row.timezone,
    input: row.input,
    createdAt: timestampFromDate(row.created_at),
    nextRunAt: next ? timestampFromDate(next) : undefined,
  });
}

export async function createSchedule(
  deps: ExecutionDeps,
  req: {
    tenantId: string;
    workflowId: string;
    version: number;
    cron: string;
    timezone: string;
    input: JsonObject;
  },
): Promise<Schedule> {
  checkTimezone(req.timezone);
  try {
    compileCron(req.cron, req.timezone);
  } catch (err) {
    throw new InvalidArgumentError(
      `cron ${JSON.stringify(req.cron)} is not a valid cron expression: ${(err as Error).message}`,
    );
  }
  // The same checks a run gets (workflow, version, input), now rather than at every tick.
  await prepareExecution(deps, {
    tenantId: req.tenantId,
    workflowId: req.workflowId,
    version: req.version,
    input: req.input,
    conversationId: "",
    trigger: Trigger.SCHEDULE,
  });
  const count = await deps.db
    .selectFrom("schedules")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("tenant_id", "=", req.tenantId)
    .where("workflow_id", "=", req.workflowId)
    .executeTakeFirstOrThrow();
  if (Number(count.n) >= MAX_SCHEDULES_PER_WORKFLOW) {
    throw new InvalidArgumentError(`a workflow has at most ${MAX_SCHEDULES_PER_WORKFLOW} schedules`);
  }
  const row = await deps.db
    .insertInto("schedules")
    .values({
      id: newId("sched"),
      tenant_id: req.tenantId,
      workflow_id: req.workflowId,
      version: req.version,
      cron: req.cron,
      timezone: req.timezone,
      input: JSON.stringify(req.input),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return scheduleMessage(row);
}

async function workflowOfTenant(db: ExecutorDb, tenantId: string, workflowId: string): Promise<void> {
  const workflow = await db
    .selectFrom("workflows")
    .select("id")
    .where("tenant_id", "=", tenantId)
    .where("id", "=", workflowId)
    .executeTakeFirst();
  if (!workflow) throw new NotFoundError(`workflow ${workflowId} not found`);
}

export async function listSchedules(
  db: ExecutorDb,
  tenantId: string,
  workflowId: string,
): Promise<Schedule[]> {
  await workflowOfTenant(db, tenantId, workflowId);
  const rows = await db
    .selectFrom("schedules")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("workflow_id", "=", workflowId)
    .orderBy("id", "asc")
    .execute();
  return rows.map(scheduleMessage);
}

export async function deleteSchedule(
  db: ExecutorDb,
  req: { tenantId: string; workflowId: string; scheduleId: string },
): Promise<void> {
  const deleted = await db
    .deleteFrom("schedules")
    .where("tenant_id", "=", req.tenantId)
    .where("workflow_id", "=", req.workflowId)
    .where("id", "=", req.scheduleId)
    .executeTakeFirst();
  if (Number(deleted.numDeletedRows) === 0) throw new NotFoundError(`schedule ${req.scheduleId} not found`);
}

/** Polls the schedules and fires the ticks that fell due since the last poll. */
export class ScheduleTicker {
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private stopped = false;
  private lastPoll = new Date();
  private polls = 0;
  private readonly crons = new Map<string, { key: string; cron: Cron }>();

  constructor(
    private readonly deps: ExecutionDeps,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.polling = this.poll()
        .then(() => undefined)
        .catch((err: unknown) => this.deps.log.warn({ err }, "schedule poll failed"))
        .finally(() => {
          this.polling = undefined;
          this.schedule();
        });
    }, this.intervalMs);
  }

  private cronOf(row: ScheduleRow): Cron | undefined {
    const key = `${row.cron}\u0000${row.timezone}`;
    const cached = this.crons.get(row.id);
    if (cached?.key === key) return cached.cron;
    try {
      const cron = compileCron(row.cron, row.timezone);
      this.crons.set(row.id, { key, cron });
      return cron;
    } catch {
      return undefined;
    }
  }

  /** One pass: every tick in (last poll, now] of every schedule. */
  async poll(now = new Date()): Promise<number> {
    const since = this.lastPoll;
    this.lastPoll = now;
    if (++this.polls % CLEANUP_EVERY_POLLS === 0) {
      await this.deps.db
        .deleteFrom("schedule_ticks")
        .where("tick_at", "<", new Date(now.getTime() - TICK_RETENTION_MS))
        .execute();
    }
    const rows = await this.deps.db.selectFrom("schedules").selectAll().execute();
    let fired = 0;
    for (const row of rows) {
      const cron = this.cronOf(row);
      if (!cron) continue;
      let from = new Date(Math.max(since.getTime(), row.created_at.getTime()));
      for (let i = 0; i < MAX_TICKS_PER_POLL && !this.stopped; i++) {
        const tick = cron.nextRun(from);
        if (!tick || tick > now) break;
        if (await this.fire(row, tick)) fired++;
        from = tick;
      }
    }
    return fired;
  }

  /** Queues the run of one tick unless another replica already did; true when this one did. */
  private async fire(schedule: ScheduleRow, tickAt: Date): Promise<boolean> {
    const { deps } = this;
    const cmd: ExecuteCommand = {
      tenantId: schedule.tenant_id,
      workflowId: schedule.workflow_id,
      version: schedule.version,
      input: schedule.input,
      conversationId: "",
      trigger: Trigger.SCHEDULE,
    };
    let prepared: Awaited<ReturnType<typeof prepareExecution>>;
    try {
      prepared = await prepareExecution(deps, cmd);
    } catch (err) {
      deps.log.warn({ err, scheduleId: schedule.id }, "scheduled run not started");
      return false;
    }
    const row = queuedExecutionRow(prepared, cmd, newId("exec"));
    const won = await deps.db.transaction().execute(async (tx) => {
      const tick = await tx
        .insertInto("schedule_ticks")
        .values({ schedule_id: schedule.id, tick_at: tickAt, execution_id: row.id })
        .onConflict((oc) => oc.doNothing())
        .returning("execution_id")
        .executeTakeFirst();
      if (!tick) return false;
      await tx
        .insertInto("conversations")
        .values({
          id: prepared.conversationId,
          tenant_id: schedule.tenant_id,
          workflow_id: schedule.workflow_id,
          created_at: prepared.newConversation?.createdAt ?? new Date(),
        })
        .execute();
      await tx.insertInto("executions").values(row).execute();
      return true;
    });
    if (!won) return false;
    // Only the replica that won the tick consumes, so a tick costs one token whatever the replicas.
    let refusal: string | undefined;
    try {
      await consumeAsyncExecution(deps.auth, schedule.tenant_id);
    } catch (err) {
      refusal = `scheduled run refused: ${err instanceof ConnectError ? err.rawMessage : String(err)}`;
      deps.log.warn({ err, scheduleId: schedule.id, executionId: row.id }, "scheduled run refused");
    }
    if (refusal === undefined) {
      try {
        await publishRunRequest(deps, schedule.tenant_id, row.id, true);
        return true;
      } catch (err) {
        deps.log.warn({ err, scheduleId: schedule.id }, "scheduled run could not be queued");
        refusal = "the run queue was unavailable";
      }
    }
    // The tick is spent: record the refusal as the execution's outcome (published as usual), so it
    // shows in the workflow's logs.
    const failed = await deps.db
      .updateTable("executions")
      .set({ status: "error", error: refusal, ended_at: new Date() })
      .where("id", "=", row.id)
      .where("status", "=", "queued")
      .returningAll()
      .executeTakeFirst();
    if (failed) await publishStoredExecution(deps, failed, workflowInfo(prepared.workflow));
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.polling;
  }
}
