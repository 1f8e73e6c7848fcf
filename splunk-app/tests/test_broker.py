"""bin/opsmesh_credential.py, the credential broker, as splunkd calls it (persistent REST
handler request JSON), against a fake splunkd transport that records every call."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402

broker = support.load_broker()
USER_TOKEN = "user-token"
SYSTEM_TOKEN = "system-token"
BASE = "https://127.0.0.1:8089"


class FakeSplunkd(object):
    def __init__(self, capabilities=("opsmesh_read_credential",), credentials=None):
        self.capabilities = list(capabilities)
        # {(realm, username): secret}
        self.credentials = credentials if credentials is not None else {("opsmesh", "default"): "s3cret-value"}
        self.calls = []

    def __call__(self, method, url, headers, body, timeout, context):
        token = headers["Authorization"][len("Splunk "):]
        self.calls.append((method, url, token))
        path = url[len(BASE):].split("?")[0]
        if path == "/services/authentication/current-context":
            if token != USER_TOKEN:
                return 401, {}, b"{}"
            doc = {"entry": [{"content": {"username": "alice", "capabilities": self.capabilities}}]}
            return 200, {}, json.dumps(doc).encode()
        prefix = "/servicesNS/nobody/opsmesh_app/storage/passwords/"
        if path.startswith(prefix) and token == SYSTEM_TOKEN:
            realm, username, _ = broker.urlparse.unquote(path[len(prefix):]).split(":")
            secret = self.credentials.get((realm, username))
            if secret is None:
                return 404, {}, b'{"messages":[{"type":"ERROR","text":"Could not find object"}]}'
            doc = {"entry": [{"content": {"realm": realm, "username": username, "clear_password": secret}}]}
            return 200, {}, json.dumps(doc).encode()
        return 403, {}, b"{}"


def request(name="default", **overrides):
    req = {"method": "GET", "query": [["name", name], ["output_mode", "json"]],
           "session": {"user": "alice", "authtoken": USER_TOKEN}, "system_authtoken": SYSTEM_TOKEN,
           "server": {"rest_uri": BASE}}
    req.update(overrides)
    return req


class BrokerTest(unittest.TestCase):
    def test_returns_only_the_secret_of_the_named_opsmesh_credential(self):
        splunkd = FakeSplunkd()
        reply = broker.handle(request(), "opsmesh_app", transport=splunkd)
        self.assertEqual(200, reply["status"])
        self.assertEqual({"name": "default", "realm": "opsmesh", "secret": "s3cret-value"}, reply["payload"])
        # capability checked with the caller's token, the credential read with the system token
        self.assertEqual([("GET", BASE + "/services/authentication/current-context?output_mode=json", USER_TOKEN),
                          ("GET", BASE + "/servicesNS/nobody/opsmesh_app/storage/passwords/opsmesh%3Adefault%3A"
                                         "?output_mode=json", SYSTEM_TOKEN)], splunkd.calls)

    def test_capability_is_checked_even_if_restmap_let_the_call_through(self):
        splunkd = FakeSplunkd(capabilities=["search", "list_storage_passwords"])
        reply = broker.handle(request(), "opsmesh_app", transport=splunkd)
        self.assertEqual(403, reply["status"])
        self.assertIn("user alice lacks the capability opsmesh_read_credential", reply["payload"]["error"])
        self.assertNotIn("secret", reply["payload"])
        self.assertEqual(1, len(splunkd.calls), "no credential read without the capability")

    def test_unconfirmed_session(self):
        reply = broker.handle(request(session={"authtoken": "forged"}), "opsmesh_app", transport=FakeSplunkd())
        self.assertEqual(401, reply["status"])

    def test_other_realms_and_names_are_unreachable(self):
        splunkd = FakeSplunkd(credentials={("slack", "default"): "other-app-secret",
                                           ("opsmesh", "default"): "s3cret-value"})
        for name in ("slack:default", "default:", "../slack", "", "a" * 129, "*"):
            reply = broker.handle(request(name=name), "opsmesh_app", transport=splunkd)
            self.assertEqual(400, reply["status"], name)
            self.assertIn("query parameter 'name'", reply["payload"]["error"])
        self.assertEqual([], splunkd.calls)

    def test_missing_credential(self):
        reply = broker.handle(request(name="prod"), "opsmesh_app", transport=FakeSplunkd())
        self.assertEqual(404, reply["status"])
        self.assertTrue(reply["payload"]["credential_missing"])

    def test_needs_the_system_token(self):
        req = request()
        del req["system_authtoken"]
        reply = broker.handle(req, "opsmesh_app", transport=FakeSplunkd())
        self.assertEqual(500, reply["status"])
        self.assertIn("passSystemAuth = true", reply["payload"]["error"])

    def test_handler_class_parses_splunkd_json(self):
        handler = broker.CredentialHandler("cmd", "arg")
        self.assertEqual(400, handler.handle("not json")["status"])
        self.assertEqual(405, handler.handle(json.dumps(dict(request(), method="POST")))["status"])


if __name__ == "__main__":
    unittest.main()
