/**
 * Refusals the gateway decides itself, after the key was authorized, reach the token's audit trail
 * (issue 3), without the answer ever waiting for the auth service to record them.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AuthService,
  Plan,
  TenantService,
  TokenKind,
} from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { createRpcClient } from "../services/platform/rpc.js";
import { waitFor } from "../test/helpers/infra.js";
import { clientsFor, listenGateway, type Stack, startStack } from "../test/helpers/stack.js";
import type { GatewayClients } from "./clients.js";

// Only auth runs: every request here is refused at the gateway, executor and logs are never reached.
let stack: Stack;
let authUrl: string;
const gateways: { close(): Promise<unknown> }[] = [];

async function startGateway(clients: GatewayClients): Promise<string> {
  const { gateway, baseUrl } = await listenGateway(clients, { config: { bodyLimitBytes: 64 * 1024 } });
  gateways.push(gateway);
  return baseUrl;
}

async function workspaceWithKeys() {
  const { tenant } = await createRpcClient(TenantService, authUrl).createTenant({
    name: "ws",
    plan: Plan.PRO,
  });
  const tokens = createRpcClient(AuthService, authUrl);
  const admin = await tokens.createToken({ tenantId: tenant!.id, kind: TokenKind.ADMIN, name: "admin" });
  const app = await tokens.createToken({
    tenantId: tenant!.id,
    kind: TokenKind.APP,
    name: "reader",
    scopes: ["logs:read", "tokens:read"],
  });
  return { tenantId: tenant!.id, adminKey: admin.secret, appId: app.token!.id, appKey: app.secret };
}

beforeAll(async () => {
  stack = await startStack({
    services: ["auth"],
    serviceDefaults: false,
    gateway: { bodyLimitBytes: 64 * 1024 },
    tenant: false,
  });
  authUrl = stack.authUrl;
});

afterAll(async () => {
  for (const gateway of gateways) await gateway.close();
  await stack?.stop();
});

describe("refusals decided by the gateway", () => {
  it("appear in the token's audit trail: another workspace's id, an app key on an admin route", async () => {
    const baseUrl = stack.baseUrl;
    const ws = await workspaceWithKeys();
    const other = await workspaceWithKeys();

    const foreign = await fetch(`${baseUrl}/api/v1/logs?workspaceId=${other.tenantId}`, {
      headers: { "x-api-key": ws.appKey },
    });
    expect(foreign.status).toBe(403);
    const notAdmin = await fetch(`${baseUrl}/api/v1/tenants/${ws.tenantId}`, {
      headers: { "x-api-key": ws.appKey },
    });
    expect(notAdmin.status).toBe(403);

    const events = await waitFor("both refusals audited", async () => {
      const res = await fetch(`${baseUrl}/api/v1/tokens/${ws.appId}/events`, {
        headers: { "x-api-key": ws.adminKey },
      });
      const body = (await res.json()) as { data: { event: string; reason: string; actor: string }[] };
      const refusals = body.data.filter((e) => e.event === "refused_permission");
      return refusals.length >= 2 ? refusals : undefined;
    });
    expect(events.map((e) => e.reason)).toEqual([
      "GET /api/v1/logs: workspaceId does not match the API key's workspace",
      "GET /api/v1/tenants/:id: an admin key is required",
    ]);
    expect(events.every((e) => e.actor === ws.appId)).toBe(true);
    // Nothing leaks into the other workspace's tokens.
    const otherEvents = await createRpcClient(AuthService, authUrl).listTokenEvents({
      tenantId: other.tenantId,
      tokenId: other.appId,
    });
    expect(otherEvents.events.map((e) => e.event)).toEqual(["created"]);
  });

  it("answers at once even when recording the refusal hangs or fails", async () => {
    const clients = clientsFor({ auth: authUrl });
    const hanging: GatewayClients = {
      ...clients,
      auth: { ...clients.auth, recordRefusal: () => new Promise<never>(() => {}) },
    };
    const failing: GatewayClients = {
      ...clients,
      auth: { ...clients.auth, recordRefusal: () => Promise.reject(new Error("auth is down")) },
    };
    const ws = await workspaceWithKeys();
    for (const baseUrl of [await startGateway(hanging), await startGateway(failing)]) {
      const started = Date.now();
      const res = await fetch(`${baseUrl}/api/v1/tenants/${ws.tenantId}`, {
        headers: { "x-api-key": ws.appKey },
      });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: string }).error).toBe("an admin key is required");
      expect(Date.now() - started).toBeLessThan(5_000);
    }
  });

  it("refuses to record anything but a 401 or 403 of the tenant's own token", async () => {
    const ws = await workspaceWithKeys();
    const other = await workspaceWithKeys();
    const client = createRpcClient(AuthService, authUrl);
    await expect(
      client.recordRefusal({ tenantId: ws.tenantId, tokenId: ws.appId, status: 500, reason: "x" }),
    ).rejects.toThrow(/status must be 401 or 403/);
    await expect(
      client.recordRefusal({ tenantId: ws.tenantId, tokenId: other.appId, status: 403, reason: "x" }),
    ).rejects.toThrow(/not found/);
  });
});
