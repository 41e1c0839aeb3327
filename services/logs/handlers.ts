import type { ServiceImpl } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { InvalidArgumentError, NotFoundError } from "../platform/errors.js";
import { Details, type LogsService, Order } from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import { decodeLogCursor } from "./cursor.js";
import { getLog, queryLogs } from "./query.js";
import type { Database } from "./store.js";

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;
const MAX_WORKFLOW_IDS = 1000;

export function logsHandlers(db: Kysely<Database>): ServiceImpl<typeof LogsService> {
  return {
    async queryLogs(req) {
      if (req.tenantId === "") throw new InvalidArgumentError("tenant_id is required");
      const limit = req.limit === 0 ? DEFAULT_LIMIT : req.limit;
      if (limit < 1 || limit > MAX_LIMIT) {
        throw new InvalidArgumentError(`limit must be between 1 and ${MAX_LIMIT}`);
      }
      if (![Order.UNSPECIFIED, Order.DESC, Order.ASC].includes(req.order)) {
        throw new InvalidArgumentError("order must be asc or desc");
      }
      if (![Details.UNSPECIFIED, Details.BASIC, Details.FULL].includes(req.details)) {
        throw new InvalidArgumentError("details must be basic or full");
      }
      if (req.workflowIds.length > MAX_WORKFLOW_IDS) {
        throw new InvalidArgumentError(`workflow_ids accepts at most ${MAX_WORKFLOW_IDS} ids`);
      }
      if (req.workflowIds.some((id) => id === "")) {
        throw new InvalidArgumentError("workflow_ids must not contain an empty id");
      }
      let after: ReturnType<typeof decodeLogCursor>;
      if (req.cursor !== "") {
        after = decodeLogCursor(req.cursor);
        if (!after) throw new InvalidArgumentError("invalid cursor");
      }
      return queryLogs(db, {
        tenantId: req.tenantId,
        limit,
        ascending: req.order === Order.ASC,
        after,
        workflowIds: req.workflowIds,
        withWorkflow: req.details === Details.FULL,
        withFinalOutput: req.includeFinalOutput,
        withTraceSpans: req.includeTraceSpans,
      });
    },

    async getLog(req) {
      if (req.tenantId === "") throw new InvalidArgumentError("tenant_id is required");
      if (req.id === "") throw new InvalidArgumentError("id is required");
      const log = await getLog(db, req.tenantId, req.id);
      // Another tenant's log answers exactly like a missing one (DESIGN §5).
      if (!log) throw new NotFoundError(`log ${req.id} not found`);
      return { log };
    },
  };
}
