import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { httpStatusForCode } from "../services/platform/errors.js";

/**
 * The gateway's error answers (DESIGN §6): every error body is `{"error": "<message>", "code",
 * "requestId"}`, ConnectError codes become HTTP statuses through the one platform mapping, and an
 * unexpected exception is logged with its stack and answers 500 "internal error".
 */

/** A refusal the gateway itself decides (bad query parameter, missing key, workspace mismatch). */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly code: string = codeForStatus(statusCode),
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export function badRequest(message: string): HttpError {
  return new HttpError(400, message, "invalid_argument");
}

function codeForStatus(status: number): string {
  switch (status) {
    case 400:
      return "invalid_argument";
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 413:
      return "payload_too_large";
    case 415:
      return "unsupported_media_type";
    default:
      return status >= 500 ? "internal" : "invalid_argument";
  }
}

export interface ErrorBody {
  error: string;
  code: string;
  requestId: string;
}

interface ErrorAnswer {
  status: number;
  body: ErrorBody;
}

/** Validation problems of Ajv, as Fastify hands them to the schema error formatter. */
interface SchemaProblem {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

function fieldPath(dataVar: string, instancePath: string): string {
  const part = dataVar === "querystring" ? "query" : dataVar;
  const segments = instancePath
    .split("/")
    .slice(1)
    .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
  return [part, ...segments].join(".");
}

/** One readable sentence naming the field, e.g. "body.version must be integer". */
export function describeSchemaProblem(problem: SchemaProblem, dataVar: string): string {
  const path = fieldPath(dataVar, problem.instancePath);
  const { params } = problem;
  switch (problem.keyword) {
    case "required":
      return `${path}.${String(params.missingProperty)} is required`;
    case "additionalProperties":
      return `unknown field ${path}.${String(params.additionalProperty)}`;
    case "minLength":
      return params.limit === 1
        ? `${path} must not be empty`
        : `${path} must be at least ${String(params.limit)} characters`;
    case "maxLength":
      return `${path} must be at most ${String(params.limit)} characters`;
    case "enum":
      return `${path} must be one of ${(params.allowedValues as unknown[]).map(String).join(", ")}`;
    case "format":
      return params.format === "date-time"
        ? `${path} must be an ISO-8601 date-time with a time zone, e.g. 2030-01-01T00:00:00Z`
        : `${path} must be a valid ${String(params.format)}`;
    default:
      return `${path} ${problem.message ?? "is invalid"}`;
  }
}

export function schemaErrorFormatter(errors: SchemaProblem[], dataVar: string): Error {
  const first = errors[0];
  return new Error(first ? describeSchemaProblem(first, dataVar) : `${dataVar} is invalid`);
}

function connectAnswer(err: ConnectError, requestId: string): ErrorAnswer {
  const status = httpStatusForCode(err.code);
  // A backend's internal failure message is not for clients.
  const message = status >= 500 && status !== 503 && status !== 504 ? "internal error" : err.rawMessage;
  return { status, body: { error: message, code: codeToString(err.code), requestId } };
}

/** Fastify's own 4xx errors (body parsing, validation), with messages in the contract's words. */
function frameworkAnswer(
  err: FastifyError,
  requestId: string,
  bodyLimitBytes: number,
): ErrorAnswer | undefined {
  const answer = (status: number, error: string): ErrorAnswer => ({
    status,
    body: { error, code: codeForStatus(status), requestId },
  });
  if (err.validation) return answer(400, err.message);
  switch (err.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return answer(400, "malformed JSON body");
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return answer(400, "request body is empty; send a JSON object");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return answer(415, "unsupported content type; send application/json");
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return answer(413, `request body is larger than ${bodyLimitBytes} bytes`);
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return answer(400, "request body size does not match Content-Length");
  }
  // Prototype-poisoning refusals of the JSON parser carry a 400 without a code.
  if (err instanceof SyntaxError) return answer(400, "malformed JSON body");
  if (typeof err.statusCode === "number" && err.statusCode >= 400 && err.statusCode < 500) {
    return answer(err.statusCode, err.message);
  }
  return undefined;
}

export function errorAnswer(
  err: unknown,
  requestId: string,
  bodyLimitBytes: number,
): ErrorAnswer | undefined {
  if (err instanceof HttpError) {
    return { status: err.statusCode, body: { error: err.message, code: err.code, requestId } };
  }
  if (err instanceof ConnectError) return connectAnswer(err, requestId);
  if (err instanceof Error) return frameworkAnswer(err as FastifyError, requestId, bodyLimitBytes);
  return undefined;
}

/** Installs the one error mapping and the JSON 404 on the app. */
export function installErrorHandling(app: FastifyInstance, bodyLimitBytes: number): void {
  app.setErrorHandler((err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const answer = errorAnswer(err, request.id, bodyLimitBytes);
    if (!answer) {
      request.log.error({ err, url: request.url, method: request.method }, "unexpected error");
      return reply.code(500).send({ error: "internal error", code: "internal", requestId: request.id });
    }
    if (answer.status >= 500) {
      // 503/504 are a backend being down or slow, not a bug in this process; anything else is.
      const level = answer.status === 503 || answer.status === 504 ? "warn" : "error";
      request.log[level]({ err, url: request.url, method: request.method }, "request failed");
    }
    return reply.code(answer.status).send(answer.body);
  });
  app.setNotFoundHandler((request, reply) => {
    return reply.code(404).send({ error: "route not found", code: "not_found", requestId: request.id });
  });
}

/** Which backend a client talks to, for messages such as "executor service unavailable". */
export type BackendName = "auth" | "executor" | "logs" | "notifier";

/**
 * Rewrites a backend's Unavailable/DeadlineExceeded (connection refused, GOAWAY, deadline) into a
 * message that says which service it was; other errors pass unchanged.
 */
export function labelBackendError(backend: BackendName, err: unknown): unknown {
  if (!(err instanceof ConnectError)) return err;
  // A backend that dies mid-call (kill -9, crash) resets the stream: connect reports Canceled, which
  // would answer 499 as if the client had gone away. The client is still waiting; it is a 503.
  if (err.code === Code.Unavailable || err.code === Code.Canceled) {
    return new ConnectError(`${backend} service unavailable`, Code.Unavailable, err.metadata, undefined, err);
  }
  if (err.code === Code.DeadlineExceeded) {
    return new ConnectError(
      `${backend} service did not answer in time`,
      err.code,
      err.metadata,
      undefined,
      err,
    );
  }
  return err;
}
