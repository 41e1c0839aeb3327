import { createHash, randomInt } from "node:crypto";
import { crc32 } from "node:zlib";

/**
 * API keys: `fp_<env>_<30 random base62><6 base62 of CRC-32 of everything before it>`. The checksum
 * lets a typo or a truncated paste be refused without touching the database, and lets secret
 * scanners recognise real keys.
 */
export const KEY_ENVS = ["live", "test"] as const;
export type KeyEnv = (typeof KEY_ENVS)[number];

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LENGTH = 30;
const CHECKSUM_LENGTH = 6;
/** How much of the key is stored and shown in clear ("fp_live_AbCd"). */
export const VISIBLE_PREFIX_LENGTH = 12;

const KEY_PATTERN = new RegExp(
  `^fp_(live|test)_([0-9A-Za-z]{${RANDOM_LENGTH}})([0-9A-Za-z]{${CHECKSUM_LENGTH}})$`,
);

/** CRC-32 as exactly six base62 digits (62^6 > 2^32), left-padded with "0". */
function checksumOf(text: string): string {
  let value = crc32(text);
  let out = "";
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62[value % 62]! + out;
    value = Math.floor(value / 62);
  }
  return out;
}

export function generateApiKey(env: KeyEnv): string {
  let random = "";
  // randomInt is uniform (no modulo bias) and cryptographically strong.
  for (let i = 0; i < RANDOM_LENGTH; i++) random += BASE62[randomInt(62)]!;
  const body = `fp_${env}_${random}`;
  return body + checksumOf(body);
}

export interface ParsedApiKey {
  env: KeyEnv;
  key: string;
}

/** The key's parts when it is well formed and its checksum matches; undefined otherwise. */
export function parseApiKey(key: string): ParsedApiKey | undefined {
  const match = KEY_PATTERN.exec(key);
  if (!match) return undefined;
  const [, env, random, checksum] = match;
  if (checksumOf(`fp_${env}_${random}`) !== checksum) return undefined;
  return { env: env as KeyEnv, key };
}

/** What the database stores instead of the key: SHA-256 hex of the full key. */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

export function visiblePrefix(key: string): string {
  return key.slice(0, VISIBLE_PREFIX_LENGTH);
}
