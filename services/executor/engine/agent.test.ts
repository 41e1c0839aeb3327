import type { JsonObject } from "@bufbuild/protobuf";
import { toJson } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { echoAnswer, type LlmServer, startLlmServer } from "../../../test/helpers/llm-server.js";
import { TraceSpanSchema } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { agentHistoryFromSpans } from "./agent.js";
import { costOfSpans } from "./cost.js";
import { compileWorkflow } from "./definition.js";
import {
  checkWorkflowInput,
  DEFAULT_ENGINE_SETTINGS,
  type EngineDependencies,
  type EngineSettings,
  runWorkflow,
} from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { traceSpanMessage } from "./trace.js";
import { blockJson as b, graphState } from "./workflow-fixtures.js";

const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 1 });
let llm: LlmServer;
let settings: EngineSettings;

beforeAll(async () => {
  llm = await startLlmServer({ apiKey: "sk-test" });
  settings = {
    ...DEFAULT_ENGINE_SETTINGS,
    llm: {
      ...DEFAULT_ENGINE_SETTINGS.llm,
      baseUrl: llm.baseUrl,
      apiKey: "sk-test",
      prices: { "gpt-test": { inputPerMTokUsd: 1_000, outputPerMTokUsd: 2_000 } },
    },
  };
});

afterAll(async () => {
  await sandbox.close();
  await llm.close();
});

function agentWorkflow(config: JsonObject = {}) {
  return compileWorkflow(
    graphState(
      [
        b.input([{ name: "question", type: "string", required: true }]),
        b.of("chat", "agent", {
          model: "gpt-test",
          systemPrompt: "You answer questions about {{ input.question.size() }}-letter topics.",
          userPrompt: "Q: {{ input.question }}",
          temperature: 0.2,
          ...config,
        }),
        b.output("out", "Answer", "blocks.chat.content"),
      ],
      [
        ["start", "chat"],
        ["chat", "out"],
      ],
    ),
  );
}

async function run(
  workflow: ReturnType<typeof agentWorkflow>,
  question: string,
  deps: Partial<EngineDependencies> = {},
) {
  const input = { question };
  return runWorkflow(workflow, input, checkWorkflowInput(workflow, input), { sandbox, settings, ...deps });
}

describe("agent block", () => {
  it("sends system prompt, history and the rendered user prompt, and records tokens and cost", async () => {
    const workflow = agentWorkflow();
    const history = new Map([["chat", [{ user: "Q: earlier", assistant: "an earlier answer" }]]]);
    const result = await run(workflow, "tides", { history });
    expect(result.status).toBe("success");
    const request = llm.requests.at(-1)!;
    const messages = [
      { role: "system", content: "You answer questions about 5-letter topics." },
      { role: "user", content: "Q: earlier" },
      { role: "assistant", content: "an earlier answer" },
      { role: "user", content: "Q: tides" },
    ];
    expect(request).toMatchObject({ model: "gpt-test", temperature: 0.2, messages });
    expect(result.output).toEqual({ Answer: "echo: Q: tides (history: 2)" });

    // The server counts words: 6 + 2 + 3 + 2 in the prompt, the answer's in the completion.
    const prompt = 13;
    const completion = echoAnswer(messages).split(" ").length;
    const span = result.spans.find((s) => s.blockId === "chat")!;
    expect(span).toMatchObject({
      model: "gpt-test",
      tokens: { prompt, completion, total: prompt + completion },
      input: { model: "gpt-test", userPrompt: "Q: tides", historyTurns: 1 },
      output: { content: "echo: Q: tides (history: 2)", model: "gpt-test" },
    });
    expect(span.cost!.input).toBeCloseTo((prompt * 1_000) / 1e6, 9);
    expect(span.cost!.output).toBeCloseTo((completion * 2_000) / 1e6, 9);

    const cost = costOfSpans(result.spans, 0.0005);
    expect(cost.total).toBeCloseTo(0.0005 + (prompt * 1_000 + completion * 2_000) / 1e6, 9);
    expect(cost.models["gpt-test"]?.tokens).toEqual({ prompt, completion, total: prompt + completion });
  });

  it("reads its history back from stored spans: the same block's successful turns, oldest first", async () => {
    const workflow = agentWorkflow();
    const first = await run(workflow, "one");
    const second = await run(workflow, "two");
    const stored = [first, second].map((r) =>
      r.spans.map((s) => toJson(TraceSpanSchema, traceSpanMessage(s))),
    );
    const history = agentHistoryFromSpans(stored);
    expect(history.get("chat")).toEqual([
      { user: "Q: one", assistant: "echo: Q: one (history: 0)" },
      { user: "Q: two", assistant: "echo: Q: two (history: 0)" },
    ]);
    const third = await run(workflow, "three", { history });
    expect(third.output.Answer).toBe("echo: Q: three (history: 4)");
    const limited = await run(workflow, "four", {
      history,
      settings: { ...settings, llm: { ...settings.llm, historyTurns: 1 } },
    });
    expect(limited.output.Answer).toBe("echo: Q: four (history: 2)");
  });

  it("fails on an endpoint error, a rejected key and a missing endpoint", async () => {
    const failing = await run(agentWorkflow({ model: "fail-500" }), "x");
    expect(failing.status).toBe("error");
    expect(failing.error).toMatch(/^block chat: the LLM endpoint answered 500: .*model exploded/);
    const unauthorized = await run(agentWorkflow(), "x", {
      settings: { ...settings, llm: { ...settings.llm, apiKey: "wrong" } },
    });
    expect(unauthorized.error).toMatch(/^block chat: the LLM endpoint answered 401/);
    const unconfigured = await run(agentWorkflow(), "x", { settings: DEFAULT_ENGINE_SETTINGS });
    expect(unconfigured.error).toBe("block chat: no LLM endpoint is configured (EXECUTOR_LLM_BASE_URL)");
    expect(unconfigured.spans.find((s) => s.blockId === "chat")).toMatchObject({
      status: "error",
      input: { userPrompt: "Q: x" },
    });
  });

  it.each([
    [{ model: "" }, 'block "chat": an agent block needs config.model'],
    [{ userPrompt: undefined }, 'block "chat": an agent block needs config.userPrompt'],
    [{ userPrompt: "{{ input. }}" }, 'block "chat": config.userPrompt: {{ input. }} does not compile'],
    [{ temperature: 7 }, "config.temperature must be a number from 0 to 2"],
  ])("rejects the definition %j", (config, message) => {
    const clean = Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined)) as JsonObject;
    const workflow = () =>
      compileWorkflow(
        graphState(
          [
            b.input(),
            b.of("chat", "agent", {
              model: "m",
              userPrompt: "hi",
              ...clean,
              ...("userPrompt" in config && config.userPrompt === undefined ? { userPrompt: null } : {}),
            }),
            b.output("out", "Answer", "1"),
          ],
          [
            ["start", "chat"],
            ["chat", "out"],
          ],
        ),
      );
    expect(workflow).toThrow(message);
  });
});
