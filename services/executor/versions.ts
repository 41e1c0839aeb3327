import { fromJson } from "@bufbuild/protobuf";
import { WorkflowStateSchema } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { type CompiledWorkflow, compileWorkflow } from "./engine/definition.js";
import { type ExecutorDb, findVersionState } from "./store.js";

/**
 * Compiled workflow versions, least recently used evicted. Versions are immutable, so an entry
 * never goes stale; the key carries the tenant so a lookup can only ever hit the caller's own.
 */
export class CompiledVersions {
  private readonly entries = new Map<string, CompiledWorkflow>();

  constructor(private readonly maxEntries = 1_000) {}

  remember(tenantId: string, workflowId: string, version: number, compiled: CompiledWorkflow): void {
    const key = `${tenantId}/${workflowId}/${version}`;
    this.entries.delete(key);
    this.entries.set(key, compiled);
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  /** The compiled version, or undefined when the tenant has no such workflow version. */
  async load(
    db: ExecutorDb,
    tenantId: string,
    workflowId: string,
    version: number,
  ): Promise<CompiledWorkflow | undefined> {
    const key = `${tenantId}/${workflowId}/${version}`;
    const cached = this.entries.get(key);
    if (cached) {
      this.entries.delete(key);
      this.entries.set(key, cached);
      return cached;
    }
    const state = await findVersionState(db, tenantId, workflowId, version);
    if (state === undefined) return undefined;
    const compiled = compileWorkflow(fromJson(WorkflowStateSchema, state, { ignoreUnknownFields: true }));
    this.remember(tenantId, workflowId, version, compiled);
    return compiled;
  }
}
