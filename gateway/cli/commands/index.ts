/**
 * The CLI commands that go through the gateway with an API key, runnable in-process (tests pass
 * their own CliIo). main.ts adds the operator commands (dev, migrate, tenant, token create --workspace).
 */
import { type CliIo, CommandError, EXIT, HelpRequested, UsageError } from "./common.js";
import { logsCommand } from "./logs.js";
import {
  NOTIFICATION_USAGE,
  notificationCreate,
  notificationDeliveries,
  notificationList,
} from "./notifications.js";
import { runCommand } from "./run.js";
import {
  TOKEN_GATEWAY_USAGE,
  tokenCreateViaGateway,
  tokenEvents,
  tokenList,
  tokenRevoke,
  tokenRotate,
} from "./tokens.js";
import { WORKFLOW_PUSH_USAGE, workflowPush } from "./workflow.js";

export { type CliIo, CommandError, EXIT, EXIT_CODES_HELP, processIo, UsageError } from "./common.js";

type Command = (args: string[], io: CliIo) => Promise<number>;

/** `flowplane <group> <sub> …`: runs the named subcommand, or explains what the group offers. */
function subcommand(
  group: string,
  rest: string[],
  commands: Record<string, Command>,
  usage: string,
  io: CliIo,
) {
  const [sub, ...args] = rest;
  // Own keys only: "constructor" or "__proto__" must not resolve to Object's members.
  const command = sub !== undefined && Object.hasOwn(commands, sub) ? commands[sub] : undefined;
  if (command) return command(args, io);
  if (sub === "--help" || sub === "-h") {
    io.stdout.write(`${usage}\n`);
    return Promise.resolve(EXIT.ok);
  }
  throw new UsageError(
    sub ? `unknown ${group} command ${JSON.stringify(sub)}` : `missing ${group} command`,
    usage,
  );
}

/**
 * The gateway command `argv` names, or undefined when it is not one (main.ts handles the rest).
 * `token create` with --workspace or --auth-url is the operator form and is left to main.ts.
 */
export function gatewayCommand(argv: string[]): ((io: CliIo) => Promise<number>) | undefined {
  const [command, ...rest] = argv;
  switch (command) {
    case "run":
      return (io) => runCommand(rest, io);
    case "logs":
      return (io) => logsCommand(rest, io);
    case "workflow":
      return (io) => subcommand("workflow", rest, { push: workflowPush }, WORKFLOW_PUSH_USAGE, io);
    case "notification":
    case "notifications":
      return (io) =>
        subcommand(
          "notification",
          rest,
          { create: notificationCreate, list: notificationList, deliveries: notificationDeliveries },
          NOTIFICATION_USAGE,
          io,
        );
    case "token": {
      const [sub, ...args] = rest;
      const operator = args.some(
        (a) =>
          a === "--workspace" ||
          a.startsWith("--workspace=") ||
          a === "--auth-url" ||
          a.startsWith("--auth-url="),
      );
      if (sub === "create" && (operator || args.includes("--help") || args.includes("-h"))) return undefined;
      if (sub === undefined || sub === "--help" || sub === "-h") return undefined;
      return (io) =>
        subcommand(
          "token",
          rest,
          {
            create: tokenCreateViaGateway,
            list: tokenList,
            rotate: tokenRotate,
            revoke: tokenRevoke,
            events: tokenEvents,
          },
          TOKEN_GATEWAY_USAGE,
          io,
        );
    }
    default:
      return undefined;
  }
}

/** Runs a gateway command and turns its errors into a message on stderr and an exit code. */
export async function runGatewayCommand(command: (io: CliIo) => Promise<number>, io: CliIo): Promise<number> {
  try {
    return await command(io);
  } catch (err) {
    if (err instanceof HelpRequested) {
      io.stdout.write(`${err.usage}\n`);
      return EXIT.ok;
    }
    if (err instanceof UsageError) {
      io.stderr.write(`flowplane: ${err.message}\n\n${err.usage}\n`);
      return EXIT.usage;
    }
    if (err instanceof CommandError) {
      io.stderr.write(`flowplane: ${err.message}\n`);
      return err.exitCode;
    }
    throw err;
  }
}

/** In-process entry for tests: argv as after `flowplane`. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const command = gatewayCommand(argv);
  if (!command) throw new Error(`not a gateway command: ${argv.join(" ")}`);
  return runGatewayCommand(command, io);
}
