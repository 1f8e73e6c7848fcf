"""The detections in default/savedsearches.conf against what the rest of opsmesh expects.

Each detection's SPL is split into its commands and checked for what the alert-receiver
maps (services/alert-receiver/src/config.rs, EntityFields::default), grouping and output
of cluster, the search window, per-entity throttling equal to the diagnoser's cooldown
(services/diagnoser/src/lib.rs), the fields allow-list, and its sample under
tests/detections/: HEC events as the reporter writes them (valid against
proto/schemas/opsmesh.telemetry.v1.schema.json) that the detection is meant to match at
`run_at`, with the rows it outputs written beside them."""
import datetime
import glob
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402
from support import read_conf  # noqa: E402
from test_app_config import ACTION_FAILURES_ALERT, DEFAULT  # noqa: E402

REPO = os.path.dirname(support.SPLUNK_APP)
SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "detections")
RECEIVER_CONFIG = os.path.join(REPO, "services", "alert-receiver", "src", "config.rs")
DIAGNOSER_CONFIG = os.path.join(REPO, "services", "diagnoser", "src", "lib.rs")
TELEMETRY_SCHEMA = os.path.join(REPO, "proto", "schemas", "opsmesh.telemetry.v1.schema.json")
# Indexing lag: every window ends a whole minute ago.
LATEST = "-1m@m"
# Windows longer than the 5 minutes a detection runs every, and why.
LONG_WINDOWS = {
    "ArgoCD application OutOfSync": "-16m@m",  # drift must persist opsmesh_argocd_drift_minutes
    "Namespace hourly cost above budget": "-24h@m",  # the baseline is the last 24 hours
}


def split_pipeline(spl):
    """Top-level commands of an SPL search (pipes inside quotes, brackets or macros ignored)."""
    commands, buf, depth, quote, macro = [], [], 0, False, False
    for ch in spl:
        if ch == '"' and not macro:
            quote = not quote
        elif ch == "`" and not quote:
            macro = not macro
        elif not quote and not macro and ch in "([":
            depth += 1
        elif not quote and not macro and ch in ")]":
            depth -= 1
        if ch == "|" and not quote and not macro and depth == 0:
            commands.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    commands.append("".join(buf).strip())
    return [" ".join(c.split()) for c in commands]


def table_columns(spl):
    last = split_pipeline(spl)[-1]
    if not last.startswith("table "):
        raise AssertionError("the search must end with | table: %s" % last)
    return [c.strip() for c in last[len("table "):].split(",")]


def stats_group_by(command):
    match = re.search(r"\bBY\s+(.+)$", command)
    return [f.strip() for f in match.group(1).split(",")] if match else []


def receiver_field_names():
    """attribute -> field names the receiver maps, from EntityFields::default."""
    with open(RECEIVER_CONFIG, encoding="utf-8") as fh:
        text = fh.read()
    body = text[text.index("impl Default for EntityFields"):]
    body = body[:body.index("\n}\n")]
    found = {}
    for attribute, names in re.findall(r"(\w+):\s*names\(&\[([^\]]*)\]", body):
        found[attribute] = re.findall(r'"([^"]+)"', names)
    return found


def diagnoser_cooldown_minutes():
    with open(DIAGNOSER_CONFIG, encoding="utf-8") as fh:
        text = fh.read()
    match = re.search(r"cooldown:\s*Duration::from_secs\((\d+)\s*\*\s*60\)", text)
    return int(match.group(1))


def relative(run_at, spec):
    """Splunk relative time -<n>m@m / -<n>h@m from run_at (a datetime), as a unix time."""
    match = re.match(r"^-(\d+)([mh])@m$", spec)
    if not match:
        raise AssertionError("unsupported time specifier %s" % spec)
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 3600)
    snapped = run_at.replace(second=0, microsecond=0).timestamp()
    return snapped - seconds


def schema_problems(value, schema, defs, where="$"):
    """Problems of value against a JSON schema subset (what schemars emits for the proto)."""
    if "$ref" in schema:
        return schema_problems(value, defs[schema["$ref"].split("/")[-1]], defs, where)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [schema_problems(value, option, defs, where) for option in schema[key]]
            return [] if any(not p for p in options) else ["%s matches no variant: %s" % (where, min(options, key=len))]
    problems = []
    types = schema.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
              "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "null": lambda v: v is None}
    if types and not any(checks[t](value) for t in types):
        return ["%s is not %s" % (where, "/".join(types))]
    if "const" in schema and value != schema["const"]:
        return ["%s is not %r" % (where, schema["const"])]
    if "enum" in schema and value not in schema["enum"]:
        return ["%s is not one of %r" % (where, schema["enum"])]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append("%s.%s is required" % (where, name))
        for name, item in value.items():
            if name in properties:
                problems += schema_problems(item, properties[name], defs, "%s.%s" % (where, name))
            elif schema.get("additionalProperties") is False:
                problems.append("%s.%s is not in the schema" % (where, name))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += schema_problems(item, schema["items"], defs, "%s[%d]" % (where, i))
    return problems


class DetectionsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.searches = {k: v for k, v in read_conf(os.path.join(DEFAULT, "savedsearches.conf")).items()
                        if k not in ("default", ACTION_FAILURES_ALERT)}
        cls.mapped = receiver_field_names()
        cls.samples = {}
        for path in sorted(glob.glob(os.path.join(SAMPLES, "*.json"))):
            with open(path, encoding="utf-8") as fh:
                sample = json.load(fh)
            cls.samples[sample["detection"]] = (os.path.basename(path), sample)

    def test_parser_reads_the_receiver_and_diagnoser(self):
        self.assertIn("model_name", self.mapped["inference_service"])
        self.assertEqual("cluster", self.mapped["cluster"][0])
        self.assertEqual("namespace", self.mapped["namespace"][0])
        self.assertEqual(["a", "b"], split_pipeline("a | b"))
        self.assertEqual(['eval x="a|b"', "`m(1|2)`", "where in(x, \"|\")"],
                         split_pipeline('eval x="a|b" | `m(1|2)` | where in(x, "|")'))

    def test_direct_oomkilled_detection_exists(self):
        oom = [name for name, conf in self.searches.items() if "OOMKilled" in conf["search"]
               and "OOMKill" in name]
        self.assertEqual(["KServe model OOMKilled"], oom)

    def test_each_detection_outputs_what_the_receiver_maps(self):
        mapped_names = set(n for names in self.mapped.values() for n in names)
        for name, conf in self.searches.items():
            with self.subTest(detection=name):
                columns = table_columns(conf["search"])
                entity = conf["action.opsmesh.param.entity_fields"].split(",")
                self.assertEqual("cluster", columns[0], "cluster is the first output column")
                self.assertEqual("cluster", entity[0])
                self.assertIn("namespace", entity)
                self.assertLessEqual(set(entity), set(columns))
                for field in entity:
                    self.assertIn(field, mapped_names, "entity field %s is not one the receiver maps" % field)
                self.assertEqual(len(columns), len(set(columns)))
                self.assertEqual([c for c in columns if c not in entity],
                                 conf["action.opsmesh.param.fields_override"].split(","),
                                 "the allow-list is the detection's own output columns")

    def test_each_detection_groups_by_cluster(self):
        for name, conf in self.searches.items():
            with self.subTest(detection=name):
                commands = split_pipeline(conf["search"])
                self.assertEqual("`opsmesh_telemetry_fields`", commands[1])
                stats = [c for c in commands if c.startswith("stats ")]
                self.assertTrue(stats)
                for command in stats:
                    self.assertIn("cluster", stats_group_by(command), command)

    def test_windows_allow_for_indexing_lag(self):
        for name, conf in self.searches.items():
            with self.subTest(detection=name):
                self.assertEqual(LATEST, conf["dispatch.latest_time"])
                self.assertEqual(LONG_WINDOWS.get(name, "-6m@m"), conf["dispatch.earliest_time"])
                every = int(re.match(r"^\*/(\d+) ", conf["cron_schedule"]).group(1))
                run_at = datetime.datetime(2024, 6, 10, 16, 0, tzinfo=datetime.timezone.utc)
                span = relative(run_at, LATEST) - relative(run_at, conf["dispatch.earliest_time"])
                self.assertGreaterEqual(span, every * 60, "runs every %d min but searches %ds" % (every, span))

    def test_throttled_per_entity_like_the_diagnoser_coalesces(self):
        cooldown = "%dm" % diagnoser_cooldown_minutes()
        for name, conf in self.searches.items():
            with self.subTest(detection=name):
                self.assertEqual("0", conf["alert.digest_mode"], "one alert per entity")
                self.assertEqual("result", conf["action.opsmesh.param.send_rows"])
                self.assertEqual("1", conf["alert.suppress"])
                self.assertEqual(conf["action.opsmesh.param.entity_fields"], conf["alert.suppress.fields"])
                self.assertEqual(cooldown, conf["alert.suppress.period"])

    def test_each_detection_is_described(self):
        for name, conf in self.searches.items():
            with self.subTest(detection=name):
                description = conf.get("description", "")
                self.assertGreater(len(description), 120)
                for column in table_columns(conf["search"]):
                    self.assertIn(column, description, "the description names every output column")

    def test_every_detection_has_one_sample(self):
        self.assertEqual(set(self.searches), set(self.samples))

    def test_samples_are_reporter_events_the_detection_reads(self):
        with open(TELEMETRY_SCHEMA, encoding="utf-8") as fh:
            schema = json.load(fh)
        for name, (path, sample) in self.samples.items():
            with self.subTest(sample=path):
                conf = self.searches[name]
                sourcetype = re.search(r'sourcetype="([^"]+)"', conf["search"]).group(1)
                run_at = datetime.datetime.strptime(sample["run_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=datetime.timezone.utc)
                earliest = relative(run_at, conf["dispatch.earliest_time"])
                latest = relative(run_at, conf["dispatch.latest_time"])
                self.assertTrue(sample["why"])
                self.assertTrue(sample["hec_events"])
                for event in sample["hec_events"]:
                    self.assertEqual(sourcetype, event["sourcetype"])
                    self.assertEqual("opsmesh", event["index"])
                    self.assertTrue(earliest <= event["time"] < latest, "event outside the search window")
                    envelope = event["event"]
                    self.assertEqual([], schema_problems(envelope, schema, schema["$defs"]))
                    self.assertEqual(envelope["cluster"], event["fields"]["cluster"])
                    self.assertEqual(sourcetype, "opsmesh:" + envelope["payload"]["record"]["kind"])

    def test_expected_rows_are_the_output_columns_with_values_from_the_events(self):
        renamed = {"model_name": "name", "sync_status": "sync", "health_status": "health"}
        for name, (path, sample) in self.samples.items():
            with self.subTest(sample=path):
                conf = self.searches[name]
                columns = table_columns(conf["search"])
                entity = conf["action.opsmesh.param.entity_fields"].split(",")
                records = [e["event"]["payload"]["record"] for e in sample["hec_events"]]
                self.assertTrue(sample["expected_rows"])
                for row in sample["expected_rows"]:
                    self.assertEqual(columns, list(row), "expected fields in output order")
                    self.assertTrue(all(isinstance(v, str) and v for v in row.values()), "Splunk results are strings")
                    self.assertIn(row["cluster"], {e["event"]["cluster"] for e in sample["hec_events"]})
                    for field in entity[1:]:
                        source = renamed.get(field, field)
                        self.assertIn(row[field], {str(r.get(source)) for r in records}, field)


if __name__ == "__main__":
    unittest.main()
