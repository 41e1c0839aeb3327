import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";

/**
 * Channel secrets (webhook secrets, Slack URLs) are stored as AES-256-GCM boxes:
 * "v1.<iv b64url>.<tag b64url>.<ciphertext b64url>", with the subscription id as associated data so
 * a box copied onto another subscription does not open.
 */

/** Used when FLOWPLANE_ENCRYPTION_KEY is unset: fine on a laptop, never in production. */
export const DEV_ENCRYPTION_KEY_TEXT = "flowplane-dev-encryption-key-do-not-use-in-production";

/** The 32-byte key from FLOWPLANE_ENCRYPTION_KEY (64 hex digits or base64 of 32 bytes). */
export function parseEncryptionKey(text: string): Buffer {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, "hex");
  const decoded = Buffer.from(text, "base64");
  if (decoded.length === 32 && /^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return decoded;
  throw new Error("FLOWPLANE_ENCRYPTION_KEY must be 32 bytes as 64 hex digits or base64");
}

export function devEncryptionKey(): Buffer {
  return createHash("sha256").update(DEV_ENCRYPTION_KEY_TEXT).digest();
}

export class SecretBox {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error("encryption key must be 32 bytes");
  }

  seal(plaintext: string, boundTo: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, iv);
    cipher.setAAD(Buffer.from(boundTo));
    const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return ["v1", iv, cipher.getAuthTag(), ciphertext]
      .map((p) => (typeof p === "string" ? p : p.toString("base64url")))
      .join(".");
  }

  open(box: string, boundTo: string): string {
    const [version, iv, tag, ciphertext] = box.split(".");
    if (version !== "v1" || !iv || !tag || ciphertext === undefined) throw new Error("malformed secret box");
    const decipher = createDecipheriv("aes-256-gcm", this.key, Buffer.from(iv, "base64url"));
    decipher.setAAD(Buffer.from(boundTo));
    decipher.setAuthTag(Buffer.from(tag, "base64url"));
    return Buffer.concat([decipher.update(Buffer.from(ciphertext, "base64url")), decipher.final()]).toString(
      "utf8",
    );
  }
}
