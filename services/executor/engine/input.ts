/** The `input` block: declares the workflow's input fields and validates a request's input against them. */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../platform/errors.js";
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { DefinitionProblem, describeBlock } from "./problems.js";

export const FIELD_TYPES = ["string", "number", "boolean", "object", "array"] as const;
export type FieldType = (typeof FIELD_TYPES)[number];

export interface InputField {
  name: string;
  type: FieldType;
  required: boolean;
}

export interface InputBlockConfig {
  fields: InputField[];
}

function isFieldType(value: unknown): value is FieldType {
  return typeof value === "string" && (FIELD_TYPES as readonly string[]).includes(value);
}

/** Reads `config.fields`; throws DefinitionProblem naming the first bad field. */
export function readInputConfig(block: Block): InputBlockConfig {
  const where = describeBlock(block);
  const raw = block.config?.fields;
  if (raw === undefined || raw === null) return { fields: [] };
  if (!Array.isArray(raw)) throw new DefinitionProblem(`${where}: config.fields must be a list`);
  const fields: InputField[] = [];
  const seen = new Set<string>();
  raw.forEach((item, index) => {
    if (item === null || typeof item !== "object" || Array.isArray(item)) {
      throw new DefinitionProblem(`${where}: config.fields[${index}] must be an object`);
    }
    const { name, type, required } = item;
    if (typeof name !== "string" || name.trim() === "") {
      throw new DefinitionProblem(`${where}: config.fields[${index}] needs a name`);
    }
    if (!isFieldType(type)) {
      throw new DefinitionProblem(
        `${where}: input field "${name}" has unknown type ${JSON.stringify(type ?? null)} (expected ${FIELD_TYPES.join(", ")})`,
      );
    }
    if (required !== undefined && required !== null && typeof required !== "boolean") {
      throw new DefinitionProblem(`${where}: input field "${name}": required must be true or false`);
    }
    if (seen.has(name)) throw new DefinitionProblem(`${where}: duplicate input field name "${name}"`);
    seen.add(name);
    fields.push({ name, type, required: required === true });
  });
  return { fields };
}

const ARTICLE: Record<FieldType, string> = {
  string: "a string",
  number: "a number",
  boolean: "a boolean",
  object: "an object",
  array: "an array",
};

function hasType(value: JsonValue, type: FieldType): boolean {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number";
    case "boolean":
      return typeof value === "boolean";
    case "object":
      return value !== null && typeof value === "object" && !Array.isArray(value);
    case "array":
      return Array.isArray(value);
  }
}

/**
 * The request input checked against the fields: unknown keys, missing required fields and wrong
 * types are InvalidArgument naming the field. Returns only the declared fields that were given
 * (null counts as not given).
 */
export function validateWorkflowInput(config: InputBlockConfig, input: JsonObject): JsonObject {
  const declared = new Map(config.fields.map((f) => [f.name, f]));
  for (const key of Object.keys(input)) {
    if (!declared.has(key))
      throw new InvalidArgumentError(`input field "${key}" is not defined by the workflow`);
  }
  const validated: JsonObject = {};
  for (const field of config.fields) {
    const value = input[field.name];
    if (value === undefined || value === null) {
      if (field.required) throw new InvalidArgumentError(`input field "${field.name}" is required`);
      continue;
    }
    if (!hasType(value, field.type)) {
      throw new InvalidArgumentError(`input field "${field.name}" must be ${ARTICLE[field.type]}`);
    }
    validated[field.name] = value;
  }
  return validated;
}
