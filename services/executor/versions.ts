import { fromJson } from "@bufbuild/protobuf";
import { type WorkflowState, WorkflowStateSchema } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { type CompiledWorkflow, compileWorkflow } from "./engine/definition.js";
import { type ExecutorDb, findVersionState, findWorkflow, type WorkflowRow } from "./store.js";

interface Entry {
  compiled: CompiledWorkflow;
  /** The definition as published, for the completion event's snapshot. */
  state: WorkflowState;
}

/**
 * Compiled workflow versions, least recently used evicted. Versions are immutable, so an entry
 * never goes stale; the key carries the tenant so a lookup can only ever hit the caller's own.
 */
export class CompiledVersions {
  private readonly entries = new Map<string, Entry>();
  /** Workflow rows by tenant/id: never deleted and never renamed, only their latest_version moves. */
  private readonly workflows = new Map<string, WorkflowRow>();

  constructor(private readonly maxEntries = 1_000) {}

  /**
   * The tenant's workflow, for running version `version` of it. A run of an explicit version needs
   * only the row's fixed fields (name, description, folder), so it comes from memory after the
   * first load (one statement less per run); a run of the latest version (0) reads the row, whose
   * latest_version another replica may have moved.
   */
  async workflow(
    db: ExecutorDb,
    tenantId: string,
    workflowId: string,
    version: number,
  ): Promise<WorkflowRow | undefined> {
    const key = `${tenantId}/${workflowId}`;
    if (version !== 0) {
      const cached = this.workflows.get(key);
      if (cached) return cached;
    }
    const row = await findWorkflow(db, tenantId, workflowId);
    if (row) {
      this.workflows.delete(key);
      this.workflows.set(key, row);
      if (this.workflows.size > this.maxEntries) this.workflows.delete(this.workflows.keys().next().value!);
    }
    return row;
  }

  remember(
    tenantId: string,
    workflowId: string,
    version: number,
    compiled: CompiledWorkflow,
    state: WorkflowState,
  ): void {
    const key = `${tenantId}/${workflowId}/${version}`;
    this.entries.delete(key);
    this.entries.set(key, { compiled, state });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  /** The definition of a version loaded or published by this process, if still cached. */
  cachedState(tenantId: string, workflowId: string, version: number): WorkflowState | undefined {
    return this.entries.get(`${tenantId}/${workflowId}/${version}`)?.state;
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
      return cached.compiled;
    }
    const json = await findVersionState(db, tenantId, workflowId, version);
    if (json === undefined) return undefined;
    const state = fromJson(WorkflowStateSchema, json, { ignoreUnknownFields: true });
    const compiled = compileWorkflow(state);
    this.remember(tenantId, workflowId, version, compiled, state);
    return compiled;
  }
}
