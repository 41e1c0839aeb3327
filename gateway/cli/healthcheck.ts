/**
 * Container healthcheck: `node --import tsx gateway/cli/healthcheck.ts <url>` exits 0 when healthy.
 * A URL with a path (the gateway's http://host:8080/healthz) is checked with GET; a bare base URL
 * (a service's http://host:50051) with the gRPC health protocol (grpc.health.v1 Check).
 */
import { Health, ServingStatus } from "../../services/platform/health.js";
import { createRpcClient } from "../../services/platform/rpc.js";

const TIMEOUT_MS = 3_000;

async function healthy(target: URL): Promise<string | undefined> {
  if (target.pathname !== "/" && target.pathname !== "") {
    const response = await fetch(target, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    return response.ok ? undefined : `GET ${target} answered ${response.status}`;
  }
  const client = createRpcClient(Health, target.origin, { timeoutMs: TIMEOUT_MS });
  const { status } = await client.check({ service: "" });
  return status === ServingStatus.SERVING ? undefined : `${target.origin} is ${ServingStatus[status]}`;
}

const raw = process.argv[2];
let target: URL | undefined;
try {
  target = raw ? new URL(raw) : undefined;
} catch {
  target = undefined;
}
if (!target) {
  process.stderr.write("usage: healthcheck.ts <http://host:port | http://host:port/healthz>\n");
  process.exit(2);
}
healthy(target).then(
  (problem) => {
    if (problem) process.stderr.write(`unhealthy: ${problem}\n`);
    process.exit(problem ? 1 : 0);
  },
  (err: unknown) => {
    process.stderr.write(`unhealthy: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
