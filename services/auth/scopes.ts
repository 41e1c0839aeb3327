/** Every scope a token can hold (shared product decision). Admin tokens hold all of them. */
export const SCOPES = [
  "workflows:execute",
  "workflows:read",
  "workflows:write",
  "logs:read",
  "notifications:read",
  "notifications:write",
  "tokens:read",
  "tokens:write",
] as const;

export type Scope = (typeof SCOPES)[number];

const scopeSet: ReadonlySet<string> = new Set(SCOPES);

export function isScope(value: string): value is Scope {
  return scopeSet.has(value);
}
