"""The Dashboard Studio incident dashboard (opsmesh_incidents_studio) and the saved search that
alerts on the alert action's own delivery failures (no Splunk needed).

The definition is parsed as Splunk reads it (the JSON in the view's <definition>); macros are
expanded from macros.conf, so the checks see the SPL Splunk would run."""
import json
import os
import re
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402
from support import read_conf  # noqa: E402
from test_app_config import ACTION_FAILURES_ALERT, balanced, macro_stanza  # noqa: E402

DEFAULT = os.path.join(support.APP_DIR, "default")
VIEWS = os.path.join(DEFAULT, "data", "ui", "views")
STUDIO_VIEW = os.path.join(VIEWS, "opsmesh_incidents_studio.xml")
FAILURES_SPL = "index=_internal sendmodalert action=opsmesh"
TIMELINE_TOKEN = "incident_id"
MACROS = read_conf(os.path.join(DEFAULT, "macros.conf"))


def expand_macros(spl, depth=0):
    """spl with every `macro` / `macro(args)` replaced by its macros.conf definition."""
    if depth > 10:
        raise AssertionError("macro recursion: %s" % spl[:80])

    def substitute(match):
        call = match.group(1)
        stanza = MACROS[macro_stanza(call)]
        definition = stanza["definition"]
        if "(" in call:
            values = call[call.index("(") + 1:-1].split(",")
            for name, value in zip(stanza["args"].split(","), values):
                definition = definition.replace("$%s$" % name.strip(), value.strip())
        return definition

    expanded = re.sub(r"`([^`]+)`", substitute, spl)
    return expanded if expanded == spl else expand_macros(expanded, depth + 1)


def tokens_in(text):
    return set(re.findall(r"\$([A-Za-z0-9_]+)(?:\.[A-Za-z0-9_]+)?\$", text))


class DashboardStudioTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = ET.parse(STUDIO_VIEW).getroot()
        cls.definition = json.loads(cls.root.find("definition").text)
        cls.sources = cls.definition["dataSources"]
        cls.visualizations = cls.definition["visualizations"]

    def full_query(self, source_id):
        """A data source's SPL as Splunk runs it: a chain search appended to its base."""
        source = self.sources[source_id]
        query = source["options"]["query"]
        if source["type"] == "ds.chain":
            return self.full_query(source["options"]["extend"]) + " " + query
        return query

    def test_is_a_dashboard_studio_view(self):
        self.assertEqual("dashboard", self.root.tag)
        self.assertEqual("2", self.root.get("version"))
        self.assertTrue(self.root.findtext("label"))
        for key in ("dataSources", "visualizations", "inputs", "layout"):
            self.assertIn(key, self.definition)

    def test_every_referenced_data_source_exists(self):
        for viz_id, viz in self.visualizations.items():
            self.assertTrue(viz.get("dataSources"), viz_id)
            for source_id in viz["dataSources"].values():
                self.assertIn(source_id, self.sources, "%s uses undefined data source %s" % (viz_id, source_id))
        used = {s for viz in self.visualizations.values() for s in viz["dataSources"].values()}
        bases = {s["options"]["extend"] for s in self.sources.values() if s["type"] == "ds.chain"}
        self.assertEqual(set(self.sources), used | bases, "data sources nothing uses")

    def test_chain_searches_extend_a_base_search(self):
        chains = {k: s for k, s in self.sources.items() if s["type"] == "ds.chain"}
        self.assertGreaterEqual(len(chains), 5)
        for source_id, source in chains.items():
            base = source["options"]["extend"]
            self.assertEqual("ds.search", self.sources[base]["type"], source_id)
            self.assertTrue(source["options"]["query"].startswith("| "), source_id)
        # the counters and tables over incidents share one base search
        incident_chains = [k for k, s in chains.items() if s["options"]["extend"] == "ds_incidents"]
        self.assertGreaterEqual(len(incident_chains), 4)

    def test_queries_are_well_formed_with_defined_macros_and_tokens(self):
        inputs = {i["options"]["token"] for i in self.definition["inputs"].values()}
        self.assertEqual({"global_time", TIMELINE_TOKEN}, inputs)
        for source_id, source in self.sources.items():
            query = source["options"]["query"]
            self.assertTrue(balanced(query), source_id)
            for macro in re.findall(r"`([^`]+)`", query):
                self.assertIn(macro_stanza(macro), MACROS, "%s uses undefined macro %s" % (source_id, macro))
            self.assertLessEqual(tokens_in(query), inputs, source_id)
        time_range = self.definition["defaults"]["dataSources"]["ds.search"]["options"]["queryParameters"]
        self.assertEqual({"earliest": "$global_time.earliest$", "latest": "$global_time.latest$"}, time_range)

    def test_layout_places_every_visualization_and_input(self):
        layout = self.definition["layout"]
        placed = [item["item"] for item in layout["structure"]]
        self.assertEqual(sorted(self.visualizations), sorted(placed))
        self.assertEqual(sorted(self.definition["inputs"]), sorted(layout["globalInputs"]))

    def test_drilldown_sets_the_token_the_timeline_uses(self):
        timeline_viz = [v for v in self.visualizations.values()
                        if "opsmesh_incident_timeline" in self.full_query(v["dataSources"]["primary"])]
        self.assertEqual(1, len(timeline_viz), "one panel shows the incident timeline")
        timeline_query = self.full_query(timeline_viz[0]["dataSources"]["primary"])
        self.assertIn('incident_id="$%s$"' % TIMELINE_TOKEN, expand_macros(timeline_query))
        drilldowns = 0
        for viz_id, viz in self.visualizations.items():
            for handler in viz.get("eventHandlers", []):
                self.assertEqual("drilldown.setToken", handler["type"], viz_id)
                self.assertIn({"token": TIMELINE_TOKEN, "key": "row.incident_id.value"}, handler["options"]["tokens"])
                # the clicked row has the column the token is read from
                table = self.full_query(viz["dataSources"]["primary"]).split("| table ")[-1]
                self.assertIn("incident_id", table.split(), viz_id)
                drilldowns += 1
        self.assertGreaterEqual(drilldowns, 2, "open incidents and refusals open the timeline")

    def test_timeline_is_the_same_search_as_the_simple_xml_dashboard(self):
        simple = ET.parse(os.path.join(VIEWS, "opsmesh_incidents.xml")).getroot()
        queries = [q.text for q in simple.iter("query") if "opsmesh_incident_timeline" in q.text]
        self.assertEqual(['`opsmesh_incident_timeline("$incident$")`'], queries)
        self.assertEqual('`opsmesh_incident_timeline("$incident_id$")`', self.sources["ds_timeline"]["options"]["query"])

    def test_investigation_steps_panel_lists_the_selected_incidents_steps_and_status(self):
        steps_viz = [v for v in self.visualizations.values()
                     if 'sourcetype="opsmesh:investigation"' in self.full_query(v["dataSources"]["primary"])]
        self.assertEqual(1, len(steps_viz), "one panel shows the investigation steps")
        spl = expand_macros(self.full_query(steps_viz[0]["dataSources"]["primary"]))
        self.assertTrue(spl.startswith('index=opsmesh sourcetype="opsmesh:investigation" incident_id="$%s$" '
                                       % TIMELINE_TOKEN), spl[:120])
        columns = spl.split("| table ")[-1].split()
        for column in ("status", "requested_by", "step", "tool", "result_digest", "tokens", "cost_usd"):
            self.assertIn(column, columns)
        # a request (mirrored from the requests topic) reads queued, a step running, a status
        # or report its own state
        self.assertIn('status=case(schema=="opsmesh.investigation-requests.v1", "queued", '
                      'type=="step", "running", true(), state)', spl)
        examples = os.path.join(os.path.dirname(support.SPLUNK_APP), "proto", "examples")
        with open(os.path.join(examples, "opsmesh.investigations.v1.json"), encoding="utf-8") as fh:
            step = json.load(fh)["payload"]["update"]
        self.assertEqual("step", step["type"])
        for field in ("step", "kind", "tool", "result_digest", "prompt_tokens", "completion_tokens",
                      "latency_ms", "cost_usd"):
            self.assertIn(field, step)
        with open(os.path.join(examples, "opsmesh.investigation-requests.v1.json"), encoding="utf-8") as fh:
            request = json.load(fh)
        self.assertEqual("opsmesh.investigation-requests.v1", request["schema"])
        for field in ("investigation_id", "requested_by"):
            self.assertIn(field, request["payload"])

    def test_failures_panel_searches_the_alert_actions_own_log(self):
        failure_viz = [v for v in self.visualizations.values()
                       if FAILURES_SPL in expand_macros(self.full_query(v["dataSources"]["primary"]))]
        self.assertEqual(2, len(failure_viz), "a count and a table of delivery failures")
        for viz in failure_viz:
            spl = expand_macros(self.full_query(viz["dataSources"]["primary"]))
            self.assertTrue(spl.startswith(FAILURES_SPL + " "), spl[:80])
        table = [v for v in failure_viz if v["type"] == "splunk.table"][0]
        self.assertIn(FAILURES_SPL, table["title"])
        columns = self.full_query(table["dataSources"]["primary"]).split("| table ")[-1].split()
        self.assertEqual(["time", "host", "log_level", "detail"], columns)

    def test_failures_macro_extracts_the_scripts_message(self):
        rex = re.search(r'rex field=_raw "(.*)"', MACROS["opsmesh_action_failures"]["definition"]).group(1)
        pattern = re.compile(rex.replace("(?<", "(?P<"))
        # splunkd's sendmodalert lines: the script's stderr and its exit code
        stderr_line = ('12-05-2026 15:00:01.123 +0000 ERROR sendmodalert [3352 AlertNotifierWorker-0] - '
                       'action=opsmesh STDERR -  ERROR gave up delivering to https://receiver/v1/alerts/splunk')
        exit_line = ('12-05-2026 15:00:01.456 +0000 WARN sendmodalert [3352 AlertNotifierWorker-0] - '
                     'action=opsmesh - Alert action script returned error code=3')
        self.assertEqual("ERROR gave up delivering to https://receiver/v1/alerts/splunk",
                         pattern.search(stderr_line).group("detail").strip())
        self.assertEqual("Alert action script returned error code=3", pattern.search(exit_line).group("detail"))


class ActionFailuresAlertTest(unittest.TestCase):
    def setUp(self):
        self.alert = read_conf(os.path.join(DEFAULT, "savedsearches.conf"))[ACTION_FAILURES_ALERT]

    def test_searches_the_same_failures_as_the_panel(self):
        search = self.alert["search"]
        self.assertEqual("`opsmesh_action_failures`", search.split("\n")[0].strip())
        self.assertTrue(expand_macros(search).startswith(FAILURES_SPL + " "))
        self.assertTrue(balanced(search))
        self.assertEqual("| table host, failures, last_error, first_seen, last_seen", search.split("\n")[-1])

    def test_shipped_disabled_and_scheduled_over_whole_minutes(self):
        self.assertEqual("1", self.alert["disabled"])
        self.assertEqual("1", self.alert["enableSched"])
        # every 15 minutes over the 15 whole minutes ending a minute ago: no gap, no overlap
        self.assertEqual("*/15 * * * *", self.alert["cron_schedule"])
        self.assertEqual(("-16m@m", "-1m@m"), (self.alert["dispatch.earliest_time"], self.alert["dispatch.latest_time"]))
        self.assertTrue(self.alert["description"])

    def test_triggers_on_any_failure_once_an_hour_per_host(self):
        self.assertEqual(("number of events", "greater than", "0"),
                         (self.alert["counttype"], self.alert["relation"], self.alert["quantity"]))
        self.assertEqual("1", self.alert["alert.track"])
        self.assertEqual(("1", "host", "1h"), (self.alert["alert.suppress"], self.alert["alert.suppress.fields"],
                                               self.alert["alert.suppress.period"]))

    def test_does_not_report_through_the_failing_action(self):
        self.assertNotIn("opsmesh", self.alert.get("actions", ""))
        self.assertFalse([k for k in self.alert if k.startswith("action.opsmesh")])


if __name__ == "__main__":
    unittest.main()
