import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  blockedAddressReason,
  MAX_RESPONSE_BODY_BYTES,
  OutboundRefusedError,
  OutboundTimeoutError,
  safeFetch,
  safeFetchWithResolver,
} from "./outbound.js";

interface Received {
  method: string;
  url: string;
  host: string | undefined;
  body: string;
}

let server: http.Server;
let port = 0;
const received: Received[] = [];
const hangingResponses: http.ServerResponse[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({
        method: req.method ?? "",
        url: req.url ?? "",
        host: req.headers.host,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      if (req.url === "/redirect") {
        res.writeHead(302, { location: `http://127.0.0.1:${port}/target` }).end("moved");
      } else if (req.url === "/hang") {
        hangingResponses.push(res);
      } else if (req.url === "/big") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("x".repeat(MAX_RESPONSE_BODY_BYTES * 4));
      } else {
        res.writeHead(201, { "x-answer": "42" }).end(`echo:${Buffer.concat(chunks).toString("utf8")}`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const res of hangingResponses) res.destroy();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const strict = { timeoutMs: 5_000, allowPrivate: false } as const;

describe("safeFetch refusals", () => {
  it.each([
    "http://127.0.0.1/",
    "http://127.9.9.9/",
    "http://[::1]/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://100.127.255.255/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://2130706433/", // 127.0.0.1 as one decimal number
    "http://0x7f000001/",
    "http://localhost/",
  ])("refuses %s", async (url) => {
    await expect(safeFetch(url, strict)).rejects.toBeInstanceOf(OutboundRefusedError);
  });

  it("refuses a name that resolves to loopback, before connecting", async () => {
    const before = received.length;
    await expect(safeFetch(`http://localhost:${port}/`, strict)).rejects.toThrow(/loopback/);
    expect(received.length).toBe(before);
  });

  it("refuses a name when any of its addresses is private", async () => {
    const resolver = async () => [
      { address: "93.184.216.34", family: 4 as const },
      { address: "10.0.0.5", family: 4 as const },
    ];
    await expect(safeFetchWithResolver(resolver, "http://mixed.example/", strict)).rejects.toThrow(
      /10\.0\.0\.5/,
    );
  });

  it("refuses other schemes, credentials and garbage", async () => {
    await expect(safeFetch("file:///etc/passwd", strict)).rejects.toBeInstanceOf(OutboundRefusedError);
    await expect(safeFetch("ftp://example.com/", strict)).rejects.toBeInstanceOf(OutboundRefusedError);
    await expect(safeFetch("http://user:pw@example.com/", strict)).rejects.toBeInstanceOf(
      OutboundRefusedError,
    );
    await expect(safeFetch("not a url", strict)).rejects.toBeInstanceOf(OutboundRefusedError);
  });

  it("classifies public addresses as allowed", () => {
    expect(blockedAddressReason("93.184.216.34")).toBeUndefined();
    expect(blockedAddressReason("8.8.8.8")).toBeUndefined();
    expect(blockedAddressReason("172.32.0.1")).toBeUndefined();
    expect(blockedAddressReason("100.128.0.1")).toBeUndefined();
    expect(blockedAddressReason("2606:4700:4700::1111")).toBeUndefined();
    expect(blockedAddressReason("::ffff:8.8.8.8")).toBeUndefined();
    expect(blockedAddressReason("172.15.255.255")).toBeUndefined();
  });
});

describe("safeFetch with allowPrivate", () => {
  const permissive = { timeoutMs: 5_000, allowPrivate: true } as const;

  it("sends the request to loopback and returns status, headers and body", async () => {
    const result = await safeFetch(`http://127.0.0.1:${port}/hook?x=1`, {
      ...permissive,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"a":1}',
    });
    expect(result.status).toBe(201);
    expect(result.headers["x-answer"]).toBe("42");
    expect(result.body).toBe('echo:{"a":1}');
    expect(received.at(-1)).toMatchObject({ method: "POST", url: "/hook?x=1", body: '{"a":1}' });
  });

  it("connects to the vetted address once, keeping the name as Host (DNS rebinding fails)", async () => {
    let lookups = 0;
    // A rebinding resolver: first answer is the test server, any later answer would be elsewhere.
    const resolver = async () => {
      lookups += 1;
      return [{ address: lookups === 1 ? "127.0.0.1" : "192.0.2.1", family: 4 as const }];
    };
    const result = await safeFetchWithResolver(resolver, `http://hooks.test:${port}/rebind`, permissive);
    expect(result.status).toBe(201);
    expect(lookups).toBe(1);
    expect(received.at(-1)).toMatchObject({ url: "/rebind", host: `hooks.test:${port}` });
  });

  it("does not follow redirects", async () => {
    const before = received.length;
    const result = await safeFetch(`http://127.0.0.1:${port}/redirect`, permissive);
    expect(result.status).toBe(302);
    expect(result.headers.location).toBe(`http://127.0.0.1:${port}/target`);
    expect(received.length).toBe(before + 1);
    expect(received.at(-1)?.url).toBe("/redirect");
  });

  it("enforces the timeout over the whole request", async () => {
    const started = Date.now();
    await expect(
      safeFetch(`http://127.0.0.1:${port}/hang`, { ...permissive, timeoutMs: 300 }),
    ).rejects.toThrow(OutboundTimeoutError);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it("honours a caller's abort signal", async () => {
    const controller = new AbortController();
    const pending = safeFetch(`http://127.0.0.1:${port}/hang`, {
      ...permissive,
      timeoutMs: 30_000,
      signal: controller.signal,
    });
    controller.abort(new Error("shutting down"));
    await expect(pending).rejects.toThrow(/shutting down/);
  });

  it("reads at most 64 KiB of the body", async () => {
    const result = await safeFetch(`http://127.0.0.1:${port}/big`, permissive);
    expect(result.status).toBe(200);
    expect(result.body.length).toBe(MAX_RESPONSE_BODY_BYTES);
  });

  it("reports a network error for a closed port", async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const error = await safeFetch(`http://127.0.0.1:${closedPort}/`, permissive).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(OutboundRefusedError);
    expect((error as { code?: string }).code).toBe("ECONNREFUSED");
  });
});
