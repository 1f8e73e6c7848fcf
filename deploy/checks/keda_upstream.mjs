// Validates KEDA objects with the schema generated from the upstream KEDA
// CRDs, as shipped (compiled) in the npm package @kubernetes-models/keda.
//
//   node keda_upstream.mjs OBJECTS.json NODE_PREFIX
//
// OBJECTS.json: a JSON array of rendered Kubernetes objects (others ignored).
// NODE_PREFIX: the npm --prefix where @kubernetes-models/keda is installed.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [objectsFile, prefix] = process.argv.slice(2);
if (!objectsFile || !prefix) {
  console.error("usage: keda_upstream.mjs OBJECTS.json NODE_PREFIX");
  process.exit(2);
}
const modUrl = pathToFileURL(
  join(prefix, "node_modules/@kubernetes-models/keda/keda.sh/v1alpha1/index.js"),
).href;
const keda = await import(modUrl);

const objects = JSON.parse(readFileSync(objectsFile, "utf8"));
let failed = 0;
let checked = 0;
for (const obj of objects) {
  if (!obj || obj.apiVersion !== "keda.sh/v1alpha1") continue;
  const Model = keda[obj.kind];
  const where = `${obj.kind}/${obj.metadata?.namespace}/${obj.metadata?.name}`;
  if (!Model) {
    console.log(`FAIL ${where}: no upstream model for kind ${obj.kind}`);
    failed++;
    continue;
  }
  checked++;
  try {
    new Model(obj).validate();
    console.log(`ok   ${where} (upstream KEDA schema)`);
  } catch (e) {
    console.log(`FAIL ${where}: ${e.message}`);
    failed++;
  }
}
console.log(`keda upstream: ${checked} checked, ${failed} failed`);
process.exit(failed ? 1 : 0);
