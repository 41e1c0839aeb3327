/** `flowplane workflow push FILE`: a new workflow, or the next version of one. */
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { paths } from "../../client/index.js";
import {
  type CliIo,
  CommandError,
  EXIT,
  EXIT_CODES_HELP,
  expectData,
  GATEWAY_OPTIONS_HELP,
  gatewayFrom,
  note,
  onePositional,
  parseGatewayArgs,
  printJson,
  UsageError,
  writeLine,
} from "./common.js";

type WorkflowState =
  paths["/api/v1/workflows/{id}/versions"]["post"]["requestBody"]["content"]["application/json"];

export const WORKFLOW_PUSH_USAGE = `Usage: flowplane workflow push FILE [--workflow WORKFLOW_ID] [--name NAME] [--description TEXT]
                              [--folder ID] [--json] [--api-key KEY] [--url URL] [--data-dir DIR]

Publishes the workflow definition in FILE (the seeds' workflowState JSON: blocks, edges, loops,
parallels) through the gateway: as a new workflow (version 1), or with --workflow as that
workflow's next version. Prints the workflow id. The key needs workflows:write.

Options:
  --workflow ID       publish a new version of this workflow instead of creating one
  --name NAME         name of a new workflow (default: FILE's name without .json)
  --description TEXT  description of a new workflow
  --folder ID         folder of a new workflow
${GATEWAY_OPTIONS_HELP}

${EXIT_CODES_HELP}`;

export async function workflowPush(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(
    args,
    {
      workflow: { type: "string" },
      name: { type: "string" },
      description: { type: "string" },
      folder: { type: "string" },
    },
    WORKFLOW_PUSH_USAGE,
  );
  const file = onePositional(positionals, "FILE", WORKFLOW_PUSH_USAGE);
  if (values.workflow && (values.name || values.description || values.folder)) {
    throw new UsageError(
      "--name, --description and --folder apply to a new workflow, not --workflow",
      WORKFLOW_PUSH_USAGE,
    );
  }
  let state: WorkflowState;
  try {
    state = JSON.parse(await readFile(path.resolve(io.cwd ?? process.cwd(), file), "utf8")) as WorkflowState;
  } catch (err) {
    throw new CommandError(`${file}: not a readable JSON file (${(err as Error).message})`, EXIT.usage);
  }
  const gateway = await gatewayFrom(io, values, WORKFLOW_PUSH_USAGE);
  if (values.workflow) {
    const id = values.workflow;
    const version = await expectData(gateway, () =>
      gateway.client.POST("/api/v1/workflows/{id}/versions", { params: { path: { id } }, body: state }),
    );
    if (values.json) printJson(io, version);
    else {
      writeLine(io, id);
      note(io, `workflow ${id} version ${version.version} published`);
    }
    return EXIT.ok;
  }
  const created = await expectData(gateway, () =>
    gateway.client.POST("/api/v1/workflows", {
      body: {
        name: values.name ?? path.basename(file).replace(/\.json$/i, ""),
        ...(values.description ? { description: values.description } : {}),
        ...(values.folder ? { folderId: values.folder } : {}),
        state,
      },
    }),
  );
  if (values.json) printJson(io, created);
  else {
    writeLine(io, created.id);
    note(io, `workflow ${created.id} version ${created.latestVersion} published`);
  }
  return EXIT.ok;
}
