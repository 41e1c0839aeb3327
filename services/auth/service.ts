import { fileURLToPath } from "node:url";
import { env } from "../platform/config.js";
import { AuthService, TenantService } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import type { ServiceDefinition } from "../platform/service.js";
import { authServiceHandlers, tenantServiceHandlers } from "./handlers.js";
import { KEY_ENVS } from "./keys.js";
import type { Database } from "./store.js";
import { Tokens } from "./tokens.js";

export const authSettings = {
  port: env.int("AUTH_PORT", "port of the auth RPC server (gRPC, gRPC-Web and Connect on h2c)", {
    default: 50051,
    min: 0,
    max: 65535,
  }),
  keyEnv: env.oneOf("AUTH_KEY_ENV", "environment tag of new API keys (fp_<env>_…)", KEY_ENVS, "live"),
};

export const authService: ServiceDefinition<Database, typeof authSettings> = {
  name: "auth",
  migrationsFolder: fileURLToPath(new URL("./migrations", import.meta.url)),
  settings: authSettings,
  async start(ctx) {
    const tokens = new Tokens(ctx.db, { keyEnv: ctx.config.keyEnv, log: ctx.log });
    return {
      services: [AuthService, TenantService],
      routes(router) {
        router.service(AuthService, authServiceHandlers(tokens));
        router.service(TenantService, tenantServiceHandlers(ctx.db));
      },
      stop: () => tokens.flush(),
    };
  },
};
