import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import {
  type WorkflowState,
  WorkflowStateSchema,
} from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";

/** The demo workflow the launcher creates on first run (the workflowState JSON shape, DESIGN §5b). */
export const DEMO_WORKFLOW_NAME = "Demo: greet";
export const DEMO_WORKFLOW_DESCRIPTION =
  "Greets a person and tells their age next year. Input: First Name (text), Age (number).";

export const demoWorkflowJson: JsonObject = {
  blocks: {
    start: {
      id: "start",
      type: "input",
      name: "Input",
      config: {
        fields: [
          { name: "First Name", type: "string", required: true },
          { name: "Age", type: "number" },
        ],
      },
    },
    greet: {
      id: "greet",
      type: "function",
      name: "Greet",
      config: {
        code: 'return { greeting: "Hello " + input["First Name"], nextAge: (input.Age ?? 0) + 1 };',
      },
    },
    out_greeting: {
      id: "out_greeting",
      type: "output",
      name: "Greeting",
      config: { value: "blocks.greet.greeting" },
    },
    out_age: {
      id: "out_age",
      type: "output",
      name: "Next Age",
      config: { value: "blocks.greet.nextAge" },
    },
  },
  edges: [
    { id: "e1", source: "start", target: "greet" },
    { id: "e2", source: "greet", target: "out_greeting" },
    { id: "e3", source: "greet", target: "out_age" },
  ],
};

export const demoInput = { "First Name": "John", Age: 30 } satisfies JsonObject;
export const demoOutput = { Greeting: "Hello John", "Next Age": 31 } satisfies JsonObject;

export function demoWorkflowState(): WorkflowState {
  return fromJson(WorkflowStateSchema, demoWorkflowJson);
}
