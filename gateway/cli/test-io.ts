import type { CliIo } from "./commands/common.js";

/** A CliIo that records what a command writes; for the CLI's in-process tests. */
export interface CapturedIo extends CliIo {
  out(): string;
  err(): string;
}

export function captureIo(
  env: Record<string, string | undefined>,
  opts: { tty?: boolean; signal?: AbortSignal } = {},
): CapturedIo {
  let out = "";
  let err = "";
  return {
    stdout: {
      write(text: string) {
        out += text;
        return true;
      },
    },
    stderr: {
      write(text: string) {
        err += text;
        return true;
      },
      isTTY: opts.tty ?? false,
    },
    // No dev.json of the machine's own `npm start` leaks into a test.
    env: { FLOWPLANE_URL: undefined, FLOWPLANE_API_KEY: undefined, FLOWPLANE_WORKSPACE: undefined, ...env },
    cwd: "/nonexistent-flowplane-test-dir",
    signal: opts.signal,
    out: () => out,
    err: () => err,
  };
}
