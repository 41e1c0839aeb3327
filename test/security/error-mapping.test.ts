import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { toConnectError } from "../../services/platform/errors.js";

/** Text PostgreSQL cannot store is the caller's bad input, whichever entry point it came through. */
describe("PostgreSQL text errors", () => {
  for (const code of ["22021", "22P05"]) {
    it(`maps SQLSTATE ${code} to InvalidArgument, not Internal`, () => {
      const err = Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), { code });
      const mapped = toConnectError(err);
      expect(mapped.code).toBe(Code.InvalidArgument);
      expect(mapped.rawMessage).toMatch(/cannot be stored/);
    });
  }

  it("still maps other database errors to Internal", () => {
    const err = Object.assign(new Error("division by zero"), { code: "22012" });
    expect(toConnectError(err).code).toBe(Code.Internal);
  });
});
