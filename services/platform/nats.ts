import {
  AckPolicy,
  type ConsumerConfig,
  connect,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JetStreamPublishOptions,
  type NatsConnection,
  NatsError,
  nanos,
  headers as natsHeaders,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "nats";
import { inSpan, SpanKind, traceHeaders, tracingEnabled } from "./telemetry.js";

export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  return connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
}

/** Subject and stream names of one deployment; FLOWPLANE_NAMESPACE keeps stacks on one NATS apart. */
export function natsNames(namespace: string) {
  const upper = namespace.toUpperCase();
  return {
    executionsStream: `${upper}_EXECUTIONS`,
    executionSubjects: `${namespace}.execution.>`,
    executionCompleted: (tenantId: string) => `${namespace}.execution.completed.${tenantId}`,
    executionCompletedAll: `${namespace}.execution.completed.>`,
    tokenRevoked: `${namespace}.auth.token.revoked`,
    tokenExpiring: `${namespace}.auth.token.expiring`,
    runsStream: `${upper}_RUNS`,
    runRequest: `${namespace}.run.request`,
    runCancel: `${namespace}.run.cancel`,
    live: (executionId: string) => `${namespace}.live.${executionId}`,
    deliveriesStream: `${upper}_DELIVERIES`,
    deliverySubjects: `${namespace}.delivery.>`,
    delivery: (channel: string) => `${namespace}.delivery.${channel}`,
    notificationDisabled: `${namespace}.notification.disabled`,
  };
}
export type NatsNames = ReturnType<typeof natsNames>;

const DAY_NS = nanos(24 * 60 * 60 * 1000);

/** The execution event stream (DESIGN §4), declared idempotently by whoever consumes it. */
export function executionsStreamConfig(names: NatsNames): Partial<StreamConfig> & { name: string } {
  return {
    name: names.executionsStream,
    subjects: [names.executionSubjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: 7 * DAY_NS,
    // Republishes with the same Nats-Msg-Id inside this window are dropped by the server.
    duplicate_window: nanos(2 * 60 * 1000),
  };
}

function isNotFound(err: unknown): boolean {
  return err instanceof NatsError && (err.api_error?.err_code === 10059 || err.api_error?.err_code === 10014);
}

export async function ensureStream(
  jsm: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
): Promise<void> {
  try {
    await jsm.streams.info(config.name);
    await jsm.streams.update(config.name, config);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    try {
      await jsm.streams.add(config);
    } catch (addErr) {
      // Another replica created it between our lookup and add.
      if (!(addErr instanceof NatsError && addErr.api_error?.err_code === 10058)) throw addErr;
    }
  }
}

/** A durable pull consumer with explicit acks; created or updated to match `config`. */
export async function ensureDurableConsumer(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  config: Partial<ConsumerConfig> = {},
): Promise<void> {
  const full: Partial<ConsumerConfig> = {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(30_000),
    max_deliver: -1,
    ...config,
  };
  try {
    await jsm.consumers.info(stream, durable);
    await jsm.consumers.update(stream, durable, full);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.consumers.add(stream, full);
  }
}

/**
 * The JetStream client a service is given: each publish gets a producer span and carries the active
 * trace in its `traceparent` header, so the consumer (consumer.ts) continues the trace. The same
 * client when tracing is off.
 */
export function tracedJetStream(js: JetStreamClient, service: string): JetStreamClient {
  if (!tracingEnabled()) return js;
  const publish: JetStreamClient["publish"] = (subject, payload, options) =>
    inSpan(
      service,
      `publish ${subject}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: { "messaging.system": "nats", "messaging.destination.name": subject },
      },
      () => {
        const hdrs = options?.headers ?? natsHeaders();
        for (const [name, value] of Object.entries(traceHeaders())) hdrs.set(name, value);
        const withTrace: Partial<JetStreamPublishOptions> = { ...options, headers: hdrs };
        return js.publish(subject, payload, withTrace);
      },
    );
  return new Proxy(js, {
    get(target, property) {
      if (property === "publish") return publish;
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
