/**
 * The `api` block: one outbound HTTP request. `config.url` and each `config.headers` value are
 * `{{ … }}` templates; `config.body` is either a template string (sent as it renders) or a JSON
 * value whose strings are templates (sent as JSON, content-type application/json unless a header
 * says otherwise). `config.method` defaults to GET, `config.timeoutMs` to the engine's API timeout
 * (and is clamped to it). Requests go through safeFetch: private, loopback and link-local targets are
 * refused unless EXECUTOR_API_ALLOW_PRIVATE=true, redirects are not followed, at most 64 KiB of the
 * response is read. Output: `{status, headers, body}` with body parsed when the response is JSON;
 * a status ≥ 400 fails the block.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { OutboundRefusedError, OutboundTimeoutError, safeFetch } from "../../platform/outbound.js";
import { ExpressionError, type ExpressionVariables } from "./expressions.js";
import { abortMessage, BlockFailure, type BlockOutcome } from "./graph.js";
import { compileBlockTemplate, DefinitionProblem, describeBlock, isPlainObject } from "./problems.js";
import { type CompiledJsonTemplate, type CompiledTemplate, compileJsonTemplate } from "./templates.js";

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] as const;
type Method = (typeof METHODS)[number];

export interface ApiBlockConfig {
  url: CompiledTemplate;
  method: Method;
  headers: Array<[string, CompiledTemplate]>;
  body?: { kind: "text"; template: CompiledTemplate } | { kind: "json"; template: CompiledJsonTemplate };
  timeoutMs?: number;
}

export interface ApiSettings {
  allowPrivate: boolean;
  /** Default and maximum timeout of one request. */
  timeoutMs: number;
}

export function readApiConfig(block: Block): ApiBlockConfig {
  const where = describeBlock(block);
  const config = block.config ?? {};
  if (typeof config.url !== "string" || config.url.trim() === "") {
    throw new DefinitionProblem(`${where}: an api block needs config.url`);
  }
  const url = compileBlockTemplate(block, "config.url", config.url);
  const method = config.method === undefined || config.method === null ? "GET" : config.method;
  if (typeof method !== "string" || !(METHODS as readonly string[]).includes(method.toUpperCase())) {
    throw new DefinitionProblem(`${where}: config.method must be one of ${METHODS.join(", ")}`);
  }
  const headers: Array<[string, CompiledTemplate]> = [];
  if (config.headers !== undefined && config.headers !== null) {
    if (!isPlainObject(config.headers)) {
      throw new DefinitionProblem(`${where}: config.headers must be an object of header name → template`);
    }
    for (const [name, value] of Object.entries(config.headers)) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
        throw new DefinitionProblem(`${where}: ${JSON.stringify(name)} is not a valid header name`);
      }
      headers.push([name, compileBlockTemplate(block, `config.headers.${name}`, value)]);
    }
  }
  const out: ApiBlockConfig = { url, method: method.toUpperCase() as Method, headers };
  const body = config.body;
  if (typeof body === "string") {
    out.body = { kind: "text", template: compileBlockTemplate(block, "config.body", body) };
  } else if (body !== undefined && body !== null) {
    try {
      out.body = { kind: "json", template: compileJsonTemplate(body) };
    } catch (err) {
      if (err instanceof ExpressionError)
        throw new DefinitionProblem(`${where}: config.body: ${err.message}`);
      throw err;
    }
  }
  const timeoutMs = config.timeoutMs;
  if (timeoutMs !== undefined && timeoutMs !== null) {
    if (typeof timeoutMs !== "number" || !Number.isInteger(timeoutMs) || timeoutMs <= 0) {
      throw new DefinitionProblem(`${where}: config.timeoutMs must be a positive integer`);
    }
    out.timeoutMs = timeoutMs;
  }
  return out;
}

/** Throws ExpressionError when a template fails, BlockFailure when the request does. */
export async function runApiBlock(
  config: ApiBlockConfig,
  settings: ApiSettings,
  variables: ExpressionVariables,
  signal: AbortSignal | undefined,
): Promise<BlockOutcome> {
  const url = config.url.renderText(variables);
  const headers: Record<string, string> = {};
  for (const [name, template] of config.headers) headers[name] = template.renderText(variables);
  let body: string | undefined;
  let bodyValue: JsonValue | undefined;
  if (config.body?.kind === "text") {
    body = config.body.template.renderText(variables);
    bodyValue = body;
  } else if (config.body?.kind === "json") {
    bodyValue = config.body.template.render(variables);
    body = JSON.stringify(bodyValue);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
      headers["content-type"] = "application/json";
    }
  }
  const input: JsonObject = { method: config.method, url, headers };
  if (bodyValue !== undefined) input.body = bodyValue;
  const timeoutMs = Math.min(config.timeoutMs ?? settings.timeoutMs, settings.timeoutMs);

  let response: Awaited<ReturnType<typeof safeFetch>>;
  try {
    response = await safeFetch(url, {
      method: config.method,
      headers,
      body,
      timeoutMs,
      allowPrivate: settings.allowPrivate,
      signal,
    });
  } catch (err) {
    if (signal?.aborted) throw new BlockFailure(abortMessage(signal), input);
    if (err instanceof OutboundRefusedError || err instanceof OutboundTimeoutError) {
      throw new BlockFailure(err.message, input);
    }
    throw new BlockFailure(`request failed: ${err instanceof Error ? err.message : String(err)}`, input);
  }
  const output: JsonObject = {
    status: response.status,
    headers: response.headers,
    body: parseBody(response.headers["content-type"], response.body),
  };
  if (response.status >= 400) {
    const excerpt = response.body.slice(0, 200);
    throw new BlockFailure(`HTTP ${response.status} from ${new URL(url).host}: ${excerpt}`, input);
  }
  return { input, output };
}

function parseBody(contentType: string | undefined, text: string): JsonValue {
  if (contentType === undefined || !/^application\/([a-z0-9.+-]*\+)?json\b/i.test(contentType.trim()))
    return text;
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return text;
  }
}
