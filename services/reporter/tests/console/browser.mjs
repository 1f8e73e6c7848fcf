// Shared by the console's browser scripts: headless Chromium through playwright-core, one page
// that records the browser console's errors, screenshots into SCREENSHOT_DIR, and the JSON
// report printed as the last line of stdout (exit 1 when the script failed).
//
// Environment: SCREENSHOT_DIR (a temporary folder when unset), CHROMIUM (default
// /usr/bin/chromium).
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export function expect(condition, message) {
  if (!condition) throw new Error(`expectation failed: ${message}`);
}

// Runs `body({ page, report, shoot, consoleErrors })` in a fresh browser profile; `shoot(name)`
// takes a full-page screenshot and lists it in `report.screenshots`.
export async function run(body) {
  const shots = process.env.SCREENSHOT_DIR ?? mkdtempSync(join(tmpdir(), "opsmesh-console-shots-"));
  mkdirSync(shots, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "opsmesh-chromium-profile-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const report = { screenshots: [] };
  const consoleErrors = [];
  const page = context.pages()[0] ?? (await context.newPage());
  const shoot = async (name) => {
    const path = join(shots, name);
    await page.screenshot({ path, fullPage: true });
    report.screenshots.push(path);
  };
  try {
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    page.setDefaultTimeout(15000);
    await body({ page, report, shoot, consoleErrors });
    report.ok = true;
  } catch (error) {
    report.ok = false;
    report.error = String(error);
    try {
      await shoot("failure.png");
    } catch {}
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(report));
  process.exit(report.ok ? 0 : 1);
}
