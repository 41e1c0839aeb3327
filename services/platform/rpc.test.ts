import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { Health, ServingStatus } from "./health.js";
import { createRpcClient } from "./rpc.js";

/** An h2c Health server refusing (RST_STREAM REFUSED_STREAM, as a draining server does) its first `refuse` streams. */
async function refusingServer(refuse: number): Promise<{ url: string; served: () => number; close(): void }> {
  const handler = connectNodeAdapter({
    routes(router) {
      router.service(Health, {
        check: () => ({ status: ServingStatus.SERVING }),
        async *watch() {},
      });
    },
  });
  let seen = 0;
  let served = 0;
  const server = http2.createServer((req, res) => {
    if (seen++ < refuse) {
      req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    served++;
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    served: () => served,
    close: () => server.close(),
  };
}

describe("RPC client and refused streams", () => {
  let close: (() => void) | undefined;
  afterEach(() => close?.());

  it("retries a refused stream once: the server never processed it", async () => {
    const server = await refusingServer(1);
    close = server.close;
    const client = createRpcClient(Health, server.url, { timeoutMs: 5_000 });
    expect((await client.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    expect(server.served()).toBe(1);
  });

  it("reports a stream refused twice as Unavailable, not Internal", async () => {
    const server = await refusingServer(2);
    close = server.close;
    const client = createRpcClient(Health, server.url, { timeoutMs: 5_000 });
    await expect(client.check({ service: "" })).rejects.toMatchObject({ code: Code.Unavailable });
    expect(server.served()).toBe(0);
  });
});
