"""Interop with the real opsmesh alert-receiver (the Rust service).

The harness starts an alert-receiver and runs, from the repository root:

    OPSMESH_RECEIVER_URL=http://127.0.0.1:PORT/v1/alerts/splunk \\
    OPSMESH_RECEIVER_SECRET=<the receiver's signing secret> \\
    python3 splunk-app/tests/run.py --interop-only

OPSMESH_RECEIVER_URL is the full URL of the receiver's Splunk alert-action endpoint (https,
or http on a loopback address); OPSMESH_RECEIVER_CA optionally names a PEM bundle that signs
an https receiver's certificate. Without the two variables every test here FAILS (it does
not skip): a harness that forgot them must not pass.

What is checked:
* bin/opsmesh.py run exactly as Splunk runs it (python3 bin/opsmesh.py --execute < payload,
  the reference sample payload and results.csv.gz, the secret served by a local stand-in for
  splunkd's storage/passwords) is accepted: exit 0, HTTP 2xx logged;
* a correctly signed request answers 202 {"alert_ids": [...], "incident_key": "..."};
* the same request with a tampered body, a wrong secret, a stale timestamp or no signature is
  refused with 401/403 and an RFC 9457 problem document;
* the script exits 5 (authentication) when its secret does not match the receiver's;
* the setup page's test alert (opsmesh/test_alert) is answered 200 in the receiver's test mode.
"""
import hashlib
import hmac
import io
import json
import os
import ssl
import sys
import time
import unittest
from urllib import error as urlerror
from urllib import request as urlrequest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402
from support import SESSION_KEY, SplunkdStub, run_script, sample_payload, shipped_detection  # noqa: E402

action = support.load_action()

URL_VAR = "OPSMESH_RECEIVER_URL"
SECRET_VAR = "OPSMESH_RECEIVER_SECRET"
CA_VAR = "OPSMESH_RECEIVER_CA"


def _sign(secret, timestamp, body):
    """Independent of the action's code: t=<unix>,v1=hex(HMAC-SHA256(secret, "<t>.<body>"))."""
    digest = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "t=%d,v1=%s" % (timestamp, digest.hexdigest())


class ReceiverInteropTest(unittest.TestCase):
    def setUp(self):
        missing = [name for name in (URL_VAR, SECRET_VAR) if not os.environ.get(name)]
        if missing:
            self.fail("interop test needs %s (the running alert-receiver's Splunk endpoint and its "
                      "signing secret); see the docstring of %s" % (" and ".join(missing), __file__))
        self.url = os.environ[URL_VAR]
        self.secret = os.environ[SECRET_VAR]
        self.ca = os.environ.get(CA_VAR, "")
        self.splunkd = SplunkdStub(credentials={(support.APP_ID, "opsmesh", "default"): self.secret}).start()

    def tearDown(self):
        self.splunkd.stop()

    # -- helpers ------------------------------------------------------------

    def payload(self, **conf):
        if self.ca:
            conf.setdefault("ca_bundle", self.ca)
        conf.setdefault("retry_budget", "30")
        # the fields allow-list of the shipped detection the sample alert comes from, so its
        # rows reach the receiver as that detection would send them
        with open(support.SAMPLE_PAYLOAD) as fh:
            detection = shipped_detection(json.load(fh)["search_name"])
        for param in ("entity_fields", "fields_override"):
            conf.setdefault(param, detection["action.opsmesh.param.%s" % param])
        return sample_payload(self.url, self.splunkd.base_url, **conf)

    def body(self):
        """A body as the action builds it from the reference sample."""
        with open(support.SAMPLE_PAYLOAD) as fh:
            sample = json.load(fh)
        rows, more = action.read_results_file(support.SAMPLE_RESULTS, 1000, action.Log(io.StringIO()))
        meta = {"sid": sample["sid"], "search_name": sample["search_name"], "app": sample["app"],
                "owner": sample["owner"], "results_link": sample["results_link"],
                "server_host": sample["server_host"], "cluster": "default", "severity": "high",
                "entity_fields": ["namespace", "model_name"], "sent_at": int(time.time())}
        body, _, _ = action.build_body(meta, rows[0], rows, more, 1000000)
        return body

    def post(self, body, signature):
        headers = {"Content-Type": "application/json", "Accept": "application/json, application/problem+json"}
        if signature is not None:
            headers["X-Opsmesh-Signature"] = signature
        req = urlrequest.Request(self.url, data=body, headers=headers, method="POST")
        handlers = [urlrequest.ProxyHandler({})]
        if self.url.lower().startswith("https"):
            context = ssl.create_default_context(cafile=self.ca or None)
            handlers.append(urlrequest.HTTPSHandler(context=context))
        opener = urlrequest.build_opener(*handlers)
        try:
            with opener.open(req, timeout=15) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), resp.read()
        except urlerror.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), err.read()

    def assert_refused(self, status, ctype, data, what):
        self.assertIn(status, (401, 403), "%s: expected 401/403, got %d %r" % (what, status, data[:300]))
        self.assertIn("application/problem+json", ctype, "%s: refusal is not an RFC 9457 problem" % what)
        doc = json.loads(data.decode("utf-8"))
        self.assertIsInstance(doc, dict)
        self.assertTrue(doc.get("title") or doc.get("type"), "%s: problem without title/type: %r" % (what, doc))

    # -- tests ----------------------------------------------------------------

    def test_script_run_as_splunk_runs_it_is_accepted(self):
        result = run_script(self.payload())
        self.assertEqual(0, result.code, result.stderr)
        self.assertRegex(result.stderr, r"INFO delivered to \S+: HTTP 20\d")
        self.assertNotIn(self.secret, result.stderr)
        self.assertNotIn(SESSION_KEY, result.stderr)

    def test_signed_request_is_accepted_with_alert_ids(self):
        body = self.body()
        status, _, data = self.post(body, _sign(self.secret, int(time.time()), body))
        self.assertEqual(202, status, data[:300])
        doc = json.loads(data.decode("utf-8"))
        self.assertIsInstance(doc.get("alert_ids"), list)
        self.assertTrue(doc["alert_ids"])
        self.assertIsInstance(doc.get("incident_key"), str)
        self.assertTrue(doc["incident_key"])

    def test_tampered_body_is_refused(self):
        body = self.body()
        signature = _sign(self.secret, int(time.time()), body)
        tampered = body.replace(b'"severity":"high"', b'"severity":"low"')
        self.assertNotEqual(body, tampered)
        self.assert_refused(*self.post(tampered, signature), what="tampered body")

    def test_wrong_secret_is_refused(self):
        body = self.body()
        self.assert_refused(*self.post(body, _sign(self.secret + "x", int(time.time()), body)), what="wrong secret")

    def test_stale_signature_is_refused(self):
        body = self.body()
        self.assert_refused(*self.post(body, _sign(self.secret, int(time.time()) - 86400, body)),
                            what="signature a day old")

    def test_missing_signature_is_refused(self):
        self.assert_refused(*self.post(self.body(), None), what="no signature")

    def test_the_setup_pages_test_alert_is_answered_in_test_mode(self):
        """opsmesh/test_alert: the receiver validates it and answers 200 without an incident
        (the Rust side checks that no alert of it reached the mesh)."""
        settings = support.load_module("opsmesh_settings")
        params = {"receiver_url": self.url, "credential": "default", "ca_bundle": self.ca, "retry_budget": "30"}

        def transport(method, url, headers, body, timeout, context, proxy_url=""):
            if url.startswith(self.splunkd.base_url) and "/configs/conf-alert_actions/" in url:
                content = dict(("param.%s" % k, v) for k, v in params.items())
                return 200, {}, json.dumps({"entry": [{"name": "opsmesh", "content": content}]}).encode()
            return action.http_request(method, url, headers, body, timeout, context, proxy_url)

        splunkd = settings.Splunkd(self.splunkd.base_url, SESSION_KEY, support.APP_ID, transport)
        reply = settings.send_test_alert(splunkd, transport)
        self.assertEqual(200, reply["status"], reply)
        self.assertTrue(reply["payload"]["delivered"])
        self.assertRegex("\n".join(reply["payload"]["log"]), r"delivered to \S+: HTTP 200")

    def test_script_with_wrong_secret_exits_5(self):
        self.splunkd.credentials[(support.APP_ID, "opsmesh", "default")] = self.secret + "-wrong"
        result = run_script(self.payload())
        self.assertEqual(action.EXIT_AUTH, result.code, result.stderr)
        self.assertNotIn(self.secret, result.stderr)


if __name__ == "__main__":
    unittest.main()
