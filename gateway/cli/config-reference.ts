import { readFile, writeFile } from "node:fs/promises";
import { authService } from "../../services/auth/service.js";
import { executorService } from "../../services/executor/service.js";
import { logsService } from "../../services/logs/service.js";
import { notifierService } from "../../services/notifier/service.js";
import { commonSettings, type Setting } from "../../services/platform/config.js";
import { gatewaySettings } from "../config.js";

export const CONFIG_START = "<!-- config:start -->";
export const CONFIG_END = "<!-- config:end -->";

type Settings = Record<string, Setting<unknown>>;

/**
 * The configuration reference, rendered from the settings each process validates at start, so the
 * README cannot drift from what the code reads.
 */
export function renderConfigReference(): string {
  const readers = new Map<string, { setting: Setting<unknown>; readBy: string[] }>();
  const add = (process: string, settings: Settings) => {
    for (const setting of Object.values(settings)) {
      const entry = readers.get(setting.name) ?? { setting, readBy: [] };
      if (!entry.readBy.includes(process)) entry.readBy.push(process);
      readers.set(setting.name, entry);
    }
  };
  for (const def of [authService, executorService, logsService, notifierService]) {
    add(def.name, { ...commonSettings, ...(def.settings as Settings) });
  }
  add("gateway", gatewaySettings);

  const cell = (text: string) => text.replaceAll("|", "\\|").replaceAll("\n", " ");
  const rows = [...readers.values()]
    .sort((a, b) => a.readBy[0]!.localeCompare(b.readBy[0]!) || a.setting.name.localeCompare(b.setting.name))
    .map(({ setting, readBy }) => {
      const fallback =
        setting.defaultText === undefined
          ? "(required)"
          : setting.defaultText === ""
            ? "(empty)"
            : `\`${cell(setting.defaultText)}\``;
      return `| \`${setting.name}\` | ${readBy.join(", ")} | ${fallback} | ${cell(setting.description)} |`;
    });
  return ["| variable | read by | default | meaning |", "|---|---|---|---|", ...rows].join("\n");
}

/** The README with its configuration table regenerated between the markers. */
export function withConfigReference(readme: string): string {
  const start = readme.indexOf(CONFIG_START);
  const end = readme.indexOf(CONFIG_END);
  if (start < 0 || end < start)
    throw new Error(`README.md lacks the ${CONFIG_START} / ${CONFIG_END} markers`);
  return `${readme.slice(0, start + CONFIG_START.length)}\n${renderConfigReference()}\n${readme.slice(end)}`;
}

export async function updateReadmeConfigReference(readmePath: string): Promise<boolean> {
  const before = await readFile(readmePath, "utf8");
  const after = withConfigReference(before);
  if (after !== before) await writeFile(readmePath, after);
  return after !== before;
}
