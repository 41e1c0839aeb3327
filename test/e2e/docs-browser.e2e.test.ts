/**
 * /docs in a real browser (issue 7): headless Debian Chromium loads the Swagger UI page from the
 * in-process gateway and must render the execute and logs operations from /openapi.json with no
 * script error and no request leaving the gateway (the assets are served offline). A screenshot goes
 * to test/artifacts/docs.png.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "../fuzz/harness.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARTIFACTS = fileURLToPath(new URL("../artifacts/", import.meta.url));

describe("GET /docs in headless Chromium", () => {
  let stack: Stack;
  let browser: BrowserContext;
  let profile: string;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
    }
    stack = await startStack();
    profile = await mkdtemp(path.join(os.tmpdir(), "flowplane-chromium-"));
    // A fresh profile per run: nothing cached or remembered from an earlier page load.
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1280, height: 2000 },
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
    if (profile) await rm(profile, { recursive: true, force: true });
  }, 60_000);

  it("renders the execute and logs operations, loading nothing from outside the gateway", async () => {
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    const foreign: string[] = [];
    const failed: string[] = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    page.on("request", (request) => {
      const url = request.url();
      if (!url.startsWith(stack.baseUrl) && !url.startsWith("data:")) foreign.push(url);
    });
    page.on("requestfailed", (request) => failed.push(`${request.url()}: ${request.failure()?.errorText}`));

    const response = await page.goto(`${stack.baseUrl}/docs`, { waitUntil: "load" });
    expect(response?.status()).toBe(200);
    // Swagger UI renders one .opblock per operation once it has fetched and parsed the document.
    await page.waitForSelector(".opblock-summary-path", { timeout: 30_000 });
    const operations = await page.$$eval(".opblock", (blocks) =>
      blocks.map((block) => ({
        method: block.querySelector(".opblock-summary-method")?.textContent?.trim() ?? "",
        path: block.querySelector(".opblock-summary-path")?.getAttribute("data-path") ?? "",
      })),
    );
    const names = operations.map((op) => `${op.method} ${op.path}`);
    expect(names).toContain("POST /api/executeWorkflow");
    expect(names).toContain("POST /api/executeWorkflowBackground");
    expect(names).toContain("GET /api/v1/logs");
    expect(names).toContain("GET /api/v1/logs/{id}");
    expect(names).toContain("GET /api/v1/logs/executions/{executionId}");
    expect(operations.length).toBeGreaterThan(20);
    // The document's title is shown, so the spec itself (not an error box) was rendered.
    await expect(page.locator(".info .title").first().textContent()).resolves.toMatch(/\S/);
    expect(await page.locator(".errors-wrapper").count()).toBe(0);

    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "docs.png"), fullPage: false });
    expect(pageErrors).toEqual([]);
    expect(failed).toEqual([]);
    expect(foreign).toEqual([]);
  }, 90_000);
});
