import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

/** Human-readable summaries of an event payload for email and Slack. */

export interface Summary {
  subject: string;
  lines: Array<[label: string, value: string]>;
}

function str(value: JsonValue | undefined): string {
  if (value === undefined || value === null) return "—";
  return typeof value === "string" ? value : JSON.stringify(value);
}

export function summarize(payload: JsonObject): Summary {
  const type = String(payload.type);
  const data = (payload.data ?? {}) as JsonObject;
  const alert = payload.alert as JsonObject | undefined;
  const lines: Array<[string, string]> = [];
  let subject: string;
  if (type === "notification.test") {
    subject = "Flowplane test notification";
    lines.push(["Notification", str(data.subscriptionId)], ["Message", str(data.message)]);
  } else if (type === "workflow.alert.no_activity") {
    subject = `Alert: no runs of workflow ${str(data.workflowId)} in ${str(data.inactivityHours)} h`;
    lines.push(["Workflow", str(data.workflowId)], ["Last run", str(data.lastExecutionAt)]);
  } else {
    const failed = data.status === "error";
    subject = alert
      ? `Alert: ${str(alert.message)}`
      : `Workflow ${str(data.workflowId)} ${failed ? "failed" : "succeeded"}`;
    lines.push(
      ["Workflow", str(data.workflowId)],
      ["Execution", str(data.executionId)],
      ["Status", str(data.status)],
      ["Trigger", str(data.trigger)],
      ["Started", str(data.startedAt)],
      ["Duration", `${str(data.totalDurationMs)} ms`],
      ["Cost", `$${str((data.cost as JsonObject | undefined)?.total ?? 0)}`],
    );
    const links = payload.links as JsonObject | undefined;
    if (links) lines.push(["Execution details", str(links.execution)], ["Log", str(links.log)]);
  }
  if (alert) lines.unshift(["Alert", str(alert.message)]);
  lines.push(["Event", str(payload.id)]);
  return { subject, lines };
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function emailText(summary: Summary): string {
  return `${summary.subject}\n\n${summary.lines.map(([k, v]) => `${k}: ${v}`).join("\n")}\n`;
}

export function emailHtml(summary: Summary): string {
  const rows = summary.lines
    .map(
      ([k, v]) =>
        `<tr><th align="left" style="padding:4px 12px 4px 0">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`,
    )
    .join("");
  return `<!doctype html><html><body style="font-family:sans-serif"><h2>${escapeHtml(summary.subject)}</h2><table>${rows}</table></body></html>`;
}

/** Slack escaping: only &, < and > are special in mrkdwn. */
function escapeSlack(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function slackMessage(summary: Summary): JsonObject {
  return {
    text: escapeSlack(summary.subject),
    blocks: [
      { type: "header", text: { type: "plain_text", text: summary.subject.slice(0, 150) } },
      {
        type: "section",
        fields: summary.lines
          .slice(0, 10)
          .map(([k, v]) => ({ type: "mrkdwn", text: `*${escapeSlack(k)}*\n${escapeSlack(v)}` })),
      },
    ],
  };
}
