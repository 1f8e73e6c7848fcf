"""Tests for bin/opsmesh.py, the "Send to opsmesh" alert action (standard library only)."""
import gzip
import io
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402
from support import (  # noqa: E402
    SECRET, SESSION_KEY, ReceiverStub, SplunkdStub, run_script, sample_payload, verify_signature, write_results,
)

action = support.load_action()
config = support.load_module("opsmesh_config")
results = support.load_module("opsmesh_results")

LEVEL_LINE = re.compile(r"^(DEBUG|INFO|WARN|ERROR|FATAL) ")
CONTRACT_KEYS = {"sid", "search_name", "app", "owner", "results_link", "server_host", "cluster", "severity",
                 "entity_fields", "result", "rows", "rows_truncated", "sent_at"}


class Collect(object):
    def __init__(self):
        self.buf = io.StringIO()

    def write(self, text):
        self.buf.write(text)

    def flush(self):
        pass

    @property
    def text(self):
        return self.buf.getvalue()


def quiet_log():
    return action.Log(Collect())


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class ServersMixin(object):
    """A splunkd stub and a receiver stub per test."""

    responses = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="opsmesh-test-")
        self.splunkd = SplunkdStub().start()
        self.receiver = ReceiverStub(self.responses).start()

    def tearDown(self):
        self.splunkd.stop()
        self.receiver.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def payload(self, **conf):
        return sample_payload(self.receiver.url, self.splunkd.base_url, **conf)

    def assert_clean_stderr(self, result):
        self.assertNotIn(SECRET, result.stderr)
        self.assertNotIn(SESSION_KEY, result.stderr)
        self.assertEqual("", result.stdout)
        for line in result.stderr.splitlines():
            self.assertRegex(line, LEVEL_LINE)


# ---------------------------------------------------------------------------
# pure functions


class DecodeMultivalueTest(unittest.TestCase):
    def test_values(self):
        self.assertEqual(["a", "b"], results.decode_mv("$a$;$b$"))
        self.assertEqual(["only"], results.decode_mv("$only$"))
        self.assertEqual(["pod-1", "pod 2", "x;y"], results.decode_mv("$pod-1$;$pod 2$;$x;y$"))

    def test_dollar_escape_and_empty_values(self):
        self.assertEqual(["cost $5", "$", ""], results.decode_mv("$cost $$5$;$$$$;$$"))
        self.assertEqual(["a$"], results.decode_mv("$a$$$"))

    def test_malformed(self):
        for bad in ("a", "$a", "$a$b", "$a$;", "$a$,$b$"):
            with self.assertRaises(ValueError, msg=bad):
                results.decode_mv(bad)


class ResultsFileTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="opsmesh-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_sample_results_file(self):
        rows, more = action.read_results_file(support.SAMPLE_RESULTS, 1000, quiet_log())
        self.assertFalse(more)
        self.assertEqual([
            {"_time": "1718035200", "model_name": "gpt-oss-120b", "namespace": "ml-team-a", "error_rate": "0.31",
             "restarts": "7"},
            {"_time": "1718035200", "model_name": "llama-3-8b", "namespace": "ml-team-b", "error_rate": "0.07",
             "restarts": "2"},
        ], rows)

    def test_multivalue_columns(self):
        path = write_results(
            os.path.join(self.tmp, "results.csv.gz"),
            ["namespace", "pods", "reason", "note", "empty", "__mv_namespace", "__mv_pods", "__mv_reason",
             "__mv_note", "__mv_empty", "__mv_only_mv"],
            [
                ["ml-team-a", "p-1\np-2\np-3", "OOMKilled", 'said "hi", then\nleft', "", "", "$p-1$;$p-2$;$p-3$",
                 "$OOMKilled$", "", "", "$x$;$y$"],
                ["ml-team-b", "p$1", "", "", "", "", "$p$$1$", "", "", "", ""],
            ],
        )
        rows, more = action.read_results_file(path, 10, quiet_log())
        self.assertFalse(more)
        self.assertEqual({"namespace": "ml-team-a", "pods": ["p-1", "p-2", "p-3"], "reason": "OOMKilled",
                          "note": 'said "hi", then\nleft', "only_mv": ["x", "y"]}, rows[0])
        self.assertEqual({"namespace": "ml-team-b", "pods": "p$1"}, rows[1])
        for row in rows:
            self.assertFalse([k for k in row if k.startswith("__mv_")])

    def test_bad_multivalue_falls_back_to_plain_value(self):
        path = write_results(os.path.join(self.tmp, "r.csv.gz"), ["a", "__mv_a"], [["plain", "$broken"]])
        log = quiet_log()
        rows, _ = action.read_results_file(path, 10, log)
        self.assertEqual([{"a": "plain"}], rows)
        self.assertIn("WARN", log.stream.text)

    def test_max_rows(self):
        path = write_results(os.path.join(self.tmp, "r.csv.gz"), ["n"], [[str(i)] for i in range(5)])
        rows, more = action.read_results_file(path, 3, quiet_log())
        self.assertEqual([{"n": "0"}, {"n": "1"}, {"n": "2"}], rows)
        self.assertTrue(more)
        rows, more = action.read_results_file(path, 5, quiet_log())
        self.assertEqual(5, len(rows))
        self.assertFalse(more)

    def test_bom_and_large_field(self):
        big = "x" * 300000
        buf = ("\ufeffname,raw\nalpha,%s\n" % big).encode("utf-8")
        path = os.path.join(self.tmp, "bom.csv.gz")
        with gzip.open(path, "wb") as fh:
            fh.write(buf)
        rows, _ = action.read_results_file(path, 10, quiet_log())
        self.assertEqual({"name": "alpha", "raw": big}, rows[0])

    def test_load_rows_modes_and_fallback(self):
        cfg = action.parse_config({"receiver_url": "https://r.example.com/x", "fields": "*"})
        path = write_results(os.path.join(self.tmp, "r.csv.gz"), ["n"], [[str(i)] for i in range(4)])
        first, rows, more = action.load_rows({"results_file": path}, cfg, quiet_log())
        self.assertEqual(({"n": "0"}, 4, False), (first, len(rows), more))

        cfg = action.parse_config({"receiver_url": "https://r.example.com/x", "send_rows": "first", "fields": "*"})
        first, rows, more = action.load_rows({"results_file": path}, cfg, quiet_log())
        self.assertEqual(({"n": "0"}, [{"n": "0"}], True), (first, rows, more))

        log = quiet_log()
        payload = {"results_file": os.path.join(self.tmp, "missing.csv.gz"),
                   "result": {"model_name": "m", "pods": ["a", "b"], "n": 3, "empty": ""}}
        first, rows, more = action.load_rows(payload, cfg, log)
        self.assertEqual({"model_name": "m", "pods": ["a", "b"], "n": "3"}, first)
        self.assertEqual([first], rows)
        self.assertFalse(more)
        self.assertIn("WARN cannot read results_file", log.stream.text)

        first, rows, more = action.load_rows({"result": {"a": "1"}}, cfg, quiet_log())
        self.assertEqual(({"a": "1"}, [{"a": "1"}], False), (first, rows, more))

    def test_not_gzip_falls_back(self):
        path = os.path.join(self.tmp, "plain.csv.gz")
        with open(path, "w") as fh:
            fh.write("a,b\n1,2\n")
        cfg = action.parse_config({"receiver_url": "https://r.example.com/x", "fields": "*"})
        first, rows, _ = action.load_rows({"results_file": path, "result": {"a": "1"}}, cfg, quiet_log())
        self.assertEqual({"a": "1"}, first)


class ConfigTest(unittest.TestCase):
    def test_defaults(self):
        cfg = action.parse_config({"receiver_url": "https://opsmesh.example.com/v1/alerts/splunk"})
        self.assertEqual(("default", "default", "medium", [], "all", 1000, 900000, "", 10.0, 120.0),
                         (cfg.credential, cfg.cluster, cfg.severity, cfg.entity_fields, cfg.send_rows, cfg.max_rows,
                          cfg.max_body_bytes, cfg.ca_bundle, cfg.timeout, cfg.retry_budget))
        self.assertLess(cfg.max_body_bytes, 1024 * 1024)

    def test_defaults_match_alert_actions_conf(self):
        conf = {}
        with open(os.path.join(support.APP_DIR, "default", "alert_actions.conf")) as fh:
            for line in fh:
                if line.startswith("param."):
                    key, _, value = line.partition("=")
                    conf[key.strip()[len("param."):]] = value.strip()
        overrides = dict((k, v) for k, v in conf.items() if k.endswith(config.OVERRIDE_SUFFIX))
        self.assertEqual({name + config.OVERRIDE_SUFFIX: "" for name in config.OVERRIDABLE}, overrides,
                         "every site setting has an empty *_override twin")
        for key in overrides:
            del conf[key]
        self.assertEqual(set(config.DEFAULTS), set(conf))
        for key, value in conf.items():
            self.assertEqual(config.DEFAULTS[key], value, key)

    def test_values(self):
        cfg = action.parse_config({
            "receiver_url": " https://opsmesh.example.com:8443/v1/alerts/splunk?tenant=a ", "credential": "prod_eu-1",
            "cluster": "prod-eu-1", "severity": "HIGH", "entity_fields": "namespace, model_name,,namespace",
            "send_rows": "first", "max_rows": "50", "max_body_bytes": "65536", "timeout": "2.5",
            "retry_budget": "30",
        })
        self.assertEqual("https://opsmesh.example.com:8443/v1/alerts/splunk?tenant=a", cfg.receiver_url)
        self.assertEqual(["namespace", "model_name"], cfg.entity_fields)
        self.assertEqual(("prod_eu-1", "prod-eu-1", "high", "first", 50, 65536, 2.5, 30.0),
                         (cfg.credential, cfg.cluster, cfg.severity, cfg.send_rows, cfg.max_rows, cfg.max_body_bytes,
                          cfg.timeout, cfg.retry_budget))
        self.assertEqual("https://opsmesh.example.com:8443/v1/alerts/splunk", cfg.receiver_display())

    def test_http_only_for_loopback(self):
        for url in ("http://127.0.0.1:9000/x", "http://localhost/x", "http://[::1]:80/x", "http://127.8.9.10/"):
            self.assertEqual(url, action.parse_config({"receiver_url": url}).receiver_url)
        for url in ("http://opsmesh.example.com/x", "http://10.0.0.1/x", "ftp://opsmesh.example.com/",
                    "opsmesh.example.com/x", "https://", "https://user:pw@opsmesh.example.com/x",
                    "https://opsmesh.example.com/x#frag", "https://opsmesh.example.com/a b", ""):
            with self.assertRaises(action.ActionError, msg=url) as ctx:
                action.parse_config({"receiver_url": url})
            self.assertEqual(action.EXIT_CONFIG, ctx.exception.code)

    def test_missing_receiver_url(self):
        for conf in (None, {}, {"receiver_url": "   "}):
            with self.assertRaises(action.ActionError) as ctx:
                action.parse_config(conf)
            self.assertEqual(action.EXIT_CONFIG, ctx.exception.code)

    def test_invalid_values(self):
        base = {"receiver_url": "https://r.example.com/x"}
        bad = [("credential", "a:b"), ("credential", "-x"), ("cluster", "prod eu"), ("severity", "urgent"),
               ("send_rows", "some"), ("max_rows", "0"), ("max_rows", "ten"), ("max_body_bytes", "100"),
               ("timeout", "0"), ("timeout", "nan"), ("retry_budget", "151"), ("retry_budget", "0.5"),
               ("entity_fields", "a,b\x01"), ("ca_bundle", "/nonexistent/ca.pem")]
        for key, value in bad:
            conf = dict(base)
            conf[key] = value
            with self.assertRaises(action.ActionError, msg="%s=%r" % (key, value)) as ctx:
                action.parse_config(conf, environ={})
            self.assertEqual(action.EXIT_CONFIG, ctx.exception.code)

    def test_ca_bundle_must_be_pem(self):
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as fh:
            fh.write("not a certificate\n")
        try:
            with self.assertRaises(action.ActionError):
                action.parse_config({"receiver_url": "https://r.example.com/", "ca_bundle": fh.name})
        finally:
            os.unlink(fh.name)

    def test_budget_below_maxtime(self):
        maxtime = None
        with open(os.path.join(support.APP_DIR, "default", "alert_actions.conf")) as fh:
            for line in fh:
                if line.startswith("maxtime"):
                    maxtime = line.split("=", 1)[1].strip()
        self.assertRegex(maxtime, r"^\d+m$")
        seconds = int(maxtime[:-1]) * 60
        self.assertLessEqual(config.MAX_RETRY_BUDGET + action.SPLUNKD_BUDGET / 2, seconds - 20)


class FieldAllowListTest(unittest.TestCase):
    URL = "https://r.example.com/x"
    ROW = {"_raw": "secret-bearing raw event", "_time": "1718035200", "namespace": "ml-team-a",
           "model_name": "m", "error_rate": "0.31", "owner_email": "a@example.com"}

    def rows(self, **conf):
        conf.setdefault("receiver_url", self.URL)
        log = quiet_log()
        first, rows, _ = action.load_rows({"result": dict(self.ROW)}, action.parse_config(conf), log)
        return first, rows, log.stream.text

    def test_default_sends_only_the_entity_fields(self):
        first, rows, log = self.rows(entity_fields="namespace,model_name")
        self.assertEqual({"namespace": "ml-team-a", "model_name": "m"}, first)
        self.assertEqual([first], rows)
        self.assertIn("INFO fields kept in Splunk (not in entity_fields or the fields allow-list): "
                      "_raw, _time, error_rate, owner_email", log)
        self.assertNotIn("secret-bearing", log)
        self.assertNotIn("a@example.com", log)

    def test_site_list_and_alert_override(self):
        first, _, _ = self.rows(entity_fields="namespace", fields="error_rate,_time")
        self.assertEqual({"namespace": "ml-team-a", "error_rate": "0.31", "_time": "1718035200"}, first)
        # the alert's own list replaces the site list; entity fields stay
        first, _, _ = self.rows(entity_fields="namespace", fields="error_rate", fields_override="owner_email")
        self.assertEqual({"namespace": "ml-team-a", "owner_email": "a@example.com"}, first)

    def test_star_sends_everything_but_raw(self):
        for conf in ({"fields": "*"}, {"fields_override": " * "}):
            first, _, _ = self.rows(**conf)
            expected = dict(self.ROW)
            del expected["_raw"]
            self.assertEqual(expected, first)

    def test_raw_can_never_be_allowed(self):
        for conf in ({"fields": "_raw"}, {"fields_override": "namespace,_raw"}, {"entity_fields": "_raw"}):
            conf["receiver_url"] = self.URL
            with self.assertRaises(action.ActionError) as ctx:
                action.parse_config(conf)
            self.assertEqual(action.EXIT_CONFIG, ctx.exception.code)
            self.assertIn("never leaves Splunk", ctx.exception.message)
            self.assertIn("param.%s" % sorted(k for k in conf if k != "receiver_url")[0], ctx.exception.message)

    def test_bad_field_name_names_the_parameter(self):
        with self.assertRaises(action.ActionError) as ctx:
            action.parse_config({"receiver_url": self.URL, "fields_override": "a\x01b"})
        self.assertIn("param.fields_override has an invalid field name", ctx.exception.message)
        with self.assertRaises(action.ActionError) as ctx:
            action.parse_config({"receiver_url": self.URL, "fields": ",".join("f%d" % i for i in range(257))})
        self.assertIn("param.fields lists more than 256 fields", ctx.exception.message)


class OverrideTest(unittest.TestCase):
    SITE = {"receiver_url": "https://site.example.com/v1/alerts/splunk", "credential": "site", "cluster": "site-1",
            "fields": "a", "max_rows": "10", "max_body_bytes": "8192", "timeout": "5", "retry_budget": "60"}

    @staticmethod
    def settings(cfg):
        return (cfg.receiver_url, cfg.credential, cfg.cluster, cfg.fields, cfg.max_rows, cfg.max_body_bytes,
                cfg.timeout, cfg.retry_budget)

    def test_empty_overrides_follow_the_site_settings(self):
        conf = dict(self.SITE)
        conf.update(("%s_override" % name, "") for name in config.OVERRIDABLE)
        conf["cluster_override"] = "   "
        self.assertEqual(("https://site.example.com/v1/alerts/splunk", "site", "site-1", ["a"], 10, 8192, 5.0, 60.0),
                         self.settings(action.parse_config(conf)))
        # the site changes later: the same saved alert follows it
        conf["cluster"] = "site-2"
        self.assertEqual("site-2", action.parse_config(conf).cluster)

    def test_overrides_win(self):
        conf = dict(self.SITE, receiver_url_override="https://alert.example.com/x", credential_override="alert",
                    cluster_override="alert-1", fields_override="b", max_rows_override="20",
                    max_body_bytes_override="16384", timeout_override="7", retry_budget_override="30")
        self.assertEqual(("https://alert.example.com/x", "alert", "alert-1", ["b"], 20, 16384, 7.0, 30.0),
                         self.settings(action.parse_config(conf)))

    def test_ca_bundle_override(self):
        with self.assertRaises(action.ActionError) as ctx:
            action.parse_config(dict(self.SITE, ca_bundle_override="/nonexistent/ca.pem"), environ={})
        self.assertIn("param.ca_bundle_override /nonexistent/ca.pem does not exist", ctx.exception.message)

    def test_errors_name_the_override(self):
        bad = [("receiver_url_override", "http://remote.example.com/x", "param.receiver_url_override must use https"),
               ("credential_override", "a:b", "param.credential_override must be"),
               ("cluster_override", "a b", "param.cluster_override is not a valid cluster name"),
               ("max_rows_override", "0", "param.max_rows_override must be between"),
               ("max_body_bytes_override", "x", "param.max_body_bytes_override must be an integer"),
               ("timeout_override", "100", "param.timeout_override must be between"),
               ("retry_budget_override", "999", "param.retry_budget_override must be between")]
        for key, value, message in bad:
            with self.assertRaises(action.ActionError, msg=key) as ctx:
                action.parse_config(dict(self.SITE, **{key: value}), environ={})
            self.assertEqual(action.EXIT_CONFIG, ctx.exception.code)
            self.assertIn(message, ctx.exception.message)

    def test_per_alert_settings_have_no_override(self):
        for name in ("severity", "entity_fields", "send_rows"):
            self.assertNotIn(name, config.OVERRIDABLE)
        cfg = action.parse_config(dict(self.SITE, severity_override="critical"))
        self.assertEqual("medium", cfg.severity)


class BodyTest(unittest.TestCase):
    META = {"sid": "s", "search_name": "n", "app": "search", "owner": "admin", "results_link": "l",
            "server_host": "h", "cluster": "c", "severity": "high", "entity_fields": [], "sent_at": 1}

    def test_fits(self):
        rows = [{"n": str(i)} for i in range(3)]
        body, sent, truncated = action.build_body(self.META, rows[0], rows, False, 4096)
        doc = json.loads(body.decode("utf-8"))
        self.assertEqual(CONTRACT_KEYS, set(doc))
        self.assertEqual((3, False), (sent, truncated))
        self.assertEqual(rows, doc["rows"])

    def test_rows_dropped_to_fit(self):
        rows = [{"n": str(i), "pad": "y" * 200} for i in range(1000)]
        body, sent, truncated = action.build_body(self.META, rows[0], rows, False, 20000)
        self.assertLessEqual(len(body), 20000)
        doc = json.loads(body.decode("utf-8"))
        self.assertTrue(truncated)
        self.assertTrue(doc["rows_truncated"])
        self.assertEqual(sent, len(doc["rows"]))
        self.assertGreater(sent, 50)
        self.assertEqual(rows[:sent], doc["rows"])
        # one more row would not have fitted
        doc["rows"] = rows[:sent + 1]
        self.assertGreater(len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")), 20000)

    def test_oversized_first_row_is_shrunk(self):
        first = {"_raw": "z" * 50000, "mv": ["v" * 5000] * 100}
        body, sent, truncated = action.build_body(self.META, first, [first], False, 30000)
        self.assertLessEqual(len(body), 30000)
        doc = json.loads(body.decode("utf-8"))
        self.assertEqual((0, True, []), (sent, truncated, doc["rows"]))
        self.assertEqual(action.SHRUNK_VALUE_CHARS, len(doc["result"]["_raw"]))
        self.assertEqual(action.SHRUNK_MV_VALUES, len(doc["result"]["mv"]))

    def test_cannot_fit(self):
        first = {"f%05d" % i: "v" for i in range(2000)}
        with self.assertRaises(action.ActionError) as ctx:
            action.build_body(self.META, first, [first], False, 4096)
        self.assertEqual(action.EXIT_CONFIG, ctx.exception.code)

    def test_utf8(self):
        row = {"msg": "d\u00e9j\u00e0 vu \u2013 \U0001F525"}
        body, _, _ = action.build_body(self.META, row, [row], False, 4096)
        self.assertEqual(row, json.loads(body.decode("utf-8"))["result"])


class SignatureTest(unittest.TestCase):
    def test_format_and_independent_verification(self):
        body = b'{"sid":"x","rows":[]}'
        header = action.sign(SECRET, 1718035500, body)
        self.assertRegex(header, r"^t=1718035500,v1=[0-9a-f]{64}$")
        self.assertTrue(verify_signature(SECRET, header, body, now=1718035500))
        self.assertFalse(verify_signature(SECRET, header, body + b" ", now=1718035500))
        self.assertFalse(verify_signature(SECRET, header, body.replace(b"x", b"y"), now=1718035500))
        self.assertFalse(verify_signature("other-secret", header, body, now=1718035500))
        self.assertFalse(verify_signature(SECRET, header, body, now=1718035500 + 3600))
        import hashlib
        import hmac as _hmac
        self.assertEqual("t=1,v1=" + _hmac.new(b"key", b"1.{}", hashlib.sha256).hexdigest(),
                         action.sign("key", 1, b"{}"))


class RetryHelpersTest(unittest.TestCase):
    def test_retry_after(self):
        self.assertEqual(7.0, action.parse_retry_after("7"))
        self.assertEqual(0.0, action.parse_retry_after("0"))
        self.assertIsNone(action.parse_retry_after(None))
        self.assertIsNone(action.parse_retry_after("soon"))
        self.assertIsNone(action.parse_retry_after("-3"))
        now = 1718035500.0
        self.assertAlmostEqual(30.0, action.parse_retry_after("Mon, 10 Jun 2024 16:05:30 GMT", now=now), places=3)
        self.assertEqual(0.0, action.parse_retry_after("Mon, 10 Jun 2024 15:00:00 GMT", now=now))

    def test_backoff_is_exponential_with_jitter(self):
        lows = [action.backoff_delay(n, lambda: 0.0) for n in range(1, 8)]
        highs = [action.backoff_delay(n, lambda: 1.0) for n in range(1, 8)]
        self.assertEqual([0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0], lows)
        self.assertEqual([1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0], highs)


class FakeClock(object):
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class DeliverLoopTest(unittest.TestCase):
    """The retry loop with a fake clock and transport: every decision, no real waiting."""

    def cfg(self, **extra):
        conf = {"receiver_url": "https://r.example.com/x", "retry_budget": "60", "timeout": "5"}
        conf.update(extra)
        return action.parse_config(conf)

    def run_loop(self, answers, cfg=None, cost=0.2):
        fake = FakeClock()
        calls = []

        def transport(method, url, headers, body, timeout, context, proxy_url):
            calls.append({"timeout": timeout, "headers": headers, "at": fake.now, "proxy_url": proxy_url})
            fake.now += min(cost, timeout)  # a real transport gives up at its timeout
            answer = answers[min(len(calls) - 1, len(answers) - 1)]
            if isinstance(answer, Exception):
                raise answer
            return answer

        cfg = cfg or self.cfg()
        log = quiet_log()
        code = action.deliver(cfg, b"{}", SECRET, log, fake.now + cfg.retry_budget, clock=fake.clock,
                              sleep=fake.sleep, rand=lambda: 0.5, wallclock=lambda: 1718035500 + fake.now,
                              transport=transport, context=object())
        return code, calls, fake, log.stream.text

    def test_success_first_try(self):
        code, calls, fake, text = self.run_loop([(202, {}, b'{"alert_ids":["a"],"incident_key":"k"}')])
        self.assertEqual((action.EXIT_OK, 1, []), (code, len(calls), fake.sleeps))
        self.assertIn("incident_key=k", text)

    def test_retries_5xx_429_and_network_then_succeeds(self):
        answers = [action.TransportError("connection refused"), (503, {}, b""), (429, {}, b""), (500, {}, b""),
                   (202, {}, b"{}")]
        code, calls, fake, _ = self.run_loop(answers)
        self.assertEqual(action.EXIT_OK, code)
        self.assertEqual(5, len(calls))
        self.assertEqual([0.75, 1.5, 3.0, 6.0], fake.sleeps)  # equal jitter with rand=0.5

    def test_retry_after_is_honoured(self):
        code, calls, fake, _ = self.run_loop([(503, {"Retry-After": "7"}, b""), (429, {"Retry-After": "2"}, b""),
                                              (202, {}, b"{}")])
        self.assertEqual(action.EXIT_OK, code)
        self.assertEqual([7.0, 2.0], fake.sleeps)

    def test_retry_after_beyond_budget_gives_up_at_once(self):
        code, calls, fake, text = self.run_loop([(503, {"Retry-After": "3600"}, b"")])
        self.assertEqual((action.EXIT_UNREACHABLE, 1, []), (code, len(calls), fake.sleeps))
        self.assertIn("beyond the remaining budget", text)

    def test_never_retries_other_4xx(self):
        for status in (400, 404, 405, 409, 413, 415, 422, 501):
            code, calls, fake, _ = self.run_loop([(status, {}, b'{"title":"Bad","detail":"nope"}')])
            self.assertEqual((action.EXIT_REFUSED, 1), (code, len(calls)), status)
        for status in (401, 403):
            code, calls, fake, text = self.run_loop([(status, {}, b'{"title":"Unauthorized"}')])
            self.assertEqual((action.EXIT_AUTH, 1), (code, len(calls)), status)
            self.assertIn("Unauthorized", text)

    def test_budget_is_respected(self):
        cfg = self.cfg(retry_budget="60", timeout="10")
        code, calls, fake, text = self.run_loop([(503, {}, b"")], cfg=cfg, cost=2.0)
        self.assertEqual(action.EXIT_UNREACHABLE, code)
        self.assertLessEqual(fake.now - 1000.0, 60.0 + 1e-6)
        self.assertGreaterEqual(len(calls), 4)
        for call in calls:
            self.assertLessEqual(call["at"] + call["timeout"], 1000.0 + 60.0 + 1e-6)
        self.assertIn("gave up", text)

    def test_tls_verification_failure_is_not_retried(self):
        code, calls, _, text = self.run_loop([action.TransportError("TLS certificate verification failed: x", True)])
        self.assertEqual((action.EXIT_UNREACHABLE, 1), (code, len(calls)))
        self.assertIn("ca_bundle", text)

    def test_each_attempt_is_signed_afresh(self):
        _, calls, _, _ = self.run_loop([(503, {"Retry-After": "2"}, b""), (202, {}, b"{}")])
        sigs = [c["headers"]["X-Opsmesh-Signature"] for c in calls]
        self.assertNotEqual(sigs[0], sigs[1])
        for call in calls:
            ts = int(call["headers"]["X-Opsmesh-Signature"].split(",")[0][2:])
            self.assertTrue(verify_signature(SECRET, call["headers"]["X-Opsmesh-Signature"], b"{}", now=ts))


class ExitCodeTest(unittest.TestCase):
    def test_documented_and_distinct(self):
        codes = {name: getattr(action, name) for name in dir(action) if name.startswith("EXIT_")}
        self.assertEqual(0, codes.pop("EXIT_OK"))
        self.assertEqual(len(codes), len(set(codes.values())))
        self.assertNotIn(0, codes.values())
        with open(os.path.join(support.SPLUNK_APP, "README.md")) as fh:
            readme = fh.read()
        for name, value in codes.items():
            self.assertRegex(readme, r"\|\s*%d\s*\|" % value, name)


# ---------------------------------------------------------------------------
# the script run as Splunk runs it, against local HTTP servers


class EndToEndTest(ServersMixin, unittest.TestCase):
    def test_sample_payload_is_delivered_signed(self):
        before = int(time.time())
        result = run_script(self.payload(cluster="prod-eu-1", entity_fields="namespace,model_name",
                                            fields_override="_time,error_rate,restarts"))
        self.assertEqual(0, result.code, result.stderr)
        self.assert_clean_stderr(result)
        self.assertIn("INFO delivered to http://127.0.0.1:%d/v1/alerts/splunk: HTTP 202 incident_key=ik-1"
                      % self.receiver.port, result.stderr)
        self.assertEqual(1, len(self.receiver.requests))
        req = self.receiver.requests[0]
        self.assertEqual("/v1/alerts/splunk", req["path"])
        self.assertEqual("application/json", req["headers"]["Content-Type"])
        self.assertTrue(verify_signature(SECRET, req["headers"]["X-Opsmesh-Signature"], req["body"]))
        doc = json.loads(req["body"].decode("utf-8"))
        self.assertEqual(CONTRACT_KEYS, set(doc))
        with open(support.SAMPLE_PAYLOAD) as fh:
            sample = json.load(fh)
        for key in ("sid", "search_name", "app", "owner", "results_link", "server_host"):
            self.assertEqual(sample[key], doc[key], key)
        self.assertEqual("prod-eu-1", doc["cluster"])
        self.assertEqual("high", doc["severity"])
        self.assertEqual(["namespace", "model_name"], doc["entity_fields"])
        self.assertEqual(sample["result"], doc["result"])
        self.assertEqual(2, len(doc["rows"]))
        self.assertEqual(doc["result"], doc["rows"][0])
        self.assertEqual("llama-3-8b", doc["rows"][1]["model_name"])
        self.assertIs(False, doc["rows_truncated"])
        self.assertIsInstance(doc["sent_at"], int)
        self.assertLessEqual(before, doc["sent_at"])
        self.assertLessEqual(doc["sent_at"], int(time.time()))
        raw = req["body"].decode("utf-8")
        for forbidden in ("session_key", "results_file", "server_uri", SESSION_KEY, SECRET):
            self.assertNotIn(forbidden, raw)
        # the secret was read with the owner's session key
        self.assertEqual("Splunk %s" % SESSION_KEY, self.splunkd.requests[0]["headers"]["Authorization"])

    def test_tampered_body_is_refused_by_verifier(self):
        result = run_script(self.payload())
        self.assertEqual(0, result.code, result.stderr)
        req = self.receiver.requests[0]
        tampered = req["body"].replace(b'"severity":"high"', b'"severity":"low"')
        self.assertNotEqual(tampered, req["body"])
        self.assertFalse(verify_signature(SECRET, req["headers"]["X-Opsmesh-Signature"], tampered))

    def test_wrong_secret_means_auth_failure_exit_5(self):
        self.splunkd.credentials[(support.APP_ID, "opsmesh", "default")] = "not-the-receivers-secret"
        result = run_script(self.payload())
        self.assertEqual(action.EXIT_AUTH, result.code, result.stderr)
        self.assertEqual(1, len(self.receiver.requests))
        self.assertIn("signature mismatch", result.stderr)
        self.assertNotIn("not-the-receivers-secret", result.stderr)

    def test_multivalue_rows_reach_the_receiver(self):
        path = write_results(os.path.join(self.tmp, "results.csv.gz"),
                             ["namespace", "pods", "__mv_namespace", "__mv_pods"],
                             [["ml-team-a", "a\nb", "", "$a$;$b$"], ["ml-team-b", "c", "", ""]])
        payload = self.payload(fields="*")
        payload["results_file"] = path
        result = run_script(payload)
        self.assertEqual(0, result.code, result.stderr)
        doc = json.loads(self.receiver.requests[0]["body"].decode("utf-8"))
        self.assertEqual([{"namespace": "ml-team-a", "pods": ["a", "b"]}, {"namespace": "ml-team-b", "pods": "c"}],
                         doc["rows"])
        self.assertEqual(doc["rows"][0], doc["result"])

    def test_rows_are_bounded(self):
        path = write_results(os.path.join(self.tmp, "results.csv.gz"), ["n", "pad"],
                             [[str(i), "p" * 100] for i in range(3000)])
        payload = self.payload(max_body_bytes="65536", fields="*")
        payload["results_file"] = path
        result = run_script(payload)
        self.assertEqual(0, result.code, result.stderr)
        body = self.receiver.requests[0]["body"]
        self.assertLessEqual(len(body), 65536)
        doc = json.loads(body.decode("utf-8"))
        self.assertTrue(doc["rows_truncated"])
        self.assertLess(len(doc["rows"]), 1000)

        payload = self.payload(fields="*")
        payload["results_file"] = path
        result = run_script(payload)
        doc = json.loads(self.receiver.requests[1]["body"].decode("utf-8"))
        self.assertEqual(1000, len(doc["rows"]))
        self.assertTrue(doc["rows_truncated"])
        self.assertLess(len(self.receiver.requests[1]["body"]), 1024 * 1024)

    def test_raw_never_reaches_the_receiver(self):
        path = write_results(os.path.join(self.tmp, "results.csv.gz"), ["_raw", "namespace", "error_rate", "note"],
                             [["raw event text", "ml-team-a", "0.31", "internal"]])
        for conf, expected in (({}, {"namespace": "ml-team-a"}),
                               ({"fields_override": "error_rate"}, {"namespace": "ml-team-a", "error_rate": "0.31"}),
                               ({"fields": "*"}, {"namespace": "ml-team-a", "error_rate": "0.31", "note": "internal"})):
            payload = self.payload(entity_fields="namespace", **conf)
            payload["results_file"] = path
            result = run_script(payload)
            self.assertEqual(0, result.code, result.stderr)
            body = self.receiver.requests[-1]["body"].decode("utf-8")
            self.assertNotIn("raw event text", body)
            self.assertEqual([expected], json.loads(body)["rows"], conf)

    def test_send_the_triggering_result_only(self):
        # a per-result alert: results_file holds both sample rows, the payload's result is the trigger
        payload = self.payload(send_rows="result", entity_fields="namespace,model_name", fields_override="error_rate")
        payload["result"] = {"model_name": "llama-3-8b", "namespace": "ml-team-b", "error_rate": "0.07", "_raw": "x"}
        result = run_script(payload)
        self.assertEqual(0, result.code, result.stderr)
        doc = json.loads(self.receiver.requests[0]["body"].decode("utf-8"))
        expected = {"model_name": "llama-3-8b", "namespace": "ml-team-b", "error_rate": "0.07"}
        self.assertEqual((expected, [expected], False), (doc["result"], doc["rows"], doc["rows_truncated"]))

    def test_send_first_row_only(self):
        result = run_script(self.payload(send_rows="first"))
        self.assertEqual(0, result.code, result.stderr)
        doc = json.loads(self.receiver.requests[0]["body"].decode("utf-8"))
        self.assertEqual([doc["result"]], doc["rows"])
        self.assertTrue(doc["rows_truncated"])

    def test_missing_results_file_falls_back_to_result(self):
        payload = self.payload(entity_fields="namespace,model_name")
        payload["results_file"] = os.path.join(self.tmp, "gone.csv.gz")
        result = run_script(payload)
        self.assertEqual(0, result.code, result.stderr)
        self.assertIn("WARN cannot read results_file", result.stderr)
        doc = json.loads(self.receiver.requests[0]["body"].decode("utf-8"))
        self.assertEqual([doc["result"]], doc["rows"])
        self.assertEqual("gpt-oss-120b", doc["result"]["model_name"])


class RetryEndToEndTest(ServersMixin, unittest.TestCase):
    responses = [(503, {"Retry-After": "1"}, {"type": "about:blank", "title": "Busy", "status": 503}),
                 (202, {}, {"alert_ids": ["a-2"], "incident_key": "ik-2"})]

    def test_503_then_202(self):
        result = run_script(self.payload())
        self.assertEqual(0, result.code, result.stderr)
        self.assert_clean_stderr(result)
        self.assertEqual(2, len(self.receiver.requests))
        first, second = self.receiver.requests
        self.assertEqual(first["body"], second["body"])  # same alert, same body
        self.assertGreaterEqual(second["at"] - first["at"], 0.95)  # Retry-After: 1
        for req in (first, second):
            self.assertTrue(verify_signature(SECRET, req["headers"]["X-Opsmesh-Signature"], req["body"]))
        self.assertIn("WARN attempt 1", result.stderr)
        self.assertIn("HTTP 503", result.stderr)
        self.assertIn("incident_key=ik-2", result.stderr)


class RateLimitedEndToEndTest(ServersMixin, unittest.TestCase):
    responses = [(429, {"Retry-After": "1"}, {"title": "Too Many Requests", "status": 429}),
                 (202, {}, {"alert_ids": ["a-3"], "incident_key": "ik-3"})]

    def test_429_then_202(self):
        result = run_script(self.payload())
        self.assertEqual(0, result.code, result.stderr)
        self.assertEqual(2, len(self.receiver.requests))


class RefusalEndToEndTest(ServersMixin, unittest.TestCase):
    def check(self, status, expected_code):
        self.receiver.responses[:] = [(status, {}, {"type": "about:blank", "title": "T%d" % status,
                                                    "status": status, "detail": "detail %d" % status})]
        result = run_script(self.payload())
        self.assertEqual(expected_code, result.code, result.stderr)
        self.assertEqual(1, len(self.receiver.requests), "HTTP %d must not be retried" % status)
        self.assertIn("T%d: detail %d" % (status, status), result.stderr)
        self.assert_clean_stderr(result)
        del self.receiver.requests[:]

    def test_400_413_415_422_are_refusals(self):
        for status in (400, 413, 415, 422):
            self.check(status, action.EXIT_REFUSED)

    def test_401_403_are_auth_failures(self):
        for status in (401, 403):
            self.check(status, action.EXIT_AUTH)

    def test_redirect_is_not_followed(self):
        other = ReceiverStub().start()
        try:
            self.receiver.responses[:] = [(307, {"Location": other.url}, b"")]
            result = run_script(self.payload())
            self.assertEqual(action.EXIT_REFUSED, result.code, result.stderr)
            self.assertEqual([], other.requests)
        finally:
            other.stop()

    def test_secret_echoed_by_receiver_is_redacted(self):
        self.receiver.responses[:] = [(400, {}, {"title": "Bad", "detail": "you sent %s and %s" % (SECRET, SESSION_KEY)})]
        result = run_script(self.payload())
        self.assertEqual(action.EXIT_REFUSED, result.code)
        self.assertIn("<redacted>", result.stderr)
        self.assert_clean_stderr(result)


class BudgetEndToEndTest(ServersMixin, unittest.TestCase):
    responses = [(503, {}, {"title": "Service Unavailable", "status": 503})]

    def test_budget_respected_when_receiver_stays_down(self):
        result = run_script(self.payload(retry_budget="4", timeout="2"))
        self.assertEqual(action.EXIT_UNREACHABLE, result.code, result.stderr)
        self.assertGreaterEqual(len(self.receiver.requests), 2)
        self.assertLess(result.elapsed, 4 + 3.0)  # budget plus interpreter start-up under load
        self.assertIn("gave up", result.stderr)
        self.assert_clean_stderr(result)

    def test_retry_after_beyond_budget(self):
        self.receiver.responses[:] = [(503, {"Retry-After": "120"}, {"title": "Busy"})]
        result = run_script(self.payload(retry_budget="10"))
        self.assertEqual(action.EXIT_UNREACHABLE, result.code, result.stderr)
        self.assertEqual(1, len(self.receiver.requests))
        self.assertLess(result.elapsed, 5)

    def test_hanging_receiver_times_out_within_budget(self):
        self.receiver.delay = 5
        self.receiver.responses[:] = [(202, {}, {})]
        result = run_script(self.payload(retry_budget="3", timeout="1"))
        self.assertEqual(action.EXIT_UNREACHABLE, result.code, result.stderr)
        self.assertLess(result.elapsed, 3 + 3.0)
        self.assertIn("timed out", result.stderr.lower())

    def test_unreachable_receiver(self):
        payload = sample_payload("http://127.0.0.1:%d/v1/alerts/splunk" % free_port(), self.splunkd.base_url,
                                 retry_budget="3")
        result = run_script(payload)
        self.assertEqual(action.EXIT_UNREACHABLE, result.code, result.stderr)
        self.assertIn("network error", result.stderr)
        self.assertLess(result.elapsed, 3 + 3.0)


class SecretEndToEndTest(ServersMixin, unittest.TestCase):
    def test_wrong_session_key(self):
        self.splunkd.session_key = "another-key"
        result = run_script(self.payload())
        self.assertEqual(action.EXIT_SECRET, result.code, result.stderr)
        self.assertIn("HTTP 401", result.stderr)
        self.assertEqual([], self.receiver.requests)
        self.assert_clean_stderr(result)

    def test_owner_without_list_storage_passwords_reads_the_secret_through_the_broker(self):
        self.splunkd.mode = "forbidden"  # storage/passwords refuses the owner's session key
        result = run_script(self.payload())
        self.assertEqual(0, result.code, result.stderr)
        self.assert_clean_stderr(result)
        owner_paths = [r["path"] for r in self.splunkd.requests
                       if r["headers"].get("Authorization") == "Splunk %s" % SESSION_KEY]
        self.assertTrue(owner_paths[0].startswith("/servicesNS/nobody/opsmesh_app/opsmesh/credential?"))
        self.assertFalse([p for p in owner_paths if "storage/passwords" in p], owner_paths)
        self.assertEqual(1, len(self.receiver.requests))

    def test_owner_without_the_broker_capability(self):
        self.splunkd.capabilities = set()
        result = run_script(self.payload())
        self.assertEqual(action.EXIT_SECRET, result.code, result.stderr)
        self.assertIn("requires capability: opsmesh_read_credential", result.stderr)
        self.assertIn("grant the role 'opsmesh_alert_sender' (capability opsmesh_read_credential)", result.stderr)
        self.assertEqual([], self.receiver.requests)

    def test_without_broker_the_owner_needs_list_storage_passwords(self):
        self.splunkd.broker = False
        self.splunkd.mode = "forbidden"
        result = run_script(self.payload())
        self.assertEqual(action.EXIT_SECRET, result.code, result.stderr)
        self.assertIn("WARN no credential broker", result.stderr)
        self.assertIn("opsmesh_alert_sender", result.stderr)
        self.assertEqual([], self.receiver.requests)

    def test_splunkd_errors(self):
        self.splunkd.mode = "error"
        result = run_script(self.payload())
        self.assertEqual(action.EXIT_SECRET, result.code, result.stderr)
        self.assertGreaterEqual(len(self.splunkd.requests), 2)

    def test_splunkd_unreachable(self):
        payload = sample_payload(self.receiver.url, "https://127.0.0.1:%d" % free_port())
        result = run_script(payload)
        self.assertEqual(action.EXIT_SECRET, result.code, result.stderr)

    def test_missing_credential(self):
        result = run_script(self.payload(credential="staging"))
        self.assertEqual(action.EXIT_CONFIG, result.code, result.stderr)
        self.assertIn("no credential 'staging'", result.stderr)
        self.assertEqual([], self.receiver.requests)

    def test_named_credential_and_fallback_listing(self):
        self.splunkd.credentials.clear()
        self.splunkd.credentials[("search", "opsmesh", "prod")] = SECRET
        self.splunkd.credentials[("search", "other", "prod")] = "wrong-realm-secret"
        self.splunkd.broker = False
        result = run_script(self.payload(credential="prod"))
        self.assertEqual(0, result.code, result.stderr)
        paths = [r["path"] for r in self.splunkd.requests]
        self.assertTrue(paths[0].startswith("/servicesNS/nobody/opsmesh_app/opsmesh/credential?"))
        self.assertTrue(paths[1].startswith("/servicesNS/nobody/opsmesh_app/storage/passwords/opsmesh%3Aprod%3A?"))
        self.assertTrue(paths[2].startswith("/servicesNS/-/-/storage/passwords?"))

    def test_missing_session_key(self):
        payload = self.payload()
        del payload["session_key"]
        result = run_script(payload)
        self.assertEqual(action.EXIT_CONFIG, result.code, result.stderr)


class UsageTest(ServersMixin, unittest.TestCase):
    def test_requires_execute(self):
        result = run_script(self.payload(), args=())
        self.assertEqual(action.EXIT_USAGE, result.code)
        self.assertIn("FATAL usage", result.stderr)
        result = run_script(self.payload(), args=("--something",))
        self.assertEqual(action.EXIT_USAGE, result.code)

    def test_payload_not_json(self):
        for raw in (b"<alert/>", b"", b"[1,2]", b"\xff\xfe"):
            result = run_script(None, raw_stdin=raw)
            self.assertEqual(action.EXIT_USAGE, result.code, raw)
            self.assertRegex(result.stderr, r"^FATAL ")

    def test_configuration_errors_exit_3_without_sending(self):
        for conf in ({"receiver_url": ""}, {"receiver_url": "http://opsmesh.example.com/x"},
                     {"severity": "urgent"}, {"max_rows": "-1"}):
            payload = self.payload()
            payload["configuration"].update(conf)
            result = run_script(payload)
            self.assertEqual(action.EXIT_CONFIG, result.code, (conf, result.stderr))
            self.assert_clean_stderr(result)
        self.assertEqual([], self.receiver.requests)
        self.assertEqual([], self.splunkd.requests)


def _openssl():
    return shutil.which("openssl")


@unittest.skipUnless(_openssl(), "openssl is needed to make a throw-away certificate")
class TlsEndToEndTest(unittest.TestCase):
    """https receiver with a private CA: refused without ca_bundle, accepted with it."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="opsmesh-tls-")
        self.cert = os.path.join(self.tmp, "cert.pem")
        key = os.path.join(self.tmp, "key.pem")
        subprocess.run([_openssl(), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                        self.cert, "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.splunkd = SplunkdStub().start()
        self.receiver = ReceiverStub()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.receiver.httpd.socket = context.wrap_socket(self.receiver.httpd.socket, server_side=True)
        self.receiver.start()

    def tearDown(self):
        self.splunkd.stop()
        self.receiver.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_private_ca(self):
        url = "https://127.0.0.1:%d/v1/alerts/splunk" % self.receiver.port
        result = run_script(sample_payload(url, self.splunkd.base_url, retry_budget="10"))
        self.assertEqual(action.EXIT_UNREACHABLE, result.code, result.stderr)
        self.assertIn("certificate verif", result.stderr.lower())
        self.assertEqual([], self.receiver.requests)
        self.assertLess(result.elapsed, 5)  # not retried

        result = run_script(sample_payload(url, self.splunkd.base_url, ca_bundle=self.cert))
        self.assertEqual(0, result.code, result.stderr)
        self.assertEqual(1, len(self.receiver.requests))


class InteropTestSelfTest(unittest.TestCase):
    """tests/test_interop_receiver.py passes against a receiver that keeps the contract, and
    fails (never skips) when the harness does not say where the receiver is."""

    def run_interop(self, env):
        import test_interop_receiver

        saved = {k: os.environ.get(k) for k in ("OPSMESH_RECEIVER_URL", "OPSMESH_RECEIVER_SECRET",
                                                "OPSMESH_RECEIVER_CA")}
        try:
            for key in saved:
                os.environ.pop(key, None)
            os.environ.update(env)
            suite = unittest.defaultTestLoader.loadTestsFromModule(test_interop_receiver)
            result = unittest.TestResult()
            suite.run(result)
            return result
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def test_passes_against_contract_receiver(self):
        receiver = ReceiverStub(secret="interop-" + SECRET).start()
        try:
            result = self.run_interop({"OPSMESH_RECEIVER_URL": receiver.url,
                                       "OPSMESH_RECEIVER_SECRET": "interop-" + SECRET})
        finally:
            receiver.stop()
        problems = [(str(t), tb) for t, tb in result.failures + result.errors]
        self.assertEqual([], problems)
        self.assertEqual(8, result.testsRun)
        self.assertEqual([], result.skipped)

    def test_fails_without_environment(self):
        result = self.run_interop({})
        self.assertEqual(8, result.testsRun)
        self.assertEqual(8, len(result.failures))
        self.assertEqual([], result.skipped)
        self.assertIn("OPSMESH_RECEIVER_URL", result.failures[0][1])

    def test_fails_against_receiver_that_accepts_anything(self):
        receiver = ReceiverStub(verify=False).start()
        try:
            result = self.run_interop({"OPSMESH_RECEIVER_URL": receiver.url,
                                       "OPSMESH_RECEIVER_SECRET": SECRET})
        finally:
            receiver.stop()
        self.assertGreaterEqual(len(result.failures), 4)


class LogLevelTest(unittest.TestCase):
    def test_lines_below_the_level_are_dropped(self):
        log = quiet_log()
        log.set_level("WARN")
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.error("e")
        log.fatal("f")
        self.assertEqual(["WARN w", "ERROR e", "FATAL f"], log.stream.text.splitlines())

    def test_parse_config_checks_the_level(self):
        site = {"receiver_url": "https://r.example.com/"}
        self.assertEqual("DEBUG", action.parse_config(dict(site, log_level="debug")).log_level)
        with self.assertRaises(action.ActionError) as ctx:
            action.parse_config(dict(site, log_level="TRACE"))
        self.assertIn("param.log_level must be one of DEBUG, INFO, WARN, ERROR", ctx.exception.message)


class ProxyTest(unittest.TestCase):
    """param.proxy_url: the request goes to the proxy with the receiver's absolute URL."""

    def test_request_goes_through_the_proxy(self):
        proxy = ReceiverStub(verify=False)
        proxy.start()
        self.addCleanup(proxy.stop)
        status, _, _ = action.http_request("POST", "http://opsmesh-receiver.example/v1/alerts/splunk",
                                           {"Content-Type": "application/json"}, b"{}", 5,
                                           action.receiver_tls_context(""), proxy.base_url)
        self.assertEqual(202, status)
        self.assertEqual("http://opsmesh-receiver.example/v1/alerts/splunk", proxy.requests[0]["path"])

    def test_loopback_receivers_bypass_the_proxy(self):
        receiver = ReceiverStub(verify=False)
        receiver.start()
        self.addCleanup(receiver.stop)
        status, _, _ = action.http_request("POST", receiver.url, {}, b"{}", 5, action.receiver_tls_context(""),
                                           "http://proxy.invalid:3128")
        self.assertEqual((202, "/v1/alerts/splunk"), (status, receiver.requests[0]["path"]))

    def test_proxy_url_is_validated(self):
        with self.assertRaises(action.ActionError) as ctx:
            action.parse_config({"receiver_url": "https://r.example.com/", "proxy_url": "proxy:3128"})
        self.assertIn("param.proxy_url must look like http://", ctx.exception.message)


if __name__ == "__main__":
    unittest.main()
