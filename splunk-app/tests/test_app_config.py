"""Static checks of the app's configuration, views and form (no Splunk needed).

AppInspect checks the packaging and Splunk Cloud rules; these check what the issue asks of
the content: detections wired to the action and disabled, the fields the scenarios send,
sourcetypes, the form's parameters, the dashboard's panels, the setup page."""
import glob
import os
import re
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402
from support import read_conf  # noqa: E402

action = support.load_action()
config = support.load_module("opsmesh_config")
DEFAULT = os.path.join(support.APP_DIR, "default")
SCENARIOS = support.SCENARIOS
REQUIRED_DETECTIONS = {
    "KServe model error rate above 5%": "opsmesh:models",
    "Kyverno DENY events": "opsmesh:policies",
    "Namespace hourly cost above budget": "opsmesh:costs",
    "ArgoCD application OutOfSync": "opsmesh:argocd",
    "KServe model OOMKilled": "opsmesh:models",
}
# The one saved search that is not a detection: it watches the alert action itself.
ACTION_FAILURES_ALERT = "opsmesh alert action delivery failures"
REQUIRED_SOURCETYPES = ["opsmesh:models", "opsmesh:policies", "opsmesh:costs", "opsmesh:argocd", "opsmesh:alert",
                        "opsmesh:diagnosis", "opsmesh:remediation", "opsmesh:investigation"]


def scenario_rows():
    """search_name -> field names of the first row, from tests/scenarios (splunk_alert_action)."""
    found = {}
    for path in glob.glob(os.path.join(SCENARIOS, "**", "*.yaml"), recursive=True):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        for match in re.finditer(r"via:\s*splunk_alert_action\s*\n\s*search_name:\s*\"?([^\"\n]+)\"?"
                                 r"[\s\S]*?rows:\s*\n\s*-\s*\{([^}]*)\}", text):
            # keys only: a quoted value may hold a colon ("Init:CrashLoopBackOff")
            keys = re.findall(r"(?:^|,)\s*([A-Za-z_][A-Za-z0-9_]*)\s*:", match.group(2))
            found.setdefault(match.group(1).strip(), set()).update(keys)
    return found


def macro_stanza(call):
    """The macros.conf stanza a `call` names: name, or name(N) for a call with N arguments."""
    name, paren, args = call.partition("(")
    return "%s(%d)" % (name, len(args.rstrip(")").split(","))) if paren else name


def balanced(text):
    depth = 0
    in_quote = False
    prev = ""
    for ch in text:
        if ch == '"' and prev != "\\":
            in_quote = not in_quote
        elif not in_quote:
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
                if depth < 0:
                    return False
        prev = ch
    return depth == 0 and not in_quote and text.count("`") % 2 == 0


class FixturesTest(unittest.TestCase):
    def test_fixtures_are_copies_of_the_repository_samples(self):
        for name in sorted(os.listdir(support.FIXTURES)):
            with open(os.path.join(support.FIXTURES, name), "rb") as fixture, \
                    open(os.path.join(support.SAMPLES, name), "rb") as sample:
                self.assertEqual(fixture.read(), sample.read(), "%s drifted from tests/samples/" % name)


class SavedSearchesTest(unittest.TestCase):
    def setUp(self):
        self.searches = {k: v for k, v in read_conf(os.path.join(DEFAULT, "savedsearches.conf")).items()
                         if k not in ("default", ACTION_FAILURES_ALERT)}
        self.macros = read_conf(os.path.join(DEFAULT, "macros.conf"))

    def test_required_detections_exist(self):
        for name, sourcetype in REQUIRED_DETECTIONS.items():
            self.assertIn(name, self.searches)
            self.assertIn('sourcetype="%s"' % sourcetype, self.searches[name]["search"])

    def test_disabled_scheduled_and_wired_to_the_action(self):
        for name, conf in self.searches.items():
            self.assertEqual("1", conf.get("disabled"), name)
            self.assertEqual("1", conf.get("enableSched"), name)
            self.assertEqual("1", conf.get("action.opsmesh"), name)
            self.assertIn("opsmesh", [a.strip() for a in conf.get("actions", "").split(",")], name)
            self.assertIn(conf["action.opsmesh.param.severity"], config.SEVERITIES, name)
            self.assertTrue(conf.get("dispatch.earliest_time") and conf.get("dispatch.latest_time"), name)
            self.assertRegex(conf.get("cron_schedule", ""), r"^\*/(5|10|15|30) \* \* \* \*$", name)
            self.assertTrue(conf["search"].startswith("`opsmesh_index` "), name)

    def test_searches_are_well_formed_and_use_defined_macros(self):
        for name, conf in self.searches.items():
            search = conf["search"]
            self.assertTrue(balanced(search), name)
            for macro in re.findall(r"`([^`]+)`", search):
                self.assertIn(macro_stanza(macro), self.macros, "%s uses undefined macro %s" % (name, macro))
        for name, conf in self.macros.items():
            if name != "default":
                self.assertTrue(balanced(conf["definition"]), name)
                for macro in re.findall(r"`([^`]+)`", conf["definition"]):
                    self.assertIn(macro_stanza(macro), self.macros, "%s uses undefined macro %s" % (name, macro))

    def test_rows_carry_the_fields_scenarios_send(self):
        expected = scenario_rows()
        self.assertTrue(expected, "no splunk_alert_action scenario under %s" % SCENARIOS)
        checked = 0
        for name, fields in expected.items():
            if name not in self.searches:
                continue
            table = self.searches[name]["search"].strip().split("\n")[-1]
            self.assertTrue(table.startswith("| table "), name)
            columns = {c.strip() for c in table[len("| table "):].split(",")}
            self.assertLessEqual(fields, columns, name)
            checked += 1
        self.assertGreaterEqual(checked, 3)

    def test_entity_fields_are_output_columns(self):
        for name, conf in self.searches.items():
            table = conf["search"].strip().split("\n")[-1]
            columns = {c.strip() for c in table[len("| table "):].split(",")}
            for field in conf["action.opsmesh.param.entity_fields"].split(","):
                self.assertIn(field, columns, name)


class PropsTest(unittest.TestCase):
    def test_sourcetypes(self):
        props = read_conf(os.path.join(DEFAULT, "props.conf"))
        for sourcetype in REQUIRED_SOURCETYPES:
            self.assertIn(sourcetype, props)
            stanza = props[sourcetype]
            self.assertEqual("false", stanza["SHOULD_LINEMERGE"], sourcetype)
            self.assertEqual("json", stanza["KV_MODE"], sourcetype)
            self.assertEqual("([\\r\\n]+)", stanza["LINE_BREAKER"], sourcetype)
            self.assertIn("occurred_at", stanza["TIME_PREFIX"], sourcetype)
            self.assertNotIn("INDEXED_EXTRACTIONS", stanza, sourcetype)


class KnowledgeObjectsTest(unittest.TestCase):
    def test_fields_conf_lists_the_reporters_indexed_fields(self):
        with open(os.path.join(os.path.dirname(support.SPLUNK_APP), "services", "reporter", "src", "hec",
                               "event.rs"), encoding="utf-8") as fh:
            indexed = set(re.findall(r'put\(\s*"([a-z_]+)"', fh.read()))
        self.assertIn("incident_id", indexed)
        fields = {k: v for k, v in read_conf(os.path.join(DEFAULT, "fields.conf")).items() if k != "default"}
        self.assertEqual(indexed, set(fields))
        for name, stanza in fields.items():
            self.assertEqual({"INDEXED": "true"}, stanza, name)

    def test_cim_eventtypes_are_tagged(self):
        eventtypes = {k: v for k, v in read_conf(os.path.join(DEFAULT, "eventtypes.conf")).items() if k != "default"}
        tags = {k: v for k, v in read_conf(os.path.join(DEFAULT, "tags.conf")).items() if k != "default"}
        self.assertEqual({"eventtype=opsmesh_alert": {"alert": "enabled"},
                          "eventtype=opsmesh_change": {"change": "enabled"}}, tags)
        for name in eventtypes:
            self.assertIn("eventtype=%s" % name, tags)
            self.assertNotIn("|", eventtypes[name]["search"])
            self.assertNotIn("`", eventtypes[name]["search"], "event types cannot use macros")
        self.assertIn('sourcetype="opsmesh:alert"', eventtypes["opsmesh_alert"]["search"])
        self.assertIn('sourcetype="opsmesh:remediation"', eventtypes["opsmesh_change"]["search"])
        props = read_conf(os.path.join(DEFAULT, "props.conf"))
        for field in ("signature", "severity", "type", "dest", "app", "vendor_product"):
            self.assertIn("EVAL-%s" % field, props["opsmesh:alert"], field)
        for field in ("change_type", "command", "object", "object_category", "status", "dest", "user",
                      "vendor_product"):
            self.assertIn("EVAL-%s" % field, props["opsmesh:remediation"], field)
        self.assertNotIn("EVAL-action", props["opsmesh:remediation"], "action stays the indexed action kind")
        meta = read_conf(os.path.join(support.APP_DIR, "metadata", "default.meta"))
        self.assertEqual("system", meta["eventtypes"]["export"])
        self.assertEqual("system", meta["tags"]["export"])


class SplunkbaseReadinessTest(unittest.TestCase):
    def test_manifest_license_author_and_updates(self):
        import json
        with open(os.path.join(support.APP_DIR, "app.manifest"), encoding="utf-8") as fh:
            info = json.load(fh)["info"]
        self.assertEqual("Apache License 2.0", info["license"]["name"])
        self.assertEqual("LICENSE", info["license"]["text"])
        self.assertTrue(info["license"]["uri"])
        self.assertTrue(info["author"] and all(a["name"] for a in info["author"]))
        app = read_conf(os.path.join(DEFAULT, "app.conf"))
        self.assertEqual("true", app["package"]["check_for_updates"])

    def test_package_carries_readme_and_license(self):
        import subprocess
        import tarfile
        out = subprocess.run(["bash", os.path.join(support.SPLUNK_APP, "package.sh")], check=True,
                             stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
        with tarfile.open(out) as tar:
            names = tar.getnames()
            license_text = tar.extractfile("%s/LICENSE" % support.APP_ID).read().decode("utf-8")
            readme = tar.extractfile("%s/README.md" % support.APP_ID).read().decode("utf-8")
        self.assertIn("Apache License", license_text)
        self.assertIn("Version 2.0", license_text)
        self.assertTrue(readme.startswith("# opsmesh Splunk app"))
        self.assertEqual(len(names), len(set(names)))


class AppConfTest(unittest.TestCase):
    def test_app_conf(self):
        app = read_conf(os.path.join(DEFAULT, "app.conf"))
        self.assertEqual(support.APP_ID, app["package"]["id"])
        self.assertEqual(support.APP_ID, app["id"]["name"])
        self.assertEqual("false", app["install"]["is_configured"])
        self.assertRegex(app["install"]["build"], r"^\d+$")
        self.assertRegex(app["id"]["version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual(app["id"]["version"], app["launcher"]["version"])
        self.assertEqual(action.VERSION, app["id"]["version"])
        self.assertTrue(5 <= len(app["ui"]["label"]) <= 80)
        self.assertTrue(os.path.isfile(os.path.join(DEFAULT, "data", "ui", "views", app["ui"]["setup_view"] + ".xml")))

    def test_alert_action_conf(self):
        conf = read_conf(os.path.join(DEFAULT, "alert_actions.conf"))["opsmesh"]
        self.assertEqual("1", conf["is_custom"])
        self.assertEqual("json", conf["payload_format"])
        self.assertEqual("python3", conf["python.version"])
        self.assertEqual("3.13", conf["python.required"])
        self.assertEqual("Send to opsmesh", conf["label"])
        self.assertTrue(os.path.isfile(os.path.join(support.APP_DIR, "appserver", "static", conf["icon_path"])))
        self.assertTrue(os.path.isfile(os.path.join(support.APP_DIR, "bin", "opsmesh.py")))
        self.assertNotIn("secret", " ".join(conf).lower())

    def test_meta(self):
        meta = read_conf(os.path.join(support.APP_DIR, "metadata", "default.meta"))
        write = re.search(r"write\s*:\s*\[([^\]]*)\]", meta[""]["access"]).group(1)
        self.assertNotIn("*", write)
        self.assertEqual("system", meta["alert_actions/opsmesh"]["export"])
        self.assertEqual("system", meta["props"]["export"])

    def test_role_grants_the_broker_capability_not_list_storage_passwords(self):
        conf = read_conf(os.path.join(DEFAULT, "authorize.conf"))
        self.assertIn("capability::opsmesh_read_credential", conf)
        for role in ("role_opsmesh_alert_sender", "role_admin", "role_sc_admin"):
            self.assertEqual({"opsmesh_read_credential": "enabled"}, conf[role], role)
        for name, stanza in conf.items():
            self.assertNotIn("list_storage_passwords", stanza, name)

    def test_broker_endpoint_requires_the_capability(self):
        stanza = read_conf(os.path.join(DEFAULT, "restmap.conf"))["script:opsmesh_credential"]
        self.assertEqual("/opsmesh/credential", stanza["match"])
        self.assertEqual(action.BROKER_PATH, stanza["match"].lstrip("/"))
        self.assertEqual(action.BROKER_CAPABILITY, stanza["capability"])
        self.assertEqual("true", stanza["requireAuthentication"])
        self.assertEqual("true", stanza["passSystemAuth"])
        self.assertEqual("persist", stanza["scripttype"])
        module, _, cls = stanza["handler"].partition(".")
        self.assertEqual(stanza["script"], module + ".py")
        self.assertTrue(hasattr(support.load_broker(), cls))
        self.assertEqual(action.BROKER_CAPABILITY, support.load_broker().CAPABILITY)

    def test_settings_endpoints_are_for_administrators_only(self):
        restmap = read_conf(os.path.join(DEFAULT, "restmap.conf"))
        handler = support.load_module("opsmesh_settings")
        for name, match in (("script:opsmesh_settings", "/opsmesh/settings"),
                            ("script:opsmesh_test_alert", "/opsmesh/test_alert")):
            stanza = restmap[name]
            self.assertEqual(match, stanza["match"])
            self.assertEqual("admin_all_objects", stanza["capability"])
            self.assertEqual("true", stanza["requireAuthentication"])
            self.assertEqual("true", stanza["passPayload"])
            self.assertNotIn("passSystemAuth", stanza, "the handler acts with the caller's session only")
            module, _, cls = stanza["handler"].partition(".")
            self.assertEqual(stanza["script"], module + ".py")
            self.assertTrue(hasattr(handler, cls))

    def test_specs_document_every_parameter(self):
        for spec in ("alert_actions.conf.spec", "savedsearches.conf.spec"):
            with open(os.path.join(support.APP_DIR, "README", spec), encoding="utf-8") as fh:
                text = fh.read()
            for param in config.DEFAULTS:
                self.assertIn("param.%s" % param, text, spec)

    def test_no_local_or_secrets_in_app(self):
        self.assertFalse(os.path.exists(os.path.join(support.APP_DIR, "local")))
        self.assertFalse(os.path.exists(os.path.join(support.APP_DIR, "metadata", "local.meta")))
        for root, _, files in os.walk(support.APP_DIR):
            for name in files:
                self.assertNotEqual("passwords.conf", name)


class AlertFormTest(unittest.TestCase):
    def test_form_inputs(self):
        path = os.path.join(DEFAULT, "data", "ui", "alerts", "opsmesh.html")
        with open(path, encoding="utf-8") as fh:
            html = fh.read()
        self.assertNotIn("<script", html.lower())
        root = ET.fromstring(html)
        names = {el.get("name") for el in root.iter() if el.tag in ("input", "select", "textarea")}
        self.assertEqual({"action.opsmesh.param.%s" % p for p in
                          ("receiver_url_override", "credential_override", "cluster_override", "severity",
                           "entity_fields", "fields_override", "send_rows")}, names)
        for name in names:
            param = name[len("action.opsmesh.param."):]
            if param.endswith(config.OVERRIDE_SUFFIX):
                self.assertIn(param[:-len(config.OVERRIDE_SUFFIX)], config.OVERRIDABLE, name)
            else:
                self.assertNotIn(param, config.OVERRIDABLE,
                                 "%s would freeze the site setting into every alert saved with it" % name)
        severities = {el.get("value") for el in root.iter("option")
                      if el.get("value") in config.SEVERITIES}
        self.assertEqual(set(config.SEVERITIES), severities)
        for el in root.iter("input"):
            self.assertNotEqual("password", el.get("type"), "the form must never take the secret")


class ViewsTest(unittest.TestCase):
    def load(self, name):
        return ET.parse(os.path.join(DEFAULT, "data", "ui", "views", name))

    def test_dashboard_panels(self):
        root = self.load("opsmesh_incidents.xml").getroot()
        self.assertEqual("1.1", root.get("version"))
        titles = " | ".join(t.text or "" for t in root.iter("title")).lower()
        for needle in ("open incidents", "timeline", "mttr over time", "actions by kind and outcome", "refusals",
                       "cost avoided"):
            self.assertIn(needle, titles)
        macros = read_conf(os.path.join(DEFAULT, "macros.conf"))
        for query in root.iter("query"):
            self.assertTrue(balanced(query.text), query.text[:80])
            for macro in re.findall(r"`([^`]+)`", query.text):
                self.assertIn(macro_stanza(macro), macros)
            # a lone '$' would start a token in Simple XML
            self.assertEqual(0, len(re.sub(r"\$[A-Za-z0-9_.]+\$", "", query.text).split("$")) - 1, query.text[:80])

    def test_setup_view(self):
        root = self.load("opsmesh_setup.xml").getroot()
        self.assertEqual("1.1", root.get("version"))
        script = root.get("script")
        path = os.path.join(support.APP_DIR, "appserver", "static", script)
        with open(path, encoding="utf-8") as fh:
            js = fh.read()
        # the handler (bin/opsmesh_settings.py) validates, stores and masks; the page calls only it
        self.assertIn('"opsmesh/settings"', js)
        self.assertIn('"opsmesh/test_alert"', js)
        self.assertNotIn('"storage/passwords', js)
        self.assertNotIn("clear_password", js)
        self.assertNotIn("console.log", js)
        self.assertNotIn("param.secret", js)

    def test_nav_views_exist(self):
        root = ET.parse(os.path.join(DEFAULT, "data", "ui", "nav", "default.xml")).getroot()
        own = {"opsmesh_incidents", "opsmesh_incidents_studio", "opsmesh_setup"}
        self.assertEqual(own, {v.get("name") for v in root.iter("view")} & own)


if __name__ == "__main__":
    unittest.main()
