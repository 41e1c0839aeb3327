import type { JsonObject } from "@bufbuild/protobuf";
import { safeFetch } from "../../platform/outbound.js";
import { type AttemptOutcome, outcomeOfHttpAnswer, outcomeOfHttpError } from "./outcome.js";
import { slackMessage, summarize } from "./render.js";

/** Posts a formatted message to a Slack incoming-webhook URL. */
export async function sendSlack(
  webhookUrl: string,
  payload: JsonObject,
  opts: { timeoutMs: number; allowPrivate: boolean },
): Promise<AttemptOutcome> {
  try {
    const answer = await safeFetch(webhookUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(slackMessage(summarize(payload))),
      timeoutMs: opts.timeoutMs,
      allowPrivate: opts.allowPrivate,
    });
    return outcomeOfHttpAnswer(answer.status, answer.body, answer.headers, Date.now());
  } catch (err) {
    return outcomeOfHttpError(err);
  }
}
