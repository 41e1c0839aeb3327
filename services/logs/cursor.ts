import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/**
 * The log cursor: `<payload>.<mac>`, both base64url without padding. The payload is JSON
 * `{"s": startedAt ISO-8601 with ms, "id": logId, "w": seen, "o": order, "q": query}` — the seed's
 * `{"s","id"}` position plus what makes it safe: `w` the highest ingestion sequence the issuing page
 * could see (ascending walks serve rows ingested later behind the position first), `o` and `q` the
 * order and filters it was issued for. The mac is HMAC-SHA256 of the payload text under
 * LOGS_CURSOR_SECRET, so a client can neither forge a position nor move a cursor to other filters.
 */
export interface LogCursor {
  startedAt: Date;
  id: string;
  /** Every row of the tenant with seq ≤ seen and a position ≤ (startedAt, id) was handed out. */
  seen: number;
  order: "asc" | "desc";
  /** Fingerprint of the filters (queryFingerprint). */
  query: string;
}

export class CursorError extends Error {}

const SEGMENT = /^[A-Za-z0-9_-]+$/;
const MAX_CURSOR_LENGTH = 1024;

export class CursorCodec {
  constructor(private readonly secret: string) {}

  private mac(payload: string): Buffer {
    return createHmac("sha256", this.secret).update(payload).digest();
  }

  encode(cursor: LogCursor): string {
    const payload = Buffer.from(
      JSON.stringify({
        s: cursor.startedAt.toISOString(),
        id: cursor.id,
        w: cursor.seen,
        o: cursor.order,
        q: cursor.query,
      }),
      "utf8",
    ).toString("base64url");
    return `${payload}.${this.mac(payload).toString("base64url")}`;
  }

  /** The position a cursor names; CursorError when it is not one this deployment issued. */
  decode(cursor: string): LogCursor {
    const [payload, mac, extra] = cursor.split(".");
    if (
      cursor.length > MAX_CURSOR_LENGTH ||
      extra !== undefined ||
      !payload ||
      !mac ||
      !SEGMENT.test(payload) ||
      !SEGMENT.test(mac)
    ) {
      throw new CursorError("cursor is invalid");
    }
    const expected = this.mac(payload);
    const given = Buffer.from(mac, "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new CursorError("cursor is invalid");
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
    } catch {
      throw new CursorError("cursor is invalid");
    }
    const { s, id, w, o, q } = (parsed ?? {}) as Record<string, unknown>;
    if (
      typeof s !== "string" ||
      typeof id !== "string" ||
      typeof w !== "number" ||
      !Number.isSafeInteger(w) ||
      (o !== "asc" && o !== "desc") ||
      typeof q !== "string"
    ) {
      throw new CursorError("cursor is invalid");
    }
    const startedAt = new Date(s);
    if (Number.isNaN(startedAt.getTime())) throw new CursorError("cursor is invalid");
    return { startedAt, id, seen: w, order: o, query: q };
  }
}

/** A stable fingerprint of a query's filters: same filters in any list order → same value. */
export function queryFingerprint(filters: Record<string, unknown>): string {
  const canonical = Object.keys(filters)
    .sort()
    .map((key) => {
      const value = filters[key];
      const normal = Array.isArray(value) ? [...new Set(value.map(String))].sort() : value;
      return [key, normal instanceof Date ? normal.toISOString() : (normal ?? null)];
    });
  return createHash("sha256").update(JSON.stringify(canonical)).digest("base64url").slice(0, 22);
}
