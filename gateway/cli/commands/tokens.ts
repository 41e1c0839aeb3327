/** `flowplane token create|list|rotate|revoke|events` through the gateway (the key needs tokens:*). */
import type { paths } from "../../client/index.js";
import {
  type CliIo,
  EXIT,
  EXIT_CODES_HELP,
  expectData,
  GATEWAY_OPTIONS_HELP,
  gatewayFrom,
  isoDate,
  note,
  onePositional,
  parseGatewayArgs,
  positiveInt,
  printJson,
  table,
  UsageError,
  writeLine,
} from "./common.js";

type Token = paths["/api/v1/tokens"]["get"]["responses"][200]["content"]["application/json"]["data"][number];

export const TOKEN_GATEWAY_USAGE = `Usage: flowplane token create --name NAME [--kind app|admin] [--scope SCOPE]... [--workflow WF]...
                             [--purpose TEXT] [--expires-at ISO] [--rate-limit N] [--json]
       flowplane token list [--json]
       flowplane token rotate TOKEN_ID [--grace SECONDS] [--json]
       flowplane token revoke TOKEN_ID [--json]
       flowplane token events TOKEN_ID [--json]

Manages the API keys of the key's workspace through the gateway (/api/v1/tokens): list and events
need tokens:read, the others tokens:write; no key can grant a scope it does not hold. A new or
rotated key is printed once (stdout) and never shown again. \`token create --workspace WS\` is the
operator form that talks to the auth service directly (see \`flowplane token create --help\`).

Options:
  --name, --kind, --scope, --workflow, --purpose, --expires-at   as for the operator form
  --rate-limit N      the key's own API calls per minute (narrower than the plan's)
  --grace SECONDS     rotate: the old key keeps working this long (default 0: it stops at once)
${GATEWAY_OPTIONS_HELP}

${EXIT_CODES_HELP}`;

function tokenRow(t: Token): Array<string | number | null | undefined> {
  const state = t.revokedAt
    ? "revoked"
    : t.expiresAt && Date.parse(t.expiresAt) <= Date.now()
      ? "expired"
      : "active";
  return [
    t.id,
    t.name,
    t.kind,
    t.kind === "admin" ? "(all)" : t.scopes.join(","),
    t.prefix,
    state,
    t.lastUsedAt,
    t.expiresAt,
  ];
}

const TOKEN_HEADERS = ["ID", "NAME", "KIND", "SCOPES", "PREFIX", "STATE", "LAST USED", "EXPIRES"];

/** `token create` through the gateway (the operator form with --workspace is in main.ts). */
export async function tokenCreateViaGateway(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(
    args,
    {
      name: { type: "string" },
      kind: { type: "string" },
      scope: { type: "string", multiple: true },
      workflow: { type: "string", multiple: true },
      purpose: { type: "string" },
      "expires-at": { type: "string" },
      "rate-limit": { type: "string" },
    },
    TOKEN_GATEWAY_USAGE,
  );
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, TOKEN_GATEWAY_USAGE);
  }
  const name = values.name?.trim();
  if (!name) throw new UsageError("--name is required", TOKEN_GATEWAY_USAGE);
  const kind = (values.kind ?? "app").toLowerCase();
  if (kind !== "app" && kind !== "admin")
    throw new UsageError("--kind must be app or admin", TOKEN_GATEWAY_USAGE);
  const scopes = (values.scope ?? [])
    .flatMap((s) => s.split(","))
    .map((s) => s.trim())
    .filter(Boolean);
  if (kind === "app" && scopes.length === 0) {
    throw new UsageError(
      "an app key needs at least one --scope (e.g. --scope workflows:execute)",
      TOKEN_GATEWAY_USAGE,
    );
  }
  const expiresAt = isoDate(values["expires-at"], "--expires-at", TOKEN_GATEWAY_USAGE);
  const rateLimit = positiveInt(values["rate-limit"], "--rate-limit", TOKEN_GATEWAY_USAGE);
  const gateway = await gatewayFrom(io, values, TOKEN_GATEWAY_USAGE);
  const { data } = await expectData(gateway, () =>
    gateway.client.POST("/api/v1/tokens", {
      body: {
        name,
        kind,
        ...(scopes.length ? { scopes } : {}),
        ...(values.workflow?.length ? { workflowIds: values.workflow } : {}),
        ...(values.purpose ? { purpose: values.purpose } : {}),
        ...(expiresAt ? { expiresAt } : {}),
        ...(rateLimit ? { rateLimitPerMinute: rateLimit } : {}),
      },
    }),
  );
  if (values.json) printJson(io, data);
  else writeLine(io, data.key ?? "");
  note(io, `this key (${data.id}) will not be shown again; store it now.`);
  return EXIT.ok;
}

export async function tokenList(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(args, { limit: { type: "string" } }, TOKEN_GATEWAY_USAGE);
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, TOKEN_GATEWAY_USAGE);
  }
  const gateway = await gatewayFrom(io, values, TOKEN_GATEWAY_USAGE);
  const tokens: Token[] = [];
  let cursor: string | undefined;
  // Every page: a workspace has few keys, and a partial list would mislead.
  do {
    const page = await expectData(gateway, () =>
      gateway.client.GET("/api/v1/tokens", {
        params: { query: { limit: "200", ...(cursor ? { cursor } : {}) } },
      }),
    );
    tokens.push(...page.data);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  if (values.json) printJson(io, { data: tokens });
  else writeLine(io, tokens.length ? table(TOKEN_HEADERS, tokens.map(tokenRow)) : "no tokens");
  return EXIT.ok;
}

export async function tokenRotate(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(args, { grace: { type: "string" } }, TOKEN_GATEWAY_USAGE);
  const id = onePositional(positionals, "TOKEN_ID", TOKEN_GATEWAY_USAGE);
  let grace: number | undefined;
  if (values.grace !== undefined) {
    grace = /^\d{1,9}$/.test(values.grace) ? Number(values.grace) : -1;
    if (grace < 0)
      throw new UsageError("--grace must be a number of seconds (0 or more)", TOKEN_GATEWAY_USAGE);
  }
  const gateway = await gatewayFrom(io, values, TOKEN_GATEWAY_USAGE);
  const { data } = await expectData(gateway, () =>
    gateway.client.POST("/api/v1/tokens/{id}/rotate", {
      params: { path: { id } },
      body: grace !== undefined ? { gracePeriodSeconds: grace } : {},
    }),
  );
  if (values.json) printJson(io, data);
  else writeLine(io, data.key ?? "");
  note(
    io,
    data.previousKeyExpiresAt
      ? `the old key of ${data.id} keeps working until ${data.previousKeyExpiresAt}; the new one will not be shown again.`
      : `the old key of ${data.id} stopped working; the new one will not be shown again.`,
  );
  return EXIT.ok;
}

export async function tokenRevoke(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(args, {}, TOKEN_GATEWAY_USAGE);
  const id = onePositional(positionals, "TOKEN_ID", TOKEN_GATEWAY_USAGE);
  const gateway = await gatewayFrom(io, values, TOKEN_GATEWAY_USAGE);
  const { data } = await expectData(gateway, () =>
    gateway.client.DELETE("/api/v1/tokens/{id}", { params: { path: { id } } }),
  );
  if (values.json) printJson(io, data);
  else writeLine(io, `revoked ${data.id} (${data.name}) at ${data.revokedAt ?? "now"}`);
  return EXIT.ok;
}

export async function tokenEvents(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(args, {}, TOKEN_GATEWAY_USAGE);
  const id = onePositional(positionals, "TOKEN_ID", TOKEN_GATEWAY_USAGE);
  const gateway = await gatewayFrom(io, values, TOKEN_GATEWAY_USAGE);
  const page = await expectData(gateway, () =>
    gateway.client.GET("/api/v1/tokens/{id}/events", { params: { path: { id } } }),
  );
  if (values.json) printJson(io, page);
  else {
    writeLine(
      io,
      page.data.length
        ? table(
            ["AT", "EVENT", "ACTOR", "REASON"],
            page.data.map((e) => [e.at, e.event, e.actor, e.reason]),
          )
        : "no events",
    );
  }
  return EXIT.ok;
}
