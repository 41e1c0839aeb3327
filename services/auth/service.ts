import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { JsMsg } from "nats";
import { adminPortSetting } from "../platform/admin.js";
import { env } from "../platform/config.js";
import { decodeEvent, startDurableConsumer, UnusableMessageError } from "../platform/consumer.js";
import { AuthService, TenantService } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { ExecutionCompletedSchema } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { TokenExpiringSchema, TokenRevokedSchema } from "../platform/gen/flowplane/events/v1/token_pb.js";
import { executionsStreamConfig } from "../platform/nats.js";
import type { ServiceDefinition } from "../platform/service.js";
import { authServiceHandlers, tenantServiceHandlers } from "./handlers.js";
import { KEY_ENVS } from "./keys.js";
import { RateLimits } from "./limits.js";
import { planSettings, planTable } from "./plans.js";
import { type Database, type ExecutionCost, recordExecutionCosts } from "./store.js";
import { sweepTokens } from "./sweeper.js";
import { type SecretsStopped, Tokens } from "./tokens.js";
import { billingPeriodOf } from "./usage.js";

/** The cost a completion adds to its tenant's usage; UnusableMessageError when it cannot count. */
function executionCostOf(m: JsMsg): ExecutionCost {
  const event = decodeEvent(ExecutionCompletedSchema, m);
  if (event.executionId === "" || event.tenantId === "") {
    throw new UnusableMessageError("completion without execution or tenant id");
  }
  const cost = event.cost?.total ?? 0;
  if (!Number.isFinite(cost) || cost < 0) throw new UnusableMessageError(`invalid cost ${cost}`);
  const endedAt = event.endedAt ?? event.startedAt;
  return {
    executionId: event.executionId,
    tenantId: event.tenantId,
    costUsd: cost,
    // It counts in the period it ended in.
    periodStart: billingPeriodOf(endedAt ? timestampDate(endedAt) : new Date()).start,
  };
}

export const authSettings = {
  adminPort: adminPortSetting("auth"),
  port: env.int("AUTH_PORT", "port of the auth RPC server (gRPC, gRPC-Web and Connect on h2c)", {
    default: 50051,
    min: 0,
    max: 65535,
  }),
  keyEnv: env.oneOf("AUTH_KEY_ENV", "environment tag of new API keys (fp_<env>_…)", KEY_ENVS, "live"),
  tokenCacheTtlMs: env.int(
    "AUTH_TOKEN_CACHE_TTL_MS",
    "how long a key lookup is reused, ms (0 disables); revocations purge it on every replica at once",
    { default: 1000, min: 0, max: 1000 },
  ),
  sweepIntervalMs: env.int(
    "AUTH_SWEEP_INTERVAL_MS",
    "how often token expiry, rotation grace ends and expiry warnings are processed, ms",
    { default: 10_000, min: 100 },
  ),
  ...planSettings,
};

export const authService: ServiceDefinition<Database, typeof authSettings> = {
  name: "auth",
  migrationsFolder: fileURLToPath(new URL("./migrations", import.meta.url)),
  settings: authSettings,
  async start(ctx) {
    const { names, nc, log } = ctx;
    const plans = planTable(ctx.config);
    const announce = (event: SecretsStopped) => {
      // Core NATS: replicas purge their cached lookups; a replica that misses it still drops them
      // when the cache TTL (≤ 1 s) runs out.
      nc.publish(
        names.tokenRevoked,
        toBinary(
          TokenRevokedSchema,
          create(TokenRevokedSchema, {
            tenantId: event.tenantId,
            tokenId: event.tokenId,
            secretHashes: event.secretHashes,
            at: timestampFromDate(event.at),
            reason: event.reason,
          }),
        ),
      );
    };
    const tokens = new Tokens(ctx.db, {
      keyEnv: ctx.config.keyEnv,
      log,
      plans,
      cacheTtlMs: ctx.config.tokenCacheTtlMs,
      onSecretsStopped: announce,
    });
    const limits = new RateLimits(ctx.db, plans, log);

    const revocations = nc.subscribe(names.tokenRevoked, {
      callback(err, msg) {
        if (err) return;
        try {
          const event = fromBinary(TokenRevokedSchema, msg.data);
          tokens.forget(event.tokenId, event.secretHashes);
        } catch (decodeErr) {
          log.warn({ err: decodeErr }, "undecodable token revocation");
        }
      },
    });

    const usageConsumer = await startDurableConsumer({
      js: ctx.js,
      jsm: ctx.jsm,
      log,
      stream: executionsStreamConfig(names),
      durable: "auth-usage",
      consumerConfig: { filter_subject: names.executionCompletedAll },
      // One statement per message, or per batch of the completions waiting together.
      async handle(m) {
        await recordExecutionCosts(ctx.db, [executionCostOf(m)]);
      },
      async handleBatch(messages) {
        await recordExecutionCosts(ctx.db, messages.map(executionCostOf));
      },
    });

    let sweeping: Promise<void> = Promise.resolve();
    const sweepTimer = setInterval(() => {
      sweeping = sweeping
        .then(() =>
          sweepTokens(ctx.db, {
            secretsStopped: (event) => {
              tokens.forget(event.tokenId, event.secretHashes);
              announce(event);
            },
            async expiring(token) {
              nc.publish(
                names.tokenExpiring,
                toBinary(
                  TokenExpiringSchema,
                  create(TokenExpiringSchema, {
                    tenantId: token.tenant_id,
                    tokenId: token.id,
                    name: token.name,
                    prefix: token.prefix,
                    expiresAt: timestampFromDate(token.expires_at!),
                    warningDays: token.expiry_warning_days ?? 0,
                  }),
                ),
              );
              await nc.flush();
            },
          }),
        )
        .catch((err: unknown) => log.warn({ err }, "token sweep failed; retrying at the next interval"));
    }, ctx.config.sweepIntervalMs);
    sweepTimer.unref();

    return {
      services: [AuthService, TenantService],
      routes(router) {
        router.service(AuthService, authServiceHandlers(tokens, limits, ctx.db));
        router.service(TenantService, tenantServiceHandlers(ctx.db, tokens));
      },
      async stop() {
        clearInterval(sweepTimer);
        revocations.unsubscribe();
        await usageConsumer.stop();
        await sweeping;
        await tokens.flush();
        await limits.close();
      },
    };
  },
};
