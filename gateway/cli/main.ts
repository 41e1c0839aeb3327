/**
 * The `flowplane` command. Operator commands live here (`dev`, `migrate`, `tenant create`, `token
 * create --workspace`, which talk to the services directly); the commands that go through the
 * gateway with an API key are in commands/ (run, logs, workflow, token, notification).
 * Exit codes: see EXIT in commands/common.ts.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { parseArgs } from "node:util";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { ConfigError, env, loadConfig } from "../../services/platform/config.js";
import {
  AuthService,
  Plan,
  TenantService,
  TokenKind,
} from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { bootstrapDemo } from "./bootstrap.js";
import { checkUrl, parseOrUsage } from "./commands/common.js";
import {
  CommandError,
  EXIT,
  EXIT_CODES_HELP,
  gatewayCommand,
  processIo,
  runGatewayCommand,
  UsageError,
} from "./commands/index.js";
import { TOKEN_GATEWAY_USAGE } from "./commands/tokens.js";
import { demoInput } from "./demo-workflow.js";
import {
  entryPoint,
  MAX_REPLICAS,
  REPO_ROOT,
  SERVICE_NAMES,
  type Stack,
  startStack,
  tsxNodeArgs,
} from "./stack.js";

const MAIN_USAGE = `Usage: flowplane <command> [options]

Operator commands (talk to the services directly):
  dev                      run the whole stack on this machine (what \`npm start\` runs)
  migrate                  apply every service's database migrations to DATABASE_URL
  tenant create            create a workspace (tenant)
  token create --workspace create an API key for any workspace (no key needed)

Through the gateway, with an API key (--api-key, FLOWPLANE_API_KEY, or .flowplane/dev.json):
  run WORKFLOW_ID          run a workflow (trigger "manual"); --background, --watch for live blocks
  workflow push FILE       publish a workflow definition (new workflow or next version)
  logs                     list execution logs; --follow prints new ones until Ctrl-C
  token create|list|rotate|revoke|events
                           the workspace's API keys
  notification create|list|deliveries
                           webhook, email and Slack subscriptions and their deliveries

Human-readable output by default (tables; results on stdout, notes on stderr); --json for scripts.
Gateway URL: --url, FLOWPLANE_URL, gatewayUrl in dev.json, else http://127.0.0.1:8080.

${EXIT_CODES_HELP}

Run \`flowplane <command> --help\` for a command's options.`;

const DEV_USAGE = `Usage: flowplane dev [--data-dir DIR] [--replicas N] [--verbose]

Starts PostgreSQL (DATABASE_URL, else an embedded one), NATS (NATS_URL, else nats-server -js from
PATH), the auth, executor, logs and notifier services, then the gateway. On first run it creates a
demo workspace, an admin key and a demo workflow (saved in <data-dir>/dev.json) and prints how to
call it. Ctrl-C stops everything.

Options:
  --data-dir DIR   embedded database, NATS store, logs and dev.json (default: .flowplane)
  --replicas N     run N executors, N notifiers and N gateways on the same database and NATS
                   (default: FLOWPLANE_REPLICAS, else 1); the gateway printed is the first one
  --verbose        stream the services' logs to the terminal instead of <data-dir>/logs/

Environment: DATABASE_URL, NATS_URL, FLOWPLANE_NAMESPACE (default flowplane), LOG_LEVEL,
AUTH_PORT, EXECUTOR_PORT, LOGS_PORT, NOTIFIER_PORT (default 50051-50054), GATEWAY_PORT (default 8080),
FLOWPLANE_REPLICAS. Replicas after the first listen on ports the system picks.`;

const MIGRATE_USAGE = `Usage: flowplane migrate

Applies the migrations of auth, executor, logs and notifier to the database in DATABASE_URL
(required) and exits.`;

const TENANT_USAGE = `Usage: flowplane tenant create --name NAME [--plan free|pro|team|enterprise] [--auth-url URL] [--json]

Creates a workspace and prints its id.

Options:
  --name NAME      workspace name (required)
  --plan PLAN      free (default), pro, team or enterprise
  --auth-url URL   the auth service (default: AUTH_URL, else http://127.0.0.1:50051)
  --json           print the workspace as JSON`;

const TOKEN_USAGE = `Usage: flowplane token create --workspace WS --name NAME [--kind app|admin] [--scope SCOPE]...
                             [--workflow WF]... [--purpose TEXT] [--expires-at ISO] [--auth-url URL] [--json]

The operator form: creates an API key in any workspace through the auth service (no key needed)
and prints it. The key is shown only this once. Without --workspace, \`token create\` goes through
the gateway with your key (see \`flowplane token --help\`).

Options:
  --workspace WS   workspace (tenant) id (required)
  --name NAME      what the key is called, e.g. the integration using it (required)
  --kind KIND      app (default: an integration, holds only its scopes) or admin (holds every scope)
  --scope SCOPE    a scope an app key holds; repeat for several: workflows:execute, workflows:read,
                   workflows:write, logs:read, notifications:read, notifications:write,
                   tokens:read, tokens:write
  --workflow WF    restrict the key to this workflow id; repeat for several
  --purpose TEXT   why the key exists
  --expires-at ISO when the key stops working, e.g. 2026-01-31T00:00:00Z
  --auth-url URL   the auth service (default: AUTH_URL, else http://127.0.0.1:50051)
  --json           print the key and its metadata as JSON`;

const PLANS: Record<string, Plan> = {
  free: Plan.FREE,
  pro: Plan.PRO,
  team: Plan.TEAM,
  enterprise: Plan.ENTERPRISE,
};
const KINDS: Record<string, TokenKind> = { app: TokenKind.APP, admin: TokenKind.ADMIN };

function defaultAuthUrl(): string {
  return process.env.AUTH_URL?.trim() || "http://127.0.0.1:50051";
}

/** Adds which service was called to a Connect error, so "connection refused" says where. */
async function calling<T>(what: string, url: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof ConnectError) throw new CommandError(`${what} (${url}) failed: ${err.message}`);
    throw err;
  }
}

function print(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** Single-quotes a value for a POSIX shell. */
function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'"'"'`)}'`;
}

async function tenantCreate(args: string[]): Promise<number> {
  const { values } = parseOrUsage(
    () =>
      parseArgs({
        args,
        strict: true,
        options: {
          name: { type: "string" },
          plan: { type: "string" },
          "auth-url": { type: "string" },
          json: { type: "boolean" },
          help: { type: "boolean" },
        },
      }),
    TENANT_USAGE,
  );
  if (values.help) return printUsage(TENANT_USAGE);
  const name = values.name?.trim();
  if (!name) throw new UsageError("--name is required", TENANT_USAGE);
  const planName = (values.plan ?? "free").toLowerCase();
  const plan = PLANS[planName];
  if (plan === undefined) {
    throw new UsageError(`--plan must be one of ${Object.keys(PLANS).join(", ")}`, TENANT_USAGE);
  }
  const authUrl = checkUrl(values["auth-url"] ?? defaultAuthUrl(), "--auth-url", TENANT_USAGE);
  const client = createRpcClient(TenantService, authUrl);
  const { tenant } = await calling("auth CreateTenant", authUrl, () => client.createTenant({ name, plan }));
  if (!tenant) throw new CommandError("auth CreateTenant answered without a tenant");
  if (values.json) {
    print(
      JSON.stringify({
        workspaceId: tenant.id,
        name: tenant.name,
        plan: planName,
        createdAt: tenant.createdAt ? timestampDate(tenant.createdAt).toISOString() : null,
      }),
    );
  } else {
    print(tenant.id);
  }
  return 0;
}

async function tokenCreate(args: string[]): Promise<number> {
  const { values } = parseOrUsage(
    () =>
      parseArgs({
        args,
        strict: true,
        options: {
          workspace: { type: "string" },
          name: { type: "string" },
          kind: { type: "string" },
          scope: { type: "string", multiple: true },
          workflow: { type: "string", multiple: true },
          purpose: { type: "string" },
          "expires-at": { type: "string" },
          "auth-url": { type: "string" },
          json: { type: "boolean" },
          help: { type: "boolean" },
        },
      }),
    TOKEN_USAGE,
  );
  if (values.help) return printUsage(TOKEN_USAGE);
  const tenantId = values.workspace?.trim();
  if (!tenantId) throw new UsageError("--workspace is required", TOKEN_USAGE);
  const name = values.name?.trim();
  if (!name) throw new UsageError("--name is required", TOKEN_USAGE);
  const kindName = (values.kind ?? "app").toLowerCase();
  const kind = KINDS[kindName];
  if (kind === undefined) throw new UsageError("--kind must be app or admin", TOKEN_USAGE);
  const scopes = (values.scope ?? [])
    .flatMap((s) => s.split(","))
    .map((s) => s.trim())
    .filter(Boolean);
  if (kind === TokenKind.APP && scopes.length === 0) {
    throw new UsageError(
      "an app key needs at least one --scope (e.g. --scope workflows:execute)",
      TOKEN_USAGE,
    );
  }
  if (kind === TokenKind.ADMIN && scopes.length > 0) {
    throw new UsageError("--scope applies to app keys; an admin key holds every scope", TOKEN_USAGE);
  }
  let expiresAt: Date | undefined;
  if (values["expires-at"] !== undefined) {
    expiresAt = new Date(values["expires-at"]);
    if (!/^\d{4}-\d{2}-\d{2}/.test(values["expires-at"]) || Number.isNaN(expiresAt.getTime())) {
      throw new UsageError(
        `--expires-at must be an ISO-8601 date or time, got ${JSON.stringify(values["expires-at"])}`,
        TOKEN_USAGE,
      );
    }
  }
  const authUrl = checkUrl(values["auth-url"] ?? defaultAuthUrl(), "--auth-url", TOKEN_USAGE);
  const client = createRpcClient(AuthService, authUrl);
  const { token, secret } = await calling("auth CreateToken", authUrl, () =>
    client.createToken({
      tenantId,
      kind,
      name,
      purpose: values.purpose ?? "",
      scopes,
      workflowIds: values.workflow ?? [],
      expiresAt: expiresAt ? timestampFromDate(expiresAt) : undefined,
      // Empty: the operator, who may grant any scope.
      createdBy: "",
    }),
  );
  if (values.json) {
    print(
      JSON.stringify({
        key: secret,
        id: token?.id,
        prefix: token?.prefix,
        workspaceId: token?.tenantId ?? tenantId,
        kind: kindName,
        name: token?.name ?? name,
        scopes: token?.scopes ?? scopes,
        workflowIds: token?.workflowIds ?? [],
        expiresAt: token?.expiresAt ? timestampDate(token.expiresAt).toISOString() : null,
      }),
    );
  } else {
    print(secret);
  }
  process.stderr.write(
    `flowplane: this key${token?.id ? ` (${token.id})` : ""} will not be shown again; store it now.\n`,
  );
  return 0;
}

async function migrate(args: string[]): Promise<number> {
  const { values } = parseOrUsage(
    () => parseArgs({ args, strict: true, options: { help: { type: "boolean" } } }),
    MIGRATE_USAGE,
  );
  if (values.help) return printUsage(MIGRATE_USAGE);
  if (!process.env.DATABASE_URL?.trim()) {
    throw new UsageError("DATABASE_URL is required (the PostgreSQL to migrate)", MIGRATE_USAGE);
  }
  const results = await Promise.all(
    SERVICE_NAMES.map(
      (name) =>
        new Promise<{ name: string; code: number | null; output: string }>((resolve) => {
          const child = spawn(process.execPath, [...tsxNodeArgs(), entryPoint(name), "migrate"], {
            cwd: REPO_ROOT,
            stdio: ["ignore", "pipe", "pipe"],
          });
          const chunks: Buffer[] = [];
          child.stdout.on("data", (c: Buffer) => chunks.push(c));
          child.stderr.on("data", (c: Buffer) => chunks.push(c));
          child.once("error", (err) => resolve({ name, code: 1, output: err.message }));
          child.once("close", (code) => resolve({ name, code, output: Buffer.concat(chunks).toString() }));
        }),
    ),
  );
  let failed = 0;
  for (const { name, code, output } of results) {
    if (code === 0) {
      process.stdout.write(output.trim() ? `${output.trimEnd()}\n` : `${name}: migrated\n`);
    } else {
      failed++;
      process.stderr.write(`flowplane: migrating ${name} failed (exit code ${code}):\n${output.trimEnd()}\n`);
    }
  }
  return failed > 0 ? 1 : 0;
}

const devSettings = {
  auth: env.int("AUTH_PORT", "port of the auth service", { default: 50051, min: 0, max: 65535 }),
  executor: env.int("EXECUTOR_PORT", "port of the executor service", { default: 50052, min: 0, max: 65535 }),
  logs: env.int("LOGS_PORT", "port of the logs service", { default: 50053, min: 0, max: 65535 }),
  notifier: env.int("NOTIFIER_PORT", "port of the notifier service", { default: 50054, min: 0, max: 65535 }),
  gateway: env.int("GATEWAY_PORT", "port of the REST gateway", { default: 8080, min: 0, max: 65535 }),
  replicas: env.int("FLOWPLANE_REPLICAS", "processes of executor, notifier and gateway", {
    default: 1,
    min: 1,
    max: MAX_REPLICAS,
  }),
  logLevel: env.oneOf(
    "LOG_LEVEL",
    "log level of every process",
    ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const,
    "info",
  ),
};

async function dev(args: string[]): Promise<number> {
  const { values } = parseOrUsage(
    () =>
      parseArgs({
        args,
        strict: true,
        options: {
          "data-dir": { type: "string" },
          replicas: { type: "string" },
          verbose: { type: "boolean" },
          help: { type: "boolean" },
        },
      }),
    DEV_USAGE,
  );
  if (values.help) return printUsage(DEV_USAGE);
  const { logLevel, replicas: replicasFromEnv, ...ports } = loadConfig(devSettings);
  const replicas = values.replicas === undefined ? replicasFromEnv : Number(values.replicas);
  if (!Number.isSafeInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) {
    throw new UsageError(`--replicas must be an integer from 1 to ${MAX_REPLICAS}`, DEV_USAGE);
  }
  const dataDir = path.resolve(values["data-dir"] ?? ".flowplane");
  const logDir = values.verbose ? undefined : path.join(dataDir, "logs");

  let stack: Stack | undefined;
  let signalled = false;
  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    if (stopping) {
      // A second Ctrl-C: leave now; the children stop when their IPC channel closes.
      process.stderr.write("flowplane: forced exit\n");
      process.exit(1);
    }
    signalled = true;
    if (!stack) return; // still starting: stopped as soon as startStack returns
    process.stderr.write("\nflowplane: stopping…\n");
    stopping = stack.stop().then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`flowplane: unclean stop: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, shutdown);

  const started = Date.now();
  try {
    stack = await startStack({
      dataDir,
      logDir,
      ports,
      replicas,
      logLevel,
      // Keys minted on a developer's machine say so: fp_test_….
      env: { AUTH_KEY_ENV: process.env.AUTH_KEY_ENV?.trim() || "test" },
    });
  } catch (err) {
    // Ctrl-C while starting also reaches the children, so their early exit is not the failure.
    if (signalled) return 0;
    throw err;
  }
  if (signalled) {
    shutdown();
    return new Promise<number>(() => {});
  }
  let demo: Awaited<ReturnType<typeof bootstrapDemo>>;
  try {
    demo = await bootstrapDemo({ serviceUrls: stack.serviceUrls, gatewayUrl: stack.gatewayUrl, dataDir });
  } catch (err) {
    await stack.stop();
    if (err instanceof ConnectError)
      throw new CommandError(`creating the demo workspace failed: ${err.message}`);
    throw err;
  }
  const shown = (p: string) => {
    const relative = path.relative(process.cwd(), p);
    return relative && !relative.startsWith("..") ? relative : p;
  };
  const body = JSON.stringify({ workflowId: demo.workflowId, version: 1, input: demoInput });
  const url = stack.gatewayUrl;
  print();
  print(`Flowplane is running (started in ${((Date.now() - started) / 1000).toFixed(1)} s).`);
  print();
  print(`  Gateway     ${url}`);
  for (const other of stack.gatewayUrls.slice(1)) print(`              ${other} (replica)`);
  print(`  API key     ${demo.apiKey}`);
  print(`  Workspace   ${demo.workspaceId}`);
  print(`  Workflow    ${demo.workflowId} (Demo: greet)`);
  print(`  Saved in    ${shown(demo.file)}${demo.created ? " (new)" : ""}`);
  if (logDir) print(`  Logs        ${shown(logDir)}/<process>.log (--verbose streams them here)`);
  print();
  print("Run the demo workflow:");
  print(`  curl -sS -X POST ${url}/api/executeWorkflow \\`);
  print(`    -H ${shellQuote(`x-api-key: ${demo.apiKey}`)} -H 'Content-Type: application/json' \\`);
  print(`    -d ${shellQuote(body)}`);
  print();
  print("Then read its log:");
  print(
    `  curl -sS ${shellQuote(`${url}/api/v1/logs?workspaceId=${demo.workspaceId}`)} -H ${shellQuote(`x-api-key: ${demo.apiKey}`)}`,
  );
  print();
  print("Press Ctrl-C to stop.");
  // Runs until a signal stops the stack.
  return new Promise<number>(() => {});
}

function printUsage(usage: string): number {
  print(usage);
  return 0;
}

/** `flowplane <group> <sub> …`: runs the named subcommand, or explains what the group offers. */
function runSubcommand(
  group: string,
  rest: string[],
  commands: Record<string, (args: string[]) => Promise<number> | number>,
  usage: string,
): Promise<number> | number {
  const [sub, ...args] = rest;
  // Own keys only: "constructor" or "__proto__" must not resolve to Object's members.
  const command = sub !== undefined && Object.hasOwn(commands, sub) ? commands[sub] : undefined;
  if (command) return command(args);
  if (sub === "--help" || sub === "-h") return printUsage(usage);
  throw new UsageError(
    sub ? `unknown ${group} command ${JSON.stringify(sub)}` : `missing ${group} command`,
    usage,
  );
}

/** A gateway command, with Ctrl-C aborting it (logs --follow, run --watch end with exit code 0). */
function gatewayRun(command: NonNullable<ReturnType<typeof gatewayCommand>>): Promise<number> {
  const controller = new AbortController();
  process.once("SIGINT", () => {
    controller.abort();
    // A second Ctrl-C leaves at once.
    process.once("SIGINT", () => process.exit(130));
  });
  return runGatewayCommand(command, processIo(controller.signal));
}

async function run(argv: string[]): Promise<number> {
  const viaGateway = gatewayCommand(argv);
  if (viaGateway) return gatewayRun(viaGateway);
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
      throw new UsageError("missing command", MAIN_USAGE);
    case "--help":
    case "-h":
    case "help":
      return printUsage(MAIN_USAGE);
    case "dev":
      return dev(rest);
    case "migrate":
      return migrate(rest);
    case "tenant":
      return runSubcommand("tenant", rest, { create: tenantCreate }, TENANT_USAGE);
    case "token":
      // Only the operator form of create and the group's help reach here (see gatewayCommand).
      return runSubcommand(
        "token",
        rest,
        { create: tokenCreate },
        `${TOKEN_GATEWAY_USAGE}\n\n${TOKEN_USAGE}`,
      );
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`, MAIN_USAGE);
  }
}

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`flowplane: ${err.message}\n\n${err.usage}\n`);
      process.exit(EXIT.usage);
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`flowplane: ${err.message}\n`);
      process.exit(EXIT.usage);
    }
    if (err instanceof CommandError) {
      process.stderr.write(`flowplane: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    // Expected failures (our own, a service's answer, a stack that would not start) without a stack trace.
    // Programming errors keep their stack; the rest (a service's answer, a stack that would not
    // start) are explained by their message.
    const expected = !(
      err instanceof TypeError ||
      err instanceof ReferenceError ||
      err instanceof RangeError ||
      err instanceof SyntaxError
    );
    const message =
      err instanceof Error ? (expected ? err.message : (err.stack ?? err.message)) : String(err);
    process.stderr.write(`flowplane: ${message}\n`);
    process.exit(1);
  },
);
