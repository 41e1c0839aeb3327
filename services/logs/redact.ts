import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

export const REDACTED = "[redacted]";

// Keys whose values are credentials, compared without case, "-" or "_": apiKey, api_key, x-api-key,
// secret, clientSecret, password, token, accessToken, authorization, credentials, privateKey, …
const SECRET_KEY = /(apikey|secret|password|passwd|token|authorization|credential|privatekey|cookie)/;

function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key.toLowerCase().replace(/[-_\s]/g, ""));
}

function redactValue(value: JsonValue): JsonValue {
  if (Array.isArray(value)) {
    // Header lists such as [{key: "Authorization", value: "Bearer …"}] name the secret in a sibling.
    return value.map((item) => redactValue(item));
  }
  if (value !== null && typeof value === "object") return redactObject(value);
  return value;
}

function redactObject(obj: JsonObject): JsonObject {
  const out: JsonObject = {};
  const namesSecret = ["key", "name", "header"].some(
    (k) => typeof obj[k] === "string" && isSecretKey(obj[k]),
  );
  for (const [key, value] of Object.entries(obj)) {
    if (isSecretKey(key) && value !== null && value !== "") out[key] = REDACTED;
    else if (namesSecret && key === "value") out[key] = REDACTED;
    else out[key] = redactValue(value);
  }
  return out;
}

/**
 * A WorkflowState (proto JSON) with every block config value under a secret-looking key replaced by
 * "[redacted]", at any depth (headers objects and key/value header lists included).
 */
export function redactWorkflowState(state: JsonObject): JsonObject {
  const blocks = state.blocks;
  if (blocks === null || typeof blocks !== "object" || Array.isArray(blocks)) return state;
  const redactedBlocks: JsonObject = {};
  for (const [id, block] of Object.entries(blocks)) {
    if (block === null || typeof block !== "object" || Array.isArray(block)) {
      redactedBlocks[id] = block;
      continue;
    }
    const config = block.config;
    redactedBlocks[id] =
      config !== null && typeof config === "object" && !Array.isArray(config)
        ? { ...block, config: redactObject(config) }
        : block;
  }
  return { ...state, blocks: redactedBlocks };
}
