import { randomBytes } from "node:crypto";

const CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz";

export type IdPrefix =
  | "ws"
  | "wf"
  | "exec"
  | "log"
  | "conv"
  | "tok"
  | "sub"
  | "dlv"
  | "evt"
  | "hook"
  | "sched";

let lastMs = 0;
let lastRandom: Buffer = Buffer.alloc(10);

/**
 * A prefixed, lexicographically sortable id (ULID layout: 48-bit ms time + 80 random bits, Crockford
 * base32). Within one millisecond the random part is incremented so ids from one process stay ordered.
 */
export function newId(prefix: IdPrefix, now = Date.now()): string {
  let random: Buffer;
  if (now === lastMs) {
    random = Buffer.from(lastRandom);
    for (let i = random.length - 1; i >= 0; i--) {
      const byte = random[i]!;
      if (byte === 0xff) {
        random[i] = 0;
        continue;
      }
      random[i] = byte + 1;
      break;
    }
  } else {
    random = randomBytes(10);
  }
  lastMs = now;
  lastRandom = random;
  return `${prefix}_${encodeTime(now)}${encodeBytes(random)}`;
}

function encodeTime(ms: number): string {
  let out = "";
  let value = ms;
  for (let i = 0; i < 10; i++) {
    out = CROCKFORD[value % 32]! + out;
    value = Math.floor(value / 32);
  }
  return out;
}

function encodeBytes(bytes: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += CROCKFORD[(value >>> (bits - 5)) & 31]!;
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += CROCKFORD[(value << (5 - bits)) & 31]!;
  return out;
}

const ID_PATTERN = /^[a-z]+_[0-9a-z]{26}$/;

/** True when `value` looks like an id with this prefix (cheap shape check before any lookup). */
export function isId(prefix: IdPrefix, value: string): boolean {
  return value.startsWith(`${prefix}_`) && ID_PATTERN.test(value);
}
