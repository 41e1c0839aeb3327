import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, type Tenant } from "../../test/fuzz/harness.js";
import { waitFor } from "../../test/helpers/infra.js";
import { EXIT, runCli } from "./commands/index.js";
import { demoInput, demoOutput, demoWorkflowJson } from "./demo-workflow.js";
import { captureIo } from "./test-io.js";

/**
 * The gateway commands of the CLI run in-process (runCli with a captured CliIo) against the whole
 * stack in one process: real services, PostgreSQL and NATS.
 */
describe("flowplane gateway commands against the in-process stack", () => {
  let stack: Stack;
  let tenant: Tenant;
  let dir: string;
  let workflowId: string;

  /** Runs `flowplane …` with the tenant's admin key unless env says otherwise. */
  async function cli(args: string[], env: Record<string, string | undefined> = {}, signal?: AbortSignal) {
    const io = captureIo(
      {
        FLOWPLANE_URL: stack.baseUrl,
        FLOWPLANE_API_KEY: tenant.adminKey,
        FLOWPLANE_WORKSPACE: tenant.id,
        ...env,
      },
      { signal },
    );
    const code = await runCli(args, io);
    return { code, stdout: io.out(), stderr: io.err(), io };
  }

  beforeAll(async () => {
    stack = await startStack();
    tenant = await stack.newTenant("cli commands");
    dir = await mkdtemp(path.join(tmpdir(), "flowplane-cli-"));
    await writeFile(path.join(dir, "greet.json"), JSON.stringify(demoWorkflowJson));
  }, 60_000);

  afterAll(async () => {
    await stack?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("--help on any gateway command prints its usage to stdout and exits 0 without calling the gateway", async () => {
    const commands = [
      ["run"],
      ["workflow", "push"],
      ["logs"],
      ["token", "list"],
      ["token", "revoke"],
      ["notification", "create"],
    ];
    for (const command of commands) {
      // An unreachable gateway: a help answer must not need one.
      const help = await cli([...command, "--help"], { FLOWPLANE_URL: "http://127.0.0.1:9" });
      expect(help.code, command.join(" ")).toBe(EXIT.ok);
      expect(help.stdout, command.join(" ")).toMatch(/^Usage: flowplane /);
      expect(help.stderr, command.join(" ")).toBe("");
    }
  });

  it("workflow push creates a workflow, then a next version (human and --json)", async () => {
    const file = path.join(dir, "greet.json");
    const created = await cli(["workflow", "push", file, "--name", "Greet"]);
    expect(created.stderr).toMatch(/^flowplane: workflow wf_\S+ version 1 published\n$/);
    expect(created.code).toBe(EXIT.ok);
    workflowId = created.stdout.trim();
    expect(workflowId).toMatch(/^wf_/);

    const next = await cli(["workflow", "push", file, "--workflow", workflowId, "--json"]);
    expect(next.code).toBe(EXIT.ok);
    expect(JSON.parse(next.stdout)).toMatchObject({ workflowId, version: 2 });

    const missing = await cli(["workflow", "push", path.join(dir, "nope.json")]);
    expect(missing.code).toBe(EXIT.usage);
    const unknown = await cli(["workflow", "push", file, "--workflow", "wf_unknown"]);
    expect(unknown.code).toBe(EXIT.notFound);
    expect(unknown.stderr).toMatch(/^flowplane: 404: /);
  });

  it("run prints the output (human) or the gateway's answer (--json); exit codes for 401, 404, 400, usage", async () => {
    const human = await cli(["run", workflowId, "--input", "First Name=John", "--input", "Age=30"]);
    expect(human.code).toBe(EXIT.ok);
    expect(JSON.parse(human.stdout)).toEqual(demoOutput);
    expect(human.stderr).toMatch(
      /^flowplane: success; execution exec_\S+, conversation conv_\S+, 1 credit\(s\)\n$/,
    );

    const json = await cli([
      "run",
      workflowId,
      "--input-json",
      JSON.stringify(demoInput),
      "--version",
      "1",
      "--json",
    ]);
    expect(json.code).toBe(EXIT.ok);
    expect(JSON.parse(json.stdout)).toMatchObject({ output: demoOutput, status: "success", creditUsage: 1 });
    expect(json.stderr).toBe("");

    const badKey = await cli(["run", workflowId, "--input", "First Name=A"], {
      FLOWPLANE_API_KEY: "fp_test_nope",
    });
    expect(badKey.code).toBe(EXIT.auth);
    expect(badKey.stderr).toMatch(/^flowplane: 401: /);
    const flagBeatsEnv = await cli(["run", workflowId, "--api-key", "fp_test_nope"]);
    expect(flagBeatsEnv.code).toBe(EXIT.auth);

    const notFound = await cli(["run", "wf_unknown", "--input", "First Name=A"]);
    expect(notFound.code).toBe(EXIT.notFound);
    const badInput = await cli(["run", workflowId, "--input", "First Name=A", "--input", "Age=not a number"]);
    expect(badInput.code).toBe(EXIT.failed);
    expect(badInput.stderr).toMatch(/^flowplane: 400: .*Age/);

    for (const args of [
      ["run"],
      ["run", workflowId, "--version", "0"],
      ["run", workflowId, "--input", "novalue"],
      ["run", workflowId, "--bogus"],
    ]) {
      const usage = await cli(args);
      expect({ args, code: usage.code }).toEqual({ args, code: EXIT.usage });
      expect(usage.stderr).toMatch(/Usage: flowplane run/);
    }
    const noKey = await cli(["run", workflowId], { FLOWPLANE_API_KEY: undefined });
    expect(noKey.code).toBe(EXIT.usage);
    expect(noKey.stderr).toMatch(/no API key/);
    const unreachable = await cli(["run", workflowId], { FLOWPLANE_URL: "http://127.0.0.1:9" });
    expect(unreachable.code).toBe(EXIT.unavailable);
    expect(unreachable.stderr).toMatch(/could not be reached/);
  });

  it("a run that fails exits 1 and says why", async () => {
    const failing = path.join(dir, "fail.json");
    await writeFile(
      failing,
      JSON.stringify({
        blocks: {
          start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
          boom: { id: "boom", type: "function", name: "Boom", config: { code: 'throw new Error("boom")' } },
          out: { id: "out", type: "output", name: "Result", config: { value: "blocks.boom" } },
        },
        edges: [
          { id: "e1", source: "start", target: "boom" },
          { id: "e2", source: "boom", target: "out" },
        ],
      }),
    );
    const pushed = await cli(["workflow", "push", failing]);
    expect(pushed.code).toBe(EXIT.ok);
    const run = await cli(["run", pushed.stdout.trim()]);
    expect(run.code).toBe(EXIT.failed);
    expect(run.stderr).toMatch(/the run failed: .*boom/);
  });

  it("run --background prints the execution id; with --watch it follows the run to its end", async () => {
    const queued = await cli(["run", workflowId, "--input", "First Name=Bea", "--background"]);
    expect(queued.code).toBe(EXIT.ok);
    expect(queued.stdout.trim()).toMatch(/^exec_/);
    expect(queued.stderr).toMatch(/queued; conversation conv_/);

    const watched = await cli([
      "run",
      workflowId,
      "--input",
      "First Name=Bea",
      "--background",
      "--watch",
      "--json",
    ]);
    expect(watched.code).toBe(EXIT.ok);
    const events = watched.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(events[0]).toMatchObject({ event: "queued", status: "queued", creditUsage: 0 });
    expect(events.at(-1)).toMatchObject({
      status: "success",
      output: { Greeting: "Hello Bea", "Next Age": 1 },
    });
  });

  it("run --watch shows the blocks of a real run as they finish, then its output", async () => {
    const watched = await cli(["run", workflowId, "--input", "First Name=Watch", "--watch"]);
    expect(watched.stderr).toMatch(/running exec_\S+ \(conversation conv_\S+\)/);
    expect(watched.code).toBe(EXIT.ok);
    expect(JSON.parse(watched.stdout)).toEqual({ Greeting: "Hello Watch", "Next Age": 1 });
    for (const name of ["Greet", "Greeting", "Next Age"])
      expect(watched.stderr).toMatch(new RegExp(`✓ ${name} \\(\\w+\\) success`));

    const json = await cli(["run", workflowId, "--input", "First Name=Watch", "--watch", "--json"]);
    const events = json.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { event: string });
    expect(events[0]!.event).toBe("started");
    expect(events.at(-1)).toMatchObject({ event: "result", status: "success" });
    expect(events.filter((e) => e.event === "block").length).toBeGreaterThanOrEqual(3);
  });

  it("logs lists the workspace's runs as a table or JSON, with filters", async () => {
    const table = await waitFor("the CLI's runs in the logs", async () => {
      const res = await cli(["logs", "--trigger", "manual", "--workflow", workflowId]);
      return res.code === EXIT.ok && res.stdout.split("\n").length >= 5 ? res : undefined;
    });
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^STARTED\s+LEVEL\s+TRIGGER\s+WORKFLOW\s+EXECUTION\s+DURATION\s+COST$/);
    // Aligned: every row's EXECUTION column starts where the header's does.
    const column = header!.indexOf("EXECUTION");
    for (const row of rows) {
      expect(row.slice(column)).toMatch(/^exec_/);
      expect(row).toContain("manual");
    }

    const json = await cli(["logs", "--json", "--level", "error", "--limit", "5"]);
    expect(json.code).toBe(EXIT.ok);
    const page = JSON.parse(json.stdout);
    expect(page.data.length).toBeGreaterThanOrEqual(1);
    for (const log of page.data) expect(log.level).toBe("error");
    expect(page).toHaveProperty("limits");

    const noWorkspace = await cli(["logs"], { FLOWPLANE_WORKSPACE: undefined });
    expect(noWorkspace.code).toBe(EXIT.usage);
    const foreign = await cli(["logs", "--workspace", "ws_someone_else"]);
    expect(foreign.code).toBe(EXIT.auth);
    expect((await cli(["logs", "--level", "warn"])).code).toBe(EXIT.usage);
    expect((await cli(["logs", "--since", "yesterday"])).code).toBe(EXIT.usage);
  });

  it("logs --follow prints a run made after it started, once, and stops on abort with exit 0", async () => {
    const controller = new AbortController();
    const io = captureIo(
      { FLOWPLANE_URL: stack.baseUrl, FLOWPLANE_API_KEY: tenant.adminKey, FLOWPLANE_WORKSPACE: tenant.id },
      { signal: controller.signal },
    );
    const following = runCli(["logs", "--follow", "--interval", "100", "--json"], io);
    await waitFor("the follower to start", () =>
      io.err().includes("following logs since") ? true : undefined,
    );
    const before = await cli(["logs", "--json", "--limit", "1000"]);
    const known = new Set(JSON.parse(before.stdout).data.map((l: { executionId: string }) => l.executionId));

    const run = await cli(["run", workflowId, "--input", "First Name=Follow", "--json"]);
    const executionId = JSON.parse(run.stdout).executionId as string;
    await waitFor("the followed run", () => (io.out().includes(executionId) ? true : undefined), 20_000);
    controller.abort();
    expect(await following).toBe(EXIT.ok);

    const printed = io
      .out()
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { executionId: string });
    expect(printed.filter((l) => l.executionId === executionId)).toHaveLength(1);
    // Only runs that started after the follower did.
    for (const log of printed) expect(known.has(log.executionId)).toBe(false);
  });

  it("token create, list, rotate (with grace), events and revoke", async () => {
    const created = await cli([
      "token",
      "create",
      "--name",
      "ci reader",
      "--scope",
      "logs:read",
      "--purpose",
      "CLI test",
    ]);
    expect(created.code).toBe(EXIT.ok);
    const key = created.stdout.trim();
    expect(key).toMatch(/^fp_/);
    expect(created.stderr).toMatch(/will not be shown again/);

    const listed = await cli(["token", "list"]);
    expect(listed.code).toBe(EXIT.ok);
    const [header, ...rows] = listed.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^ID\s+NAME\s+KIND\s+SCOPES\s+PREFIX\s+STATE\s+LAST USED\s+EXPIRES$/);
    const row = rows.find((r) => r.includes("ci reader"));
    expect(row).toMatch(/^tok_\S+\s+ci reader\s+app\s+logs:read\s+\S+\s+active/);
    const tokenId = row!.split(/\s+/)[0]!;
    const listedJson = JSON.parse((await cli(["token", "list", "--json"])).stdout);
    expect(listedJson.data.find((t: { id: string }) => t.id === tokenId)).toMatchObject({
      name: "ci reader",
    });
    expect(JSON.stringify(listedJson)).not.toContain(key);

    const rotated = await cli(["token", "rotate", tokenId, "--grace", "60", "--json"]);
    expect(rotated.code).toBe(EXIT.ok);
    const rotatedBody = JSON.parse(rotated.stdout);
    expect(rotatedBody.key).toMatch(/^fp_/);
    expect(rotatedBody.key).not.toBe(key);
    expect(rotated.stderr).toMatch(/keeps working until/);
    // The old key still works during the grace period, as does the new one.
    expect((await cli(["logs", "--limit", "1"], { FLOWPLANE_API_KEY: key })).code).toBe(EXIT.ok);
    expect((await cli(["logs", "--limit", "1"], { FLOWPLANE_API_KEY: rotatedBody.key })).code).toBe(EXIT.ok);
    // A logs:read key cannot manage tokens.
    expect((await cli(["token", "list"], { FLOWPLANE_API_KEY: key })).code).toBe(EXIT.auth);

    const revoked = await cli(["token", "revoke", tokenId]);
    expect(revoked.code).toBe(EXIT.ok);
    expect(revoked.stdout).toMatch(new RegExp(`^revoked ${tokenId} \\(ci reader\\) at \\d{4}-`));
    await waitFor("the revoked key to be refused", async () =>
      (await cli(["logs", "--limit", "1"], { FLOWPLANE_API_KEY: rotatedBody.key })).code === EXIT.auth
        ? true
        : undefined,
    );

    const events = await cli(["token", "events", tokenId]);
    expect(events.code).toBe(EXIT.ok);
    for (const event of ["created", "rotated", "revoked"]) expect(events.stdout).toContain(event);

    expect((await cli(["token", "rotate", `tok_${"0".repeat(26)}`])).code).toBe(EXIT.notFound);
    expect((await cli(["token", "revoke"])).code).toBe(EXIT.usage);
    expect((await cli(["token", "rotate", tokenId, "--grace", "-5"])).code).toBe(EXIT.usage);
    expect((await cli(["token", "bogus"])).code).toBe(EXIT.usage);
    expect((await cli(["token", "create", "--name", "x"])).code).toBe(EXIT.usage);
  });

  it("notification create, list and deliveries", async () => {
    const created = await cli([
      "notification",
      "create",
      "--webhook",
      "https://hooks.example.com/flowplane",
      "--secret",
      "s3cret",
      "--name",
      "errors to hook",
      "--level",
      "error",
      "--workflow",
      workflowId,
      "--include",
      "finalOutput",
    ]);
    expect(created.stderr).toMatch(/webhook subscription sub_\S+ created/);
    expect(created.code).toBe(EXIT.ok);
    const id = created.stdout.trim();

    const alert = await cli([
      "notification",
      "create",
      "--email",
      "ops@example.com",
      "--alert",
      "consecutiveFailures:3",
      "--json",
    ]);
    expect(alert.code).toBe(EXIT.ok);
    expect(JSON.parse(alert.stdout)).toMatchObject({
      channel: "email",
      email: { to: ["ops@example.com"] },
      alertRule: { type: "consecutiveFailures", threshold: 3 },
      allWorkflows: true,
    });

    const listed = await cli(["notification", "list"]);
    expect(listed.code).toBe(EXIT.ok);
    const [header, ...rows] = listed.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^ID\s+NAME\s+CHANNEL\s+TARGET\s+WORKFLOWS\s+ALERT\s+ENABLED$/);
    expect(rows.find((r) => r.startsWith(id))).toMatch(
      new RegExp(
        `errors to hook\\s+webhook\\s+https://hooks.example.com/flowplane\\s+${workflowId}\\s+-\\s+yes$`,
      ),
    );
    expect(listed.stdout).not.toContain("s3cret");
    const listedJson = JSON.parse((await cli(["notification", "list", "--json"])).stdout);
    expect(listedJson.data).toHaveLength(2);

    const deliveries = await cli(["notification", "deliveries", id]);
    expect(deliveries).toMatchObject({ code: EXIT.ok, stdout: "no deliveries\n" });
    expect(JSON.parse((await cli(["notification", "deliveries", id, "--json"])).stdout)).toMatchObject({
      data: [],
    });
    expect((await cli(["notification", "deliveries", "sub_unknown"])).code).toBe(EXIT.notFound);

    const twoChannels = await cli([
      "notification",
      "create",
      "--webhook",
      "https://a.example.com",
      "--slack",
      "https://b.example.com",
    ]);
    expect(twoChannels.code).toBe(EXIT.usage);
    expect(
      (await cli(["notification", "create", "--email", "a@example.com", "--alert", "nope:1"])).code,
    ).toBe(EXIT.usage);
    expect((await cli(["notification", "create", "--webhook", "not a url"])).code).toBe(EXIT.failed);
  });
});
