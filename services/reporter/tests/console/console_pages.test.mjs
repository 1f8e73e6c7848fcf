// Reads the opsmesh console in headless Chromium as an operator would, after a real run of
// the mesh (tests/tests/console_browser.rs plays `opsmesh demo`): signs in through the
// one-time link, screenshots the incident list, filters it with the form, screenshots one
// incident page, and reports what the pages show (list rows, filter results, the ledger rows
// with their hashes, evidence, runbook, audit chain, LLM usage) as JSON on stdout for the
// Rust side to check against the remediator's own records. Exits 1 on a failed expectation.
//
// Environment: CONSOLE_LINK (the one-time sign-in link), INCIDENT_ID (the incident page to
// read), FILTER_NAMESPACE; SCREENSHOT_DIR and CHROMIUM as in browser.mjs.
import { expect, run } from "./browser.mjs";

const link = process.env.CONSOLE_LINK;
const incident = process.env.INCIDENT_ID;
const namespace = process.env.FILTER_NAMESPACE;
if (!link || !incident || !namespace) {
  console.error("CONSOLE_LINK, INCIDENT_ID and FILTER_NAMESPACE are required");
  process.exit(2);
}
const base = new URL(link).origin;

// The incident rows of the list page: id, status, namespace.
async function rows(page) {
  return page.$$eval("tr.incident-row", (trs) => trs.map((tr) => ({
    id: tr.getAttribute("data-incident"),
    status: tr.querySelector(".badge").getAttribute("data-status"),
    namespace: tr.querySelector("td.namespace").textContent.trim(),
  })));
}

await run(async ({ page, report, shoot, consoleErrors }) => {
  // The link signs in once and lands on the list.
  await page.goto(link);
  expect(page.url() === `${base}/console/incidents`, `signed in onto the list, at ${page.url()}`);
  await page.waitForSelector(`tr.incident-row[data-incident="${incident}"]`);
  report.list = await rows(page);
  await shoot("1-incidents.png");

  // Filters, through the form: state, then namespace.
  await page.selectOption("#filter-state", "resolved");
  await Promise.all([page.waitForURL("**/console/incidents?*state=resolved*"), page.click("#apply-filters")]);
  report.resolved = await rows(page);
  await page.selectOption("#filter-state", "");
  await page.fill("#filter-namespace", namespace);
  await Promise.all([page.waitForURL(`**namespace=${namespace}*`), page.click("#apply-filters")]);
  report.in_namespace = await rows(page);
  expect((await page.inputValue("#filter-namespace")) === namespace, "the form keeps the namespace");
  await shoot("2-incidents-filtered.png");
  // One incident's page.
  await page.goto(`${base}/console/incidents/${encodeURIComponent(incident)}`);
  await page.waitForSelector("#ledger");
  report.incident = {
    status: await page.getAttribute("h1 .badge", "data-status"),
    root_cause: (await page.textContent("#root-cause")).trim(),
    audit_chain: (await page.textContent("#audit-chain")).trim(),
    spl: await page.$$eval("pre.spl", (pres) => pres.map((p) => p.textContent)),
    runbook: (await page.textContent("#runbook")).trim(),
    llm: await page.getAttribute("#llm-usage", "data-llm"),
    narrative: await page.$$eval("#narrative", (n) => n.map((x) => x.textContent)),
    ledger: await page.$$eval("#ledger tr.ledger-row", (trs) => trs.map((tr) => ({
      seq: Number(tr.getAttribute("data-seq")),
      state: tr.getAttribute("data-state"),
      hash: tr.getAttribute("data-hash"),
      prev_hash: tr.getAttribute("data-prev-hash"),
    }))),
  };
  await shoot("3-incident.png");
  expect(consoleErrors.length === 0, `browser console errors: ${consoleErrors.join("; ")}`);

  // Last (Chromium logs the 400 as a failed resource): a bad filter is refused on the page,
  // naming the parameter.
  const refused = await page.goto(`${base}/console/incidents?since=last-tuesday`);
  report.bad_filter = { status: refused.status(), error: (await page.textContent("#filter-error")).trim() };
});
