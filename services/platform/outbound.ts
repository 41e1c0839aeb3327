import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import net from "node:net";

/**
 * Outbound HTTP to URLs that tenants supply (webhooks, Slack, the executor's api block), guarded
 * against SSRF: the host is resolved once, every address it resolves to must be public, and the
 * socket connects to the vetted address (so a DNS answer that changes between the check and the
 * connection cannot reach an internal address). Redirects are never followed.
 */

/** The target is not allowed (private/reserved address, bad URL or scheme). Never worth retrying. */
export class OutboundRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OutboundRefusedError";
  }
}

/** The whole request (connect, send, response, body) did not finish within `timeoutMs`. */
export class OutboundTimeoutError extends Error {
  constructor(timeoutMs: number) {
    super(`request timed out after ${timeoutMs} ms`);
    this.name = "OutboundTimeoutError";
  }
}

export interface SafeFetchInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  timeoutMs: number;
  allowPrivate: boolean;
  signal?: AbortSignal;
}

export interface SafeFetchResponse {
  status: number;
  headers: Record<string, string>;
  /** At most MAX_RESPONSE_BODY_BYTES of the body, decoded as UTF-8. */
  body: string;
}

export const MAX_RESPONSE_BODY_BYTES = 64 * 1024;

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name to every address it has; replaceable in tests. */
export type HostResolver = (hostname: string) => Promise<ResolvedAddress[]>;

const systemResolver: HostResolver = async (hostname) => {
  const answers = await dns.promises.lookup(hostname, { all: true, verbatim: true });
  return answers.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

// --- address classification -------------------------------------------------------------------

function ipv4ToInt(address: string): number {
  const parts = address.split(".").map(Number);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

const BLOCKED_IPV4: ReadonlyArray<readonly [string, number, string]> = [
  ["0.0.0.0", 8, "unspecified/this network"],
  ["10.0.0.0", 8, "private (RFC 1918)"],
  ["100.64.0.0", 10, "carrier-grade NAT"],
  ["127.0.0.0", 8, "loopback"],
  ["169.254.0.0", 16, "link-local"],
  ["172.16.0.0", 12, "private (RFC 1918)"],
  ["192.0.0.0", 24, "IETF protocol assignments"],
  ["192.0.2.0", 24, "documentation"],
  ["192.168.0.0", 16, "private (RFC 1918)"],
  ["198.18.0.0", 15, "benchmarking"],
  ["198.51.100.0", 24, "documentation"],
  ["203.0.113.0", 24, "documentation"],
  ["224.0.0.0", 4, "multicast"],
  ["240.0.0.0", 4, "reserved/broadcast"],
];

function blockedIpv4Reason(address: string): string | undefined {
  const value = ipv4ToInt(address);
  for (const [base, prefix, reason] of BLOCKED_IPV4) {
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    if ((value & mask) >>> 0 === (ipv4ToInt(base) & mask) >>> 0) return reason;
  }
  return undefined;
}

/** The 8 16-bit groups of a valid IPv6 address (embedded dotted IPv4 allowed). */
function ipv6Groups(address: string): number[] {
  let text = address.split("%")[0]!;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const v4 = ipv4ToInt(dotted[1]!);
    text = `${text.slice(0, dotted.index)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : Array(8 - headGroups.length - tailGroups.length).fill("0");
  return [...headGroups, ...zeros, ...tailGroups].map((g) => Number.parseInt(g, 16));
}

function embeddedIpv4(groups: number[], from: number): string {
  const hi = groups[from]!;
  const lo = groups[from + 1]!;
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

function blockedIpv6Reason(address: string): string | undefined {
  const g = ipv6Groups(address);
  const firstSixZero = g.slice(0, 6).every((x) => x === 0);
  if (firstSixZero && g[6] === 0 && g[7] === 0) return "unspecified";
  if (firstSixZero && g[6] === 0 && g[7] === 1) return "loopback";
  // IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96): judge the IPv4 inside.
  const mapped = g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff;
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0);
  if (mapped || firstSixZero || nat64) {
    const inner = blockedIpv4Reason(embeddedIpv4(g, 6));
    return inner ? `${inner} (IPv4 embedded in IPv6)` : undefined;
  }
  // 6to4 (2002::/16) carries an IPv4 address in groups 1-2.
  if (g[0] === 0x2002) {
    const inner = blockedIpv4Reason(embeddedIpv4(g, 1));
    return inner ? `${inner} (6to4)` : undefined;
  }
  const first = g[0]!;
  if ((first & 0xfe00) === 0xfc00) return "unique local (fc00::/7)";
  if ((first & 0xffc0) === 0xfe80) return "link-local (fe80::/10)";
  if ((first & 0xffc0) === 0xfec0) return "site-local (fec0::/10)";
  if ((first & 0xff00) === 0xff00) return "multicast";
  if (first === 0x2001 && g[1] === 0x0db8) return "documentation";
  return undefined;
}

/** Why an IP address is not a public unicast destination, or undefined when it is one. */
export function blockedAddressReason(address: string): string | undefined {
  const family = net.isIP(address);
  if (family === 4) return blockedIpv4Reason(address);
  if (family === 6) return blockedIpv6Reason(address);
  return "not an IP address";
}

// --- the request ---------------------------------------------------------------------------------

/** Keep-alive agents; sockets in the strict ones were only ever opened to vetted public addresses. */
const agents = {
  strict: {
    http: new http.Agent({ keepAlive: true }),
    https: new https.Agent({ keepAlive: true }),
  },
  permissive: {
    http: new http.Agent({ keepAlive: true }),
    https: new https.Agent({ keepAlive: true }),
  },
};

async function vetTarget(url: URL, allowPrivate: boolean, resolve: HostResolver): Promise<ResolvedAddress> {
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const literal = net.isIP(host);
  const addresses: ResolvedAddress[] = literal
    ? [{ address: host, family: literal === 6 ? 6 : 4 }]
    : await resolve(host);
  if (addresses.length === 0) throw new OutboundRefusedError(`host ${host} resolves to no address`);
  if (!allowPrivate) {
    // Every answer must be public: otherwise a name could pair a public and an internal address.
    for (const { address } of addresses) {
      const reason = blockedAddressReason(address);
      if (reason) {
        throw new OutboundRefusedError(`refusing to connect to ${host} (${address}: ${reason})`);
      }
    }
  }
  return addresses[0]!;
}

function flattenHeaders(headers: http.IncomingHttpHeaders): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    flat[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return flat;
}

/** safeFetch with a replaceable resolver (tests use it to simulate DNS answers). */
export async function safeFetchWithResolver(
  resolve: HostResolver,
  rawUrl: string,
  init: SafeFetchInit,
): Promise<SafeFetchResponse> {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new OutboundRefusedError("invalid URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new OutboundRefusedError(`unsupported URL scheme ${url.protocol}`);
  }
  if (url.username || url.password) throw new OutboundRefusedError("URLs with credentials are not allowed");

  const deadline = AbortSignal.timeout(init.timeoutMs);
  const signal = init.signal ? AbortSignal.any([deadline, init.signal]) : deadline;
  const abortError = (): Error =>
    deadline.aborted
      ? new OutboundTimeoutError(init.timeoutMs)
      : (init.signal?.reason ?? new Error("aborted"));
  if (signal.aborted) throw abortError();

  const vetted = await Promise.race([
    vetTarget(url, init.allowPrivate, resolve),
    new Promise<never>((_, reject) =>
      signal.addEventListener("abort", () => reject(abortError()), { once: true }),
    ),
  ]);
  if (signal.aborted) throw abortError();

  const isHttps = url.protocol === "https:";
  const agentSet = init.allowPrivate ? agents.permissive : agents.strict;
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  // The lookup hook makes the socket connect to the vetted address while the URL's host stays the
  // Host header and the TLS server name (so certificates are checked against the name).
  const lookup: net.LookupFunction = (_name, options, callback) => {
    if ((options as dns.LookupOptions).all) {
      (callback as unknown as (err: null, addresses: dns.LookupAddress[]) => void)(null, [vetted]);
    } else {
      callback(null, vetted.address, vetted.family);
    }
  };

  return await new Promise<SafeFetchResponse>((resolvePromise, reject) => {
    const headers: Record<string, string> = { ...init.headers };
    if (init.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === "content-length")) {
      headers["content-length"] = String(Buffer.byteLength(init.body));
    }
    const options: https.RequestOptions = {
      method: init.method ?? "GET",
      protocol: url.protocol,
      hostname,
      port: url.port || undefined,
      path: `${url.pathname}${url.search}`,
      headers,
      agent: isHttps ? agentSet.https : agentSet.http,
      lookup,
      ...(isHttps && !net.isIP(hostname) ? { servername: hostname } : {}),
    };
    const request = (isHttps ? https : http).request(options, (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        signal.removeEventListener("abort", onAbort);
        resolvePromise({
          status: response.statusCode ?? 0,
          headers: flattenHeaders(response.headers),
          body: Buffer.concat(chunks).toString("utf8"),
        });
      };
      response.on("data", (chunk: Buffer) => {
        if (size >= MAX_RESPONSE_BODY_BYTES) return;
        const room = MAX_RESPONSE_BODY_BYTES - size;
        chunks.push(chunk.length > room ? chunk.subarray(0, room) : chunk);
        size += Math.min(chunk.length, room);
        if (size >= MAX_RESPONSE_BODY_BYTES) {
          // Enough read: drop the rest rather than download an unbounded body.
          response.destroy();
          finish();
        }
      });
      response.on("end", finish);
      response.on("error", (err) => {
        if (!finished) reject(signal.aborted ? abortError() : err);
      });
    });
    const onAbort = (): void => {
      request.destroy(abortError());
    };
    signal.addEventListener("abort", onAbort, { once: true });
    request.on("error", (err) => {
      signal.removeEventListener("abort", onAbort);
      reject(signal.aborted ? abortError() : err);
    });
    if (init.body !== undefined) request.write(init.body);
    request.end();
  });
}

/**
 * POST/GET/... to a tenant-supplied URL. Refuses (OutboundRefusedError) loopback, RFC 1918,
 * link-local, CGNAT, IPv6 loopback/ULA/link-local, unspecified and multicast targets unless
 * `allowPrivate`; throws OutboundTimeoutError when the whole exchange exceeds `timeoutMs`; returns
 * 3xx responses as they are (no redirect is followed); reads at most 64 KiB of the body.
 */
export function safeFetch(url: string, init: SafeFetchInit): Promise<SafeFetchResponse> {
  return safeFetchWithResolver(systemResolver, url, init);
}
