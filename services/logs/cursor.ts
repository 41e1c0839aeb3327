/**
 * The log cursor (DESIGN §5): base64url, without padding, of `{"s": startedAt ISO-8601 with ms, "id": logId}`,
 * the shape of seed 002's example `nextCursor`. Clients treat it as opaque.
 */
export interface LogCursor {
  startedAt: Date;
  id: string;
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const MAX_CURSOR_LENGTH = 512;

export function encodeLogCursor(cursor: LogCursor): string {
  return Buffer.from(JSON.stringify({ s: cursor.startedAt.toISOString(), id: cursor.id }), "utf8").toString(
    "base64url",
  );
}

/** The position a cursor names, or undefined when it is not one this service issued. */
export function decodeLogCursor(cursor: string): LogCursor | undefined {
  if (cursor.length > MAX_CURSOR_LENGTH || !BASE64URL.test(cursor)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const { s, id } = parsed as { s?: unknown; id?: unknown };
  if (typeof s !== "string" || typeof id !== "string" || id === "") return undefined;
  const startedAt = new Date(s);
  // Only the canonical form we write (UTC, milliseconds) is accepted, so positions compare exactly.
  if (Number.isNaN(startedAt.getTime()) || startedAt.toISOString() !== s) return undefined;
  return { startedAt, id };
}
