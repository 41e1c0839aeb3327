#!/usr/bin/env node
// `npx flowplane`: registers tsx from this package (so it resolves from any cwd) and runs the CLI.
import { register } from "tsx/esm/api";

register();
await import("./main.ts");
