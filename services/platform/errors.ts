import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/**
 * Domain errors. Services throw these; `domainErrorInterceptor` maps them to Connect codes once,
 * and the gateway maps codes to HTTP once (DESIGN §6).
 */
export class DomainError extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class InvalidArgumentError extends DomainError {
  constructor(message: string) {
    super(Code.InvalidArgument, message);
  }
}
export class FailedPreconditionError extends DomainError {
  constructor(message: string) {
    super(Code.FailedPrecondition, message);
  }
}
export class UnauthenticatedError extends DomainError {
  constructor(message: string) {
    super(Code.Unauthenticated, message);
  }
}
export class PermissionDeniedError extends DomainError {
  constructor(message: string) {
    super(Code.PermissionDenied, message);
  }
}
export class NotFoundError extends DomainError {
  constructor(message: string) {
    super(Code.NotFound, message);
  }
}
export class AlreadyExistsError extends DomainError {
  constructor(message: string) {
    super(Code.AlreadyExists, message);
  }
}
export class ResourceExhaustedError extends DomainError {
  constructor(message: string) {
    super(Code.ResourceExhausted, message);
  }
}
export class UnavailableError extends DomainError {
  constructor(message: string) {
    super(Code.Unavailable, message);
  }
}

/** Errors of the infrastructure under us (PostgreSQL, NATS) that mean "try again", not "bug". */
function isInfrastructureUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") {
    // Connection refused/reset, and PostgreSQL's connection-exception and operator-intervention classes.
    if (["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "ENOTFOUND"].includes(code)) return true;
    if (/^(08|57P)/.test(code)) return true;
  }
  const name = (err as { name?: unknown }).name;
  if (name === "NatsError" && /CONNECTION|TIMEOUT|DISCONNECT|CLOSED/i.test(String(code ?? err.message))) {
    return true;
  }
  // pg's own wording (no code) for a pooled client whose connection broke mid-query or was closed.
  return /Connection terminated|timeout exceeded when trying to connect|connection error and is not queryable|Client was closed and is not queryable/i.test(
    err.message,
  );
}

/**
 * PostgreSQL refusing a caller's text (a NUL character, an encoding it cannot store): bad input,
 * not a bug, whichever entry point it came through.
 */
function isUnstorableText(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  return code === "22021" || code === "22P05";
}

/** Maps anything thrown by a handler to the ConnectError a caller should see. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof DomainError) return new ConnectError(err.message, err.code);
  if (isUnstorableText(err)) {
    return new ConnectError(
      "text contains characters that cannot be stored (e.g. NUL)",
      Code.InvalidArgument,
    );
  }
  if (isInfrastructureUnavailable(err)) {
    return new ConnectError("service temporarily unavailable", Code.Unavailable, undefined, undefined, err);
  }
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

type ErrorLogger = { error(obj: object, msg: string): void };

/** Server interceptor: domain errors become Connect codes; unexpected ones are logged with their stack. */
export function domainErrorInterceptor(log: ErrorLogger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      const mapped = toConnectError(err);
      if (mapped.code === Code.Internal || mapped.code === Code.Unavailable) {
        log.error({ err, procedure: req.method.name }, "rpc failed");
      }
      throw mapped;
    }
  };
}

/** The one Connect-code → HTTP-status mapping (DESIGN §6). */
export function httpStatusForCode(code: Code): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return 400;
    case Code.Unauthenticated:
      return 401;
    case Code.PermissionDenied:
      return 403;
    case Code.NotFound:
      return 404;
    case Code.AlreadyExists:
    case Code.Aborted:
      return 409;
    case Code.ResourceExhausted:
      return 429;
    case Code.Canceled:
      return 499;
    case Code.Unimplemented:
      return 501;
    case Code.Unavailable:
      return 503;
    case Code.DeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}
