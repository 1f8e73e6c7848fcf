"""bin/opsmesh_settings.py, the setup page's backend, as splunkd calls it (persistent REST
handler request JSON): validation on save, field by field; the stored secret never returned;
and the "send test alert" endpoint against a loopback receiver that checks the signature with
the independent verifier (support.verify_signature)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from urllib import parse as urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402

settings = support.load_module("opsmesh_settings")
action = support.load_action()
TOKEN = "admin-session-token"
BASE = "https://127.0.0.1:8089"
APP = "/servicesNS/nobody/opsmesh_app"
STORED_SECRET = support.SECRET


def make_ca_pem():
    """A throw-away self-signed CA certificate as PEM text (openssl)."""
    tmp = tempfile.mkdtemp()
    try:
        cert, key = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "ca.key")
        subprocess.run([shutil.which("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "2", "-subj", "/CN=opsmesh test CA"],
                       check=True, capture_output=True)
        with open(cert, encoding="ascii") as fh:
            return fh.read()
    finally:
        shutil.rmtree(tmp)


class FakeSplunkd(object):
    """alert_actions.conf [opsmesh] and storage/passwords, as splunkd's REST API shapes them."""

    def __init__(self, params=None, secrets=None):
        self.params = dict(params or {})
        self.secrets = dict(secrets if secrets is not None else {"default": STORED_SECRET})
        self.calls = []
        self.configured = False

    def __call__(self, method, url, headers, body, timeout, context):
        assert headers["Authorization"] == "Splunk %s" % TOKEN, "every call uses the caller's session"
        path = url[len(BASE):].split("?")[0]
        form = dict(urlparse.parse_qsl(body.decode())) if body else {}
        self.calls.append((method, path, form))
        conf = APP + "/configs/conf-alert_actions/opsmesh"
        passwords = APP + "/storage/passwords"
        if path == conf and method == "GET":
            content = dict(("param.%s" % k, v) for k, v in self.params.items())
            return 200, {}, json.dumps({"entry": [{"name": "opsmesh", "content": content}]}).encode()
        if path == conf and method == "POST":
            self.params.update((k[len("param."):], v) for k, v in form.items())
            return 200, {}, b"{}"
        if path == passwords and method == "POST":
            if form["name"] in self.secrets:
                return 409, {}, b"{}"
            self.secrets[form["name"]] = form["password"]
            return 201, {}, b"{}"
        if path.startswith(passwords + "/"):
            realm, name, _ = urlparse.unquote(path[len(passwords) + 1:].split("/")[0]).split(":")
            assert realm == "opsmesh"
            if path.endswith("/acl"):
                return 200, {}, b"{}"
            if method == "POST":
                self.secrets[name] = form["password"]
                return 200, {}, b"{}"
            if name not in self.secrets:
                return 404, {}, b"{}"
            doc = {"entry": [{"content": {"realm": realm, "username": name, "clear_password": self.secrets[name]}}]}
            return 200, {}, json.dumps(doc).encode()
        if path == "/services/apps/local/opsmesh_app" and method == "POST":
            self.configured = form == {"configured": "true"}
            return 200, {}, b"{}"
        return 404, {}, b"{}"


def request(method="GET", path="/opsmesh/settings", form=None):
    req = {"method": method, "rest_path": path, "session": {"user": "admin", "authtoken": TOKEN},
           "server": {"rest_uri": BASE}}
    if form is not None:
        req["payload"] = urlparse.urlencode(form)
    return req


VALID = {"receiver_url": "https://opsmesh.example.com/v1/alerts/splunk", "credential": "default",
         "cluster": "prod-eu", "timeout": "10", "retry_budget": "120", "proxy_url": "", "log_level": "INFO",
         "ca_bundle": "", "secret": ""}


class ValidationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ca_pem = make_ca_pem() if shutil.which("openssl") else None

    def errors(self, **changes):
        return settings.validate_settings(dict(VALID, **changes))[2]

    def assertRejected(self, field, value, needle):
        errors = self.errors(**{field: value})
        self.assertEqual([field], list(errors), "%s=%r" % (field, value))
        self.assertIn(needle, errors[field])

    def test_valid_settings_pass(self):
        values, secret, errors = settings.validate_settings(VALID)
        self.assertEqual({}, errors)
        self.assertIsNone(secret)
        self.assertEqual("prod-eu", values["cluster"])

    def test_receiver_url_https_except_loopback(self):
        self.assertRejected("receiver_url", "http://alert-receiver:8080/v1/alerts/splunk", "must use https")
        self.assertRejected("receiver_url", "", "not set")
        self.assertRejected("receiver_url", "ftp://r.example.com/", "https URL")
        self.assertRejected("receiver_url", "https://user:pw@r.example.com/", "credentials")
        for ok in ("http://127.0.0.1:8080/v1/alerts/splunk", "http://localhost/v1/alerts/splunk",
                   "http://[::1]:8080/x", "https://r.example.com/v1/alerts/splunk"):
            self.assertEqual({}, self.errors(receiver_url=ok), ok)

    def test_timeouts_numeric_and_bounded(self):
        self.assertRejected("timeout", "ten", "must be a number")
        self.assertRejected("timeout", "0.5", "between 1 and 60")
        self.assertRejected("timeout", "61", "between 1 and 60")
        self.assertRejected("timeout", "nan", "between 1 and 60")
        self.assertRejected("retry_budget", "151", "between 1 and 150")
        self.assertRejected("retry_budget", "-1", "between 1 and 150")
        self.assertEqual("2.5", settings.validate_settings(dict(VALID, timeout="2.5"))[0]["timeout"])

    def test_log_level_from_the_fixed_list(self):
        self.assertRejected("log_level", "TRACE", "DEBUG, INFO, WARN, ERROR")
        self.assertEqual("DEBUG", settings.validate_settings(dict(VALID, log_level="debug"))[0]["log_level"])

    def test_proxy_url_syntax(self):
        self.assertRejected("proxy_url", "proxy.example.com:3128", "must look like http://")
        self.assertRejected("proxy_url", "socks5://proxy.example.com:1080", "must look like http://")
        self.assertRejected("proxy_url", "http://u:p@proxy.example.com:3128", "credentials")
        self.assertRejected("proxy_url", "http://proxy.example.com:3128/path", "without a path")
        self.assertRejected("proxy_url", "http://proxy.example.com:99999", "not a valid URL")
        self.assertEqual({}, self.errors(proxy_url="http://proxy.example.com:3128"))

    def test_credential_and_cluster_names(self):
        self.assertRejected("credential", "a b", "letters, digits")
        self.assertRejected("cluster", "-x", "letters, digits")

    def test_ca_bundle_is_pem_text_never_a_path(self):
        self.assertRejected("ca_bundle", "/opt/splunk/etc/auth/ca.pem", "PEM text")
        self.assertRejected("ca_bundle", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----",
                            "not a loadable PEM CA bundle")

    @unittest.skipUnless(shutil.which("openssl"), "openssl makes the test CA")
    def test_ca_bundle_pem_loads(self):
        values, _, errors = settings.validate_settings(dict(VALID, ca_bundle=self.ca_pem))
        self.assertEqual({}, errors)
        self.assertEqual(self.ca_pem.strip() + "\n", values["ca_bundle"])
        # the action takes the same text
        cfg = action.parse_config({"receiver_url": VALID["receiver_url"], "ca_bundle": values["ca_bundle"]})
        self.assertIsNotNone(action.receiver_tls_context(cfg.ca_bundle))

    def test_secret_rules(self):
        self.assertRejected("secret", "short", "16-1024 characters")
        self.assertRejected("secret", " leading-space-secret-0123", "whitespace")
        self.assertIsNone(settings.validate_settings(dict(VALID, secret=settings.SECRET_MASK))[1])
        self.assertEqual("n3w-secret-0123456789", settings.validate_settings(
            dict(VALID, secret="n3w-secret-0123456789"))[1])


class SettingsEndpointTest(unittest.TestCase):
    def test_get_masks_the_stored_secret(self):
        splunkd = FakeSplunkd(params={"receiver_url": VALID["receiver_url"], "credential": "default"})
        reply = settings.handle(request(), "opsmesh_app", transport=splunkd)
        self.assertEqual(200, reply["status"])
        self.assertEqual(settings.SECRET_MASK, reply["payload"]["secret"])
        self.assertTrue(reply["payload"]["secret_stored"])
        self.assertNotIn(STORED_SECRET, json.dumps(reply))
        self.assertEqual(VALID["receiver_url"], reply["payload"]["settings"]["receiver_url"])

    def test_get_without_a_stored_secret(self):
        splunkd = FakeSplunkd(params={"credential": "default"}, secrets={})
        reply = settings.handle(request(), "opsmesh_app", transport=splunkd)
        self.assertEqual(("", False), (reply["payload"]["secret"], reply["payload"]["secret_stored"]))

    def test_post_invalid_names_every_bad_field_and_stores_nothing(self):
        splunkd = FakeSplunkd()
        form = dict(VALID, receiver_url="http://r.example.com/", timeout="0", log_level="LOUD")
        reply = settings.handle(request("POST", form=form), "opsmesh_app", transport=splunkd)
        self.assertEqual(400, reply["status"])
        self.assertEqual({"receiver_url", "timeout", "log_level"}, set(reply["payload"]["errors"]))
        self.assertFalse([c for c in splunkd.calls if c[0] == "POST"])

    def test_post_stores_settings_and_new_secret_and_returns_the_mask(self):
        splunkd = FakeSplunkd(secrets={})
        form = dict(VALID, credential="prod", proxy_url="http://proxy.example.com:3128", secret="n3w-secret-0123456789")
        reply = settings.handle(request("POST", form=form), "opsmesh_app", transport=splunkd)
        self.assertEqual(200, reply["status"], reply)
        self.assertEqual({"prod": "n3w-secret-0123456789"}, splunkd.secrets)
        self.assertEqual("http://proxy.example.com:3128", splunkd.params["proxy_url"])
        self.assertNotIn("secret", splunkd.params)
        self.assertNotIn("n3w-secret-0123456789", json.dumps(reply))
        self.assertTrue(splunkd.configured)
        acl = [c for c in splunkd.calls if c[1].endswith("/acl")]
        self.assertEqual("admin,sc_admin", acl[0][2]["perms.write"])

    def test_post_with_the_mask_keeps_the_stored_secret(self):
        splunkd = FakeSplunkd()
        reply = settings.handle(request("POST", form=dict(VALID, secret=settings.SECRET_MASK)), "opsmesh_app",
                                transport=splunkd)
        self.assertEqual(200, reply["status"])
        self.assertEqual({"default": STORED_SECRET}, splunkd.secrets)
        self.assertFalse([c for c in splunkd.calls if "storage/passwords" in c[1] and c[0] == "POST"])

    def test_post_without_any_secret_is_refused(self):
        reply = settings.handle(request("POST", form=VALID), "opsmesh_app", transport=FakeSplunkd(secrets={}))
        self.assertEqual(400, reply["status"])
        self.assertIn("no secret is stored", reply["payload"]["errors"]["secret"])


class HandlerClassTest(unittest.TestCase):
    def test_splunkd_request_json(self):
        handler = settings.SettingsHandler()
        self.assertEqual(400, handler.handle("not json")["status"])
        self.assertEqual(400, handler.handle("[]")["status"])
        # no session: splunkd always passes one when requireAuthentication = true
        self.assertEqual(500, handler.handle(json.dumps({"method": "GET"}))["status"])


class TestAlertEndpointTest(unittest.TestCase):
    def setUp(self):
        self.receiver = support.ReceiverStub()
        self.receiver.start()
        self.addCleanup(self.receiver.stop)

    def send(self, splunkd):
        def transport(method, url, headers, body, timeout, context, proxy_url=""):
            if url.startswith(BASE):
                return splunkd(method, url, headers, body, timeout, context)
            return action.http_request(method, url, headers, body, timeout, context, proxy_url)
        return settings.handle(request("POST", "/opsmesh/test_alert"), "opsmesh_app", transport=transport)

    def test_sends_a_signed_test_alert_the_receiver_verifies(self):
        reply = self.send(FakeSplunkd(params={"receiver_url": self.receiver.url, "cluster": "prod-eu"}))
        self.assertEqual(200, reply["status"], reply)
        self.assertTrue(reply["payload"]["delivered"])
        self.assertEqual(1, len(self.receiver.requests))
        sent = self.receiver.requests[0]
        self.assertTrue(support.verify_signature(STORED_SECRET, sent["headers"]["X-Opsmesh-Signature"], sent["body"]))
        doc = json.loads(sent["body"])
        self.assertEqual(("opsmesh setup test alert", "prod-eu", "info"),
                         (doc["search_name"], doc["cluster"], doc["severity"]))
        self.assertIs(True, doc["opsmesh_test"], "the receiver's test mode: no incident is opened")
        self.assertNotIn(STORED_SECRET, json.dumps(reply))

    def test_wrong_secret_reports_the_receivers_refusal(self):
        reply = self.send(FakeSplunkd(params={"receiver_url": self.receiver.url},
                                      secrets={"default": "not-the-receivers-secret-000"}))
        self.assertEqual(502, reply["status"])
        self.assertFalse(reply["payload"]["delivered"])
        self.assertIn("rejected the signature", reply["payload"]["error"])

    def test_invalid_stored_settings_are_reported(self):
        reply = self.send(FakeSplunkd(params={"receiver_url": "http://r.example.com/"}))
        self.assertEqual(400, reply["status"])
        self.assertIn("must use https", reply["payload"]["error"])
        self.assertEqual([], self.receiver.requests)

    def test_only_post(self):
        reply = settings.handle(request("GET", "/opsmesh/test_alert"), "opsmesh_app", transport=FakeSplunkd())
        self.assertEqual(405, reply["status"])


if __name__ == "__main__":
    unittest.main()
