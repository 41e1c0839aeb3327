/**
 * OpenTelemetry tracing (issue 8): one tracer provider per process, W3C `traceparent` carried over
 * HTTP, RPC headers and NATS message headers. Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (or a
 * test installs an in-memory exporter): then every helper here returns at once and nothing is
 * created, injected or exported.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  type Context,
  type ContextManager,
  context,
  isSpanContextValid,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  trace,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";

export type { Link, Span };
export { SpanKind, SpanStatusCode };

/** The active OTel context follows async flows through AsyncLocalStorage (what Node's SDK does). */
class AsyncLocalContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.storage.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== "function") return target;
    const fn = target as unknown as (...args: unknown[]) => unknown;
    return ((...args: unknown[]) => this.with(ctx, fn, undefined, ...args)) as unknown as T;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.storage.disable();
    return this;
  }
}

interface Installed {
  provider: TracerProvider;
  /** Set when a test installed the in-memory exporter. */
  memory?: InMemorySpanExporter;
}

let installed: Installed | undefined;

/** True when spans are recorded and exported; every helper below is a pass-through otherwise. */
export function tracingEnabled(): boolean {
  return installed !== undefined;
}

function install(provider: TracerProvider, memory?: InMemorySpanExporter): Installed {
  context.setGlobalContextManager(new AsyncLocalContextManager());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  installed = { provider, memory };
  return installed;
}

/**
 * The process's one tracing setup: an OTLP/HTTP exporter to `<endpoint>/v1/traces` when an endpoint
 * is configured, nothing otherwise. Later calls (several services in one process, tests) keep the
 * first setup.
 */
export function setupTelemetry(opts: { serviceName: string; otlpEndpoint: string }): void {
  if (installed || opts.otlpEndpoint === "") return;
  const exporter = new OTLPTraceExporter({ url: `${opts.otlpEndpoint.replace(/\/+$/, "")}/v1/traces` });
  install(
    new TracerProvider({
      resource: resourceFromAttributes({ "service.name": opts.serviceName }),
      spanProcessors: [new BatchSpanProcessor({ exporter })],
    }),
  );
}

/** Tests: records every span in memory (synchronously on end), whatever the configuration says. */
export function installInMemoryTracing(serviceName = "flowplane-test"): InMemorySpanExporter {
  if (installed?.memory) return installed.memory;
  if (installed) throw new Error("tracing is already set up with an exporter");
  const memory = new InMemorySpanExporter();
  install(
    new TracerProvider({
      resource: resourceFromAttributes({ "service.name": serviceName }),
      spanProcessors: [new SimpleSpanProcessor({ exporter: memory })],
    }),
    memory,
  );
  return memory;
}

/** Exports the spans still buffered (on shutdown, so the last requests' spans are not lost). */
export async function flushTelemetry(): Promise<void> {
  await installed?.provider.forceFlush().catch(() => {});
}

/** Tracer of one process part; the scope name says which service made the span in a shared process. */
function tracer(service: string) {
  return trace.getTracer(`flowplane.${service}`);
}

type Carrier = Record<string, string>;
const recordGetter: TextMapGetter<Carrier> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};
const recordSetter: TextMapSetter<Carrier> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

/** The context a `traceparent` (and `tracestate`) describe; a missing or malformed one is the root. */
export function contextFromHeaders(get: (name: string) => string | undefined | null): Context {
  if (!installed) return ROOT_CONTEXT;
  const carrier: Carrier = {};
  for (const name of ["traceparent", "tracestate"]) {
    const value = get(name);
    if (typeof value === "string" && value !== "") carrier[name] = value;
  }
  return carrier.traceparent ? propagation.extract(ROOT_CONTEXT, carrier, recordGetter) : ROOT_CONTEXT;
}

/** The `traceparent`/`tracestate` headers naming `ctx` (the active context by default); {} when off. */
export function traceHeaders(ctx: Context = context.active()): Record<string, string> {
  if (!installed) return {};
  const carrier: Carrier = {};
  propagation.inject(ctx, carrier, recordSetter);
  return carrier;
}

/** The active span's traceparent, to store with work that is finished later (an outbox row). */
export function currentTraceparent(): string | undefined {
  return installed ? traceHeaders().traceparent : undefined;
}

/** The trace id of the active span, for log lines. */
export function currentTraceId(): string | undefined {
  if (!installed) return undefined;
  const spanContext = trace.getSpanContext(context.active());
  return spanContext && isSpanContextValid(spanContext) ? spanContext.traceId : undefined;
}

/**
 * Runs `fn` inside a new span of `service` (child of `parent`, else of the active context), ending it
 * with an error status when `fn` throws. `fn` gets the span to add attributes or a status code.
 */
export async function inSpan<T>(
  service: string,
  name: string,
  opts: {
    kind: SpanKind;
    parent?: Context;
    attributes?: Record<string, string | number>;
    links?: Link[];
    /** Whether an error thrown by `fn` marks the span failed (default: every error does). */
    isFailure?: (err: unknown) => boolean;
  },
  fn: (span: Span | undefined) => Promise<T>,
): Promise<T> {
  if (!installed) return fn(undefined);
  const parent = opts.parent ?? context.active();
  const span = tracer(service).startSpan(
    name,
    { kind: opts.kind, attributes: opts.attributes, links: opts.links },
    parent,
  );
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (err) {
    if (opts.isFailure && !opts.isFailure(err)) throw err;
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
    throw err;
  } finally {
    span.end();
  }
}

/** A span for the lifetime of something not shaped as one call (a gateway request between hooks). */
export function startSpan(
  service: string,
  name: string,
  opts: { kind: SpanKind; parent: Context; attributes?: Record<string, string | number> },
): { span: Span; context: Context } | undefined {
  if (!installed) return undefined;
  const span = tracer(service).startSpan(name, { kind: opts.kind, attributes: opts.attributes }, opts.parent);
  return { span, context: trace.setSpan(opts.parent, span) };
}

/** Runs `fn` with `ctx` active (pass-through when tracing is off). */
export function withContext<T>(ctx: Context | undefined, fn: () => T): T {
  return installed && ctx ? context.with(ctx, fn) : fn();
}

/**
 * Runs `fn` under the trace a stored traceparent names, unless a span is already active (the request
 * that stored it is still being served): an outbox republish continues the request's trace.
 */
export function withStoredTraceparent<T>(traceparent: string | null | undefined, fn: () => T): T {
  if (!installed || !traceparent || trace.getSpan(context.active())) return fn();
  return context.with(
    contextFromHeaders((name) => (name === "traceparent" ? traceparent : undefined)),
    fn,
  );
}

/** A link to the span a message's headers name, for batch processing spans. */
export function linkFromHeaders(get: (name: string) => string | undefined | null): Link | undefined {
  if (!installed) return undefined;
  const spanContext = trace.getSpanContext(contextFromHeaders(get));
  return spanContext ? { context: spanContext } : undefined;
}
