// Drives the opsmesh console in headless Chromium: sign in, open an incident awaiting
// approval, check the reasoning chain, approve, and watch the page update live (server-sent
// events) as the remediator applies the action; then ask for an investigation and watch it
// complete with its cited evidence. Prints a JSON report on stdout; exits 1 on any failed
// expectation.
//
// Environment: CONSOLE_URL (http://127.0.0.1:PORT), CONSOLE_TOKEN, INCIDENT_ID,
// SCREENSHOT_DIR and CHROMIUM as in browser.mjs.
import { expect, run } from "./browser.mjs";

const base = process.env.CONSOLE_URL;
const token = process.env.CONSOLE_TOKEN;
const incident = process.env.INCIDENT_ID;
if (!base || !token || !incident) {
  console.error("CONSOLE_URL, CONSOLE_TOKEN and INCIDENT_ID are required");
  process.exit(2);
}

await run(async ({ page, report, shoot, consoleErrors }) => {
  // Not signed in: the incident link leads to the sign-in form, then back to the incident.
  await page.goto(`${base}/console/incidents/${encodeURIComponent(incident)}`);
  expect(page.url().includes("/console/login"), `redirected to sign in, at ${page.url()}`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`**/console/incidents/${incident}`), page.click("#sign-in")]);

  // The reasoning chain.
  await page.waitForSelector("h1 .badge[data-status=awaiting_approval]");
  const spl = await page.textContent("pre.spl");
  expect(spl.includes("index=opsmesh"), `evidence SPL shown: ${spl}`);
  expect((await page.textContent("#runbook")).includes("Raise the memory limit"), "runbook section");
  expect((await page.textContent("#audit-chain")).includes("intact"), "audit chain intact");
  expect((await page.textContent("#root-cause")).includes("oom_killed"), "root cause");
  await page.waitForSelector("body[data-live=on]");
  report.user = (await page.textContent("#user")).trim();
  await shoot("1-awaiting-approval.png");

  // Approve.
  await page.fill("input[name=comment]", "approved from the browser test");
  await Promise.all([page.waitForURL("**decided=approve"), page.click("#approve")]);
  await page.waitForSelector("#notice");
  report.notice = (await page.textContent("#notice")).trim();

  // The remediator applies the action; the page follows over server-sent events, without
  // navigating.
  const navigations = [];
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations.push(f.url()); });
  await page.waitForSelector("h1 .badge[data-status=resolved]", { timeout: 20000 });
  const updated = await page.getAttribute("body", "data-updated");
  expect(updated, "the page was updated by a live event");
  expect(navigations.length === 0, `no navigation for the update: ${navigations}`);
  const ledgerRows = await page.$$eval("#ledger tbody tr", (rows) => rows.length);
  expect(ledgerRows === 3, `three ledger records, got ${ledgerRows}`);
  expect((await page.textContent("#verification")).includes("healthy"), "verification healthy");
  expect((await page.textContent("#audit-chain")).includes("intact"), "chain still intact");
  const timeline = await page.textContent("#timeline");
  expect(timeline.includes("approved opsmesh") || timeline.includes(" approved "), "approval in the timeline");
  report.final_status = await page.getAttribute("h1 .badge", "data-status");
  await shoot("2-resolved.png");

  // The list shows the outcome and the time to it.
  await page.goto(`${base}/console/incidents`);
  const row = page.locator(`tr.incident-row[data-incident="${incident}"]`);
  expect((await row.textContent()).includes("resolved"), "list shows resolved");
  expect(await page.$$eval("#pending tr.pending-row", (r) => r.length) === 0, "nothing pending");
  await shoot("3-incidents.png");

  // Investigate: queued, then (the stand-in investigator answers) completed on the same page,
  // live, with the report's citation.
  await page.goto(`${base}/console/incidents/${encodeURIComponent(incident)}`);
  await page.waitForSelector("body[data-live=on]");
  await Promise.all([page.waitForURL("**investigating=inv-*"), page.click("#investigate")]);
  await page.waitForSelector("#investigation-queued");
  report.investigation_id = new URL(page.url()).searchParams.get("investigating");
  await page.waitForSelector(`tr.investigation-row[data-investigation="${report.investigation_id}"][data-state=completed]`,
    { timeout: 20000 });
  await page.waitForSelector("#investigation .citation pre.spl");
  await shoot("4-investigated.png");
  await page.click(`tr.investigation-row[data-investigation="${report.investigation_id}"] a`);
  await page.waitForSelector("#investigation-state .badge[data-status=completed]");
  const cited = await page.textContent("#investigation .citation pre.spl");
  expect(cited.includes("index=opsmesh"), `the cited SPL: ${cited}`);
  report.requested_by = (await page.textContent("#investigation-requested-by")).trim();
  await shoot("5-investigation.png");
  expect(consoleErrors.length === 0, `browser console errors: ${consoleErrors.join("; ")}`);
});
