/**
 * The typed REST client: openapi-fetch over the types generated from the gateway's OpenAPI document
 * (schema.ts, written by generate.ts). Paths, parameters, bodies and answers are checked by tsc.
 *
 *   const fp = createFlowplaneClient({ baseUrl: "http://127.0.0.1:8080", apiKey });
 *   const { data, error, response } = await fp.POST("/api/executeWorkflow", { body: { workflowId } });
 */
import createClient, { type Client } from "openapi-fetch";
import type { paths } from "./schema.js";

export type { components, paths } from "./schema.js";

export type FlowplaneClient = Client<paths>;

export interface FlowplaneClientOptions {
  /** The gateway, e.g. http://127.0.0.1:8080 (no trailing path). */
  baseUrl: string;
  /** Sent as x-api-key on every request; omit for the routes that need none. */
  apiKey?: string;
  /** Replaces globalThis.fetch (tests, proxies). */
  fetch?: (input: Request) => Promise<Response>;
  /** Extra headers on every request, e.g. x-flowplane-trigger. */
  headers?: Record<string, string>;
}

export function createFlowplaneClient(options: FlowplaneClientOptions): FlowplaneClient {
  return createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    headers: { ...options.headers, ...(options.apiKey !== undefined ? { "x-api-key": options.apiKey } : {}) },
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}

/** The JSON body of a successful answer of route PATH and METHOD. */
export type ResponseOf<
  P extends keyof paths,
  M extends keyof paths[P],
  S extends number = 200,
> = paths[P][M] extends { responses: infer R }
  ? S extends keyof R
    ? R[S] extends { content: { "application/json": infer B } }
      ? B
      : never
    : never
  : never;
