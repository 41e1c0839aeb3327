/**
 * Configuration comes only from environment variables, validated at start: every problem is
 * reported at once, naming the variable, what was given and what is expected.
 */

export interface Setting<T> {
  readonly name: string;
  readonly description: string;
  /** Shown in the configuration reference; undefined means required. */
  readonly defaultText: string | undefined;
  parse(raw: string | undefined): T;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

class SettingProblem extends Error {}

function setting<T>(
  name: string,
  description: string,
  defaultValue: T | undefined,
  parseValue: (raw: string) => T,
  defaultText?: string,
): Setting<T> {
  return {
    name,
    description,
    defaultText: defaultValue === undefined ? undefined : (defaultText ?? String(defaultValue)),
    parse(raw) {
      if (raw === undefined || raw.trim() === "") {
        if (defaultValue === undefined) throw new SettingProblem(`${name} is required (${description})`);
        return defaultValue;
      }
      return parseValue(raw.trim());
    },
  };
}

export const env = {
  string(name: string, description: string, defaultValue?: string): Setting<string> {
    return setting(name, description, defaultValue, (raw) => raw);
  },
  /** `defaultText` documents a default computed at start (e.g. from the machine's cores). */
  int(
    name: string,
    description: string,
    opts: { default?: number; min?: number; max?: number; defaultText?: string } = {},
  ) {
    const { min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER } = opts;
    return setting<number>(
      name,
      description,
      opts.default,
      (raw) => {
        const value = Number(raw);
        if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(value) || value < min || value > max) {
          throw new SettingProblem(`${name}=${JSON.stringify(raw)} must be an integer from ${min} to ${max}`);
        }
        return value;
      },
      opts.defaultText,
    );
  },
  number(name: string, description: string, opts: { default?: number; min?: number } = {}) {
    const { min = Number.NEGATIVE_INFINITY } = opts;
    return setting<number>(name, description, opts.default, (raw) => {
      const value = Number(raw);
      if (!Number.isFinite(value) || value < min) {
        throw new SettingProblem(`${name}=${JSON.stringify(raw)} must be a number ≥ ${min}`);
      }
      return value;
    });
  },
  url(name: string, description: string, protocols: string[], defaultValue?: string): Setting<string> {
    return setting(name, description, defaultValue, (raw) => {
      let parsed: URL;
      try {
        parsed = new URL(raw);
      } catch {
        throw new SettingProblem(
          `${name}=${JSON.stringify(raw)} is not a URL (expected ${protocols.join(" or ")})`,
        );
      }
      if (!protocols.includes(parsed.protocol.replace(/:$/, ""))) {
        throw new SettingProblem(`${name} must use ${protocols.join(" or ")}, got ${parsed.protocol}`);
      }
      return raw;
    });
  },
  oneOf<const T extends string>(name: string, description: string, values: readonly T[], defaultValue?: T) {
    return setting<T>(name, description, defaultValue, (raw) => {
      if (!(values as readonly string[]).includes(raw)) {
        throw new SettingProblem(`${name}=${JSON.stringify(raw)} must be one of ${values.join(", ")}`);
      }
      return raw as T;
    });
  },
  pattern(name: string, description: string, re: RegExp, defaultValue?: string): Setting<string> {
    return setting(name, description, defaultValue, (raw) => {
      if (!re.test(raw)) throw new SettingProblem(`${name}=${JSON.stringify(raw)} must match ${re}`);
      return raw;
    });
  },
};

export type ConfigSpec = Record<string, Setting<unknown>>;
export type ConfigOf<S extends ConfigSpec> = { [K in keyof S]: S[K] extends Setting<infer T> ? T : never };

export function loadConfig<S extends ConfigSpec>(
  spec: S,
  source: Record<string, string | undefined> = process.env,
): ConfigOf<S> {
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(spec)) {
    try {
      out[key] = s.parse(source[s.name]);
    } catch (err) {
      if (!(err instanceof SettingProblem)) throw err;
      problems.push(err.message);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return out as ConfigOf<S>;
}

/** Settings every service process reads. */
export const commonSettings = {
  databaseUrl: env.url("DATABASE_URL", "PostgreSQL connection URL", ["postgres", "postgresql"]),
  natsUrl: env.url(
    "NATS_URL",
    "NATS server URL (JetStream enabled)",
    ["nats", "tls"],
    "nats://127.0.0.1:4222",
  ),
  namespace: env.pattern(
    "FLOWPLANE_NAMESPACE",
    "prefix of NATS subjects and stream names; separate stacks sharing one NATS use different values",
    /^[a-z][a-z0-9_]{0,31}$/,
    "flowplane",
  ),
  logLevel: env.oneOf(
    "LOG_LEVEL",
    "pino log level",
    ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const,
    "info",
  ),
  otlpEndpoint: env.url(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OpenTelemetry collector base URL; traces go to <url>/v1/traces (OTLP/HTTP); empty turns tracing off",
    ["http", "https"],
    "",
  ),
  otelServiceName: env.string(
    "OTEL_SERVICE_NAME",
    "service.name of this process's traces; empty means the process name (gateway, auth, executor, …)",
    "",
  ),
  shutdownTimeoutMs: env.int("SHUTDOWN_TIMEOUT_MS", "how long a process drains in-flight work on SIGTERM", {
    default: 10_000,
    min: 0,
  }),
};
