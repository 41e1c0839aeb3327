import type { JsonObject } from "@bufbuild/protobuf";
import nodemailer, { type Transporter } from "nodemailer";
import { type AttemptOutcome, SNIPPET_CHARS } from "./outcome.js";
import { emailHtml, emailText, summarize } from "./render.js";

export interface EmailSender {
  send(to: string[], payload: JsonObject, deliveryId: string): Promise<AttemptOutcome>;
  close(): void;
}

/** SMTP through nodemailer; `smtpUrl` like smtp://user:pass@host:587 (operator configuration). */
export function createEmailSender(smtpUrl: string, from: string, timeoutMs: number): EmailSender {
  let transport: Transporter | undefined;
  const transportFor = (): Transporter => {
    transport ??= nodemailer.createTransport({
      url: smtpUrl,
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
    });
    return transport;
  };
  return {
    async send(to, payload, deliveryId) {
      if (smtpUrl === "") {
        return {
          verdict: "fail",
          statusCode: 0,
          responseSnippet: "",
          error: "email is not configured (NOTIFIER_SMTP_URL)",
        };
      }
      const summary = summarize(payload);
      try {
        const info = await transportFor().sendMail({
          from,
          to,
          subject: summary.subject,
          text: emailText(summary),
          html: emailHtml(summary),
          headers: { "X-Flowplane-Delivery-Id": deliveryId, "X-Flowplane-Event-Id": String(payload.id) },
        });
        const code = Number.parseInt(String(info.response).slice(0, 3), 10);
        return {
          verdict: "success",
          statusCode: Number.isNaN(code) ? 250 : code,
          responseSnippet: String(info.response).slice(0, SNIPPET_CHARS),
          error: "",
        };
      } catch (err) {
        const responseCode = (err as { responseCode?: unknown }).responseCode;
        const code = typeof responseCode === "number" ? responseCode : 0;
        // SMTP 5xx replies are permanent; 4xx and connection problems are worth another attempt.
        return {
          verdict: code >= 500 ? "fail" : "retry",
          statusCode: code,
          responseSnippet: String((err as { response?: unknown }).response ?? "").slice(0, SNIPPET_CHARS),
          error: err instanceof Error ? err.message : String(err),
        };
      }
    },
    close() {
      transport?.close();
    },
  };
}
