#!/usr/bin/env python3
"""The compose stack's TLS and Splunk set-up, run for real without Docker.

    test_compose_init.py        # prints "ok   ..." / "FAIL ..." per test (deploy/check.sh)

* compose/tls.sh generates the CA and the certificates: SANs, `openssl verify`, key usage,
  idempotent re-runs.
* compose/splunk/splunk-init.sh (POSIX sh + curl, as in the curlimages/curl container) runs
  against a loopback splunkd double over TLS with the generated splunkd.pem, verified with the
  generated CA. The double answers splunkd's REST API with its status codes and JSON shapes
  (feeds with entry/content, `messages` on errors, 201/409 on create) and runs the app's own
  setup handler (splunk-app/opsmesh_app/bin/opsmesh_settings.py) for opsmesh/settings and
  opsmesh/test_alert, the way splunkd runs a persistent REST handler. The test alert goes
  over TLS (the CA as param.ca_bundle) through nginx running compose/receiver-tls/nginx.conf
  (its ports, certificate paths and upstream pointed at loopback) to a loopback receiver that
  checks the signature independently.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

DEPLOY = Path(__file__).resolve().parent.parent
REPO = DEPLOY.parent
COMPOSE = DEPLOY / "compose"
SPLUNK_TESTS = REPO / "splunk-app" / "tests"
sys.path.insert(0, str(SPLUNK_TESTS))
import support  # noqa: E402  (the app's test helpers: conf reader, signature verifier)

APP = "opsmesh_app"
PASSWORD = "Om-admin-password-1234"
SESSION = "splunkd-session-of-admin-0123456789"
HEC = "/servicesNS/nobody/splunk_httpinput/data/inputs/http"
SAVED = f"/servicesNS/nobody/{APP}/saved/searches"


def feed(entries, status_origin="https://127.0.0.1:8089/services"):
    return {"links": {}, "origin": status_origin, "updated": "2026-01-01T00:00:00+00:00",
            "generator": {"build": "0", "version": "9.4.3"}, "entry": entries,
            "paging": {"total": len(entries), "perPage": 30, "offset": 0}, "messages": []}


def entry(name, content):
    return {"name": name, "id": f"https://127.0.0.1:8089/servicesNS/nobody/{APP}/{name}",
            "updated": "2026-01-01T00:00:00+00:00", "links": {}, "author": "nobody",
            "acl": {"app": APP, "owner": "nobody", "sharing": "app"}, "content": content}


def error(text):
    return {"messages": [{"type": "ERROR", "text": text}]}


class SplunkdState:
    def __init__(self):
        conf = support.read_conf(os.path.join(support.APP_DIR, "default", "savedsearches.conf"))
        self.saved = {name: dict(s) for name, s in conf.items() if name != "default"}
        self.indexes = {"main", "_internal"}
        self.hec_enabled = False
        self.hec = {}            # input name -> {"token", "index", "indexes"}
        self.params = {}         # alert_actions.conf [opsmesh] param.* (without the prefix)
        self.passwords = {}      # (realm, user) -> password
        self.password_acl = {}
        self.configured = False
        self.tokens_auth = False
        self.tokens = set()
        self.calls = []


class Splunkd(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def send(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        st = self.server.state
        if auth == f"Splunk {SESSION}":
            return True
        if auth.startswith("Basic "):
            return base64.b64decode(auth[6:]).decode() == f"admin:{PASSWORD}"
        return auth.startswith("Bearer ") and st.tokens_auth and auth[7:] in st.tokens

    def dispatch(self, method):
        st = self.server.state
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        form = dict(parse_qsl(raw, keep_blank_values=True))
        st.calls.append((method, path))
        if not self.authorized():
            return self.send(401, {"messages": [{"type": "WARN", "text": "call not properly authenticated"}]})
        status, doc = self.route(st, method, path, query, form, raw)
        self.send(status, doc)

    def route(self, st, method, path, query, form, raw):  # noqa: C901 - one table of endpoints
        app = f"/servicesNS/nobody/{APP}"
        if (method, path) == ("POST", "/services/data/indexes"):
            if form["name"] in st.indexes:
                return 409, error(f"In handler 'indexes': Argument validation for create failed: Index {form['name']} already exists")
            st.indexes.add(form["name"])
            return 201, feed([entry(form["name"], {"homePath": f"$SPLUNK_DB/{form['name']}/db"})])
        if (method, path) == ("POST", f"{HEC}/http/enable"):
            st.hec_enabled = True
            return 200, feed([entry("http", {"disabled": False})])
        if path == HEC and method == "POST":
            if form["name"] in st.hec:
                return 409, error(f"Object id=http://{form['name']} cannot be created because it already exists.")
            st.hec[form["name"]] = {"token": form["token"], "index": form["index"], "indexes": form["indexes"].split(",")}
            return 201, feed([entry(f"http://{form['name']}", st.hec[form["name"]])])
        if path.startswith(f"{HEC}/") and path != f"{HEC}/http":
            name = path[len(HEC) + 1:]
            if name not in st.hec:
                return 404, error(f"Could not find object id=http://{name}")
            if method == "GET":
                return 200, feed([entry(f"http://{name}", dict(st.hec[name], disabled=False))])
            if method == "DELETE":
                del st.hec[name]
                return 200, feed([])
            st.hec[name].update(index=form["index"], indexes=form["indexes"].split(","))
            return 200, feed([entry(f"http://{name}", st.hec[name])])
        if path in (f"{app}/opsmesh/settings", f"{app}/opsmesh/test_alert"):
            return self.persistent_handler(method, path, form)
        if path == f"{app}/configs/conf-alert_actions/opsmesh":
            if method == "POST":
                st.params.update((k[len("param."):], v) for k, v in form.items() if k.startswith("param."))
            return 200, feed([entry("opsmesh", {f"param.{k}": v for k, v in st.params.items()})])
        if path == f"{app}/storage/passwords" and method == "POST":
            key = (form["realm"], form["name"])
            if key in st.passwords:
                return 409, error("An object with name=%s:%s: already exists" % key)
            st.passwords[key] = form["password"]
            return 201, feed([support._password_entry(APP, *key, form["password"])])
        if path.startswith(f"{app}/storage/passwords/"):
            name, _, acl = path[len(f"{app}/storage/passwords/"):].partition("/")
            realm, user = name.rstrip(":").split(":", 1)
            if (realm, user) not in st.passwords:
                return 404, error(f"Could not find object id={name}")
            if acl == "acl":
                st.password_acl[(realm, user)] = form
            elif method == "POST":
                st.passwords[(realm, user)] = form["password"]
            return 200, feed([support._password_entry(APP, realm, user, st.passwords[(realm, user)])])
        if (method, path) == ("POST", f"/services/apps/local/{APP}"):
            st.configured = form.get("configured") == "true"
            return 200, feed([entry(APP, {"configured": st.configured})])
        if path == SAVED and method == "GET":
            field, _, value = query.get("search", "").partition("=")
            names = [n for n, s in st.saved.items() if not field or s.get(field) == value]
            fields = query.get("f")
            return 200, feed([entry(n, {k: v for k, v in st.saved[n].items() if not fields or k == fields})
                              for n in names])
        if path.startswith(f"{SAVED}/") and method == "POST":
            name = path[len(SAVED) + 1:]
            if name not in st.saved:
                return 404, error(f"Could not find object id={name}")
            st.saved[name].update(form)
            return 200, feed([entry(name, st.saved[name])])
        if (method, path) == ("POST", "/services/admin/token-auth/tokens_auth"):
            st.tokens_auth = form.get("disabled") == "false"
            return 200, feed([entry("tokens_auth", {"disabled": not st.tokens_auth})])
        if (method, path) == ("POST", "/services/authorization/tokens"):
            if not st.tokens_auth:
                return 400, error("Token authentication is disabled")
            token = f"eyJraWQiOiJzcGx1bmsuc2VjcmV0.{len(st.tokens)}.sig"
            st.tokens.add(token)
            return 201, feed([entry("tokens", {"id": "0123abcd", "token": token})])
        if (method, path) == ("GET", "/services/authentication/current-context"):
            return 200, feed([entry("context", {"username": "admin", "capabilities": []})])
        return 404, error("Not Found")

    def persistent_handler(self, method, path, form):
        """What splunkd does for restmap.conf [script:opsmesh_settings]/[script:opsmesh_test_alert]."""
        settings = support.load_module("opsmesh_settings")
        request = {"method": method, "rest_path": path[path.index("/opsmesh/"):],
                   "form": [[k, v] for k, v in form.items()],
                   "session": {"user": "admin", "authtoken": SESSION},
                   "server": {"rest_uri": f"https://127.0.0.1:{self.server.server_address[1]}"}}
        reply = settings.handle(request, APP)
        return reply["status"], reply["payload"]


class Receiver(BaseHTTPRequestHandler):
    """The receiver behind its TLS door (plain HTTP): checks the signature, answers the test mode."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.path, dict(self.headers), body))
        if not support.verify_signature(self.server.secret, self.headers.get("X-Opsmesh-Signature"), body):
            status, doc = 403, {"title": "Credentials refused", "status": 403}
        elif json.loads(body).get("opsmesh_test") is True:
            status, doc = 200, {"test": True, "incident_opened": False}
        else:
            status, doc = 202, {"alert_ids": ["a"], "incident_key": "k"}
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(handler, cert=None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Door:
    """nginx with compose/receiver-tls/nginx.conf, moved onto loopback ports and local files."""

    def __init__(self, work: Path, secrets: Path, upstream_port: int):
        self.port, self.health_port = free_port(), free_port()
        conf = (COMPOSE / "receiver-tls" / "nginx.conf").read_text()
        for old, new in ((" /tmp/", f" {work}/"),  # first: the paths below may lie under /tmp
                         ("listen 8443 ssl;", f"listen 127.0.0.1:{self.port} ssl;"),
                         ("listen 127.0.0.1:8081;", f"listen 127.0.0.1:{self.health_port};"),
                         ("/run/secrets/receiver-tls-cert", str(secrets / "receiver-tls.crt")),
                         ("/run/secrets/receiver-tls-key", str(secrets / "receiver-tls.key")),
                         ("http://alert-receiver:8080", f"http://127.0.0.1:{upstream_port}")):
            assert old in conf, f"nginx.conf no longer has {old!r}"
            conf = conf.replace(old, new)
        (work / "nginx.conf").write_text(conf)
        self.process = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(work), "-c",
                                         str(work / "nginx.conf"), "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.health_port), timeout=0.1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError("nginx did not start: " + self.process.stderr.read())
                threading.Event().wait(0.05)
        raise AssertionError("nginx did not listen within 10 s")

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self.process.stderr.close()


_GENERATED = Path(tempfile.mkdtemp())


def tls_material(name, into):
    """A copy of what tls.sh generates into a fresh folder (generated once per name: RSA keys
    take a while)."""
    source = _GENERATED / name
    if not source.exists():
        subprocess.run(["bash", str(COMPOSE / "tls.sh"), str(source)], check=True, capture_output=True)
    shutil.copytree(source, into)
    return into


def openssl(*args):
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp())
        cls.dir = tls_material("stack", cls.tmp / "secrets")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_certificates_chain_to_the_ca_with_the_hosts_they_are_reached_by(self):
        """tls.sh: receiver-tls and splunkd certificates verify against the CA (openssl verify) and name their hosts"""
        for name, sans in (("receiver-tls", "DNS:receiver-tls, DNS:localhost, IP Address:127.0.0.1"),
                           ("splunkd", "DNS:splunk, DNS:localhost, IP Address:127.0.0.1")):
            cert = str(self.dir / f"{name}.crt")
            self.assertIn(": OK", openssl("verify", "-x509_strict", "-purpose", "sslserver",
                                          "-CAfile", str(self.dir / "ca.pem"), cert))
            self.assertIn(sans, openssl("x509", "-in", cert, "-noout", "-ext", "subjectAltName"))
        self.assertIn("CA:TRUE", openssl("x509", "-in", str(self.dir / "ca.pem"), "-noout", "-ext", "basicConstraints"))
        # splunkd.pem is what server.conf serverCert takes: certificate, its key, the CA
        pem = (self.dir / "splunkd.pem").read_text()
        self.assertEqual(2, pem.count("BEGIN CERTIFICATE"))
        self.assertEqual(1, pem.count("PRIVATE KEY-----") // 2)
        self.assertEqual(0o600, (self.dir / "ca.key").stat().st_mode & 0o777)

    def test_a_second_run_keeps_everything_and_a_new_ca_reissues(self):
        """tls.sh: a re-run changes nothing; a new CA re-issues both certificates"""
        before = {p.name: p.read_bytes() for p in self.dir.iterdir()}
        subprocess.run(["bash", str(COMPOSE / "tls.sh"), str(self.dir)], check=True, capture_output=True)
        self.assertEqual(before, {p.name: p.read_bytes() for p in self.dir.iterdir()})
        other = self.tmp / "other"
        shutil.copytree(self.dir, other)
        (other / "ca.pem").unlink()
        subprocess.run(["bash", str(COMPOSE / "tls.sh"), str(other)], check=True, capture_output=True)
        for name in ("receiver-tls.crt", "splunkd.crt"):
            self.assertNotEqual(before[name], (other / name).read_bytes())
            self.assertIn(": OK", openssl("verify", "-CAfile", str(other / "ca.pem"), str(other / name)))


class SplunkInitTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp)
        self.secrets = tls_material("stack", self.tmp / "secrets")
        (self.secrets / "receiver-hmac").write_text("9f" * 32)
        (self.secrets / "hec-token").write_text("6b1c3f0e-8d1a-4c55-9d0e-7f2a51c0ffee")
        self.splunkd = serve(Splunkd, str(self.secrets / "splunkd.pem"))
        self.splunkd.state = SplunkdState()
        self.receiver = serve(Receiver)
        self.receiver.secret = "9f" * 32
        self.receiver.requests = []
        for server in (self.splunkd, self.receiver):
            self.addCleanup(server.server_close)
            self.addCleanup(server.shutdown)
        (self.tmp / "door").mkdir()
        self.door = Door(self.tmp / "door", self.secrets, self.receiver.server_address[1])
        self.addCleanup(self.door.stop)
        self.receiver_url = f"https://localhost:{self.door.port}/v1/alerts/splunk"
        self.token_path = self.tmp / "search-token"

    def run_init(self, **overrides):
        env = {"PATH": os.environ["PATH"], "SPLUNK_URL": f"https://127.0.0.1:{self.splunkd.server_address[1]}",
               "SPLUNK_PASSWORD": PASSWORD, "SPLUNK_CA_FILE": str(self.secrets / "ca.pem"),
               "TOKEN_PATH": str(self.token_path), "TOKEN_OWNER_UID": str(os.getuid()),
               "OPSMESH_INDEX": "opsmesh", "OPSMESH_CLUSTER": "compose-sim", "RECEIVER_URL": self.receiver_url,
               "RECEIVER_SECRET_FILE": str(self.secrets / "receiver-hmac"),
               "RECEIVER_CA_FILE": str(self.secrets / "ca.pem"), "HEC_TOKEN_FILE": str(self.secrets / "hec-token"),
               "SPLUNK_INIT_TIMEOUT": "20"}
        env.update(overrides)
        return subprocess.run(["sh", str(COMPOSE / "splunk" / "splunk-init.sh")], env=env, capture_output=True,
                              text=True, timeout=120)

    def test_configures_splunk_for_the_loop_through_rest_only(self):
        """splunk-init: index, HEC token, app settings and secret, detections, search token, test alert over TLS"""
        done = self.run_init()
        self.assertEqual(0, done.returncode, done.stdout + done.stderr)
        st = self.splunkd.state
        self.assertIn("opsmesh", st.indexes)
        self.assertTrue(st.hec_enabled)
        self.assertEqual({"opsmesh": {"token": "6b1c3f0e-8d1a-4c55-9d0e-7f2a51c0ffee", "index": "opsmesh",
                                      "indexes": ["opsmesh"]}}, st.hec)
        self.assertEqual({("opsmesh", "default"): "9f" * 32}, st.passwords, "the secret, through the setup handler")
        self.assertIn("opsmesh_alert_sender", st.password_acl[("opsmesh", "default")]["perms.read"])
        self.assertEqual(self.receiver_url, st.params["receiver_url"])
        self.assertEqual((self.secrets / "ca.pem").read_text().strip(), st.params["ca_bundle"].strip())
        self.assertEqual("compose-sim", st.params["cluster"])
        self.assertTrue(st.configured)
        detections = {n for n, s in st.saved.items() if s.get("action.opsmesh") == "1"}
        self.assertGreaterEqual(len(detections), 6)
        self.assertEqual(detections, {n for n, s in st.saved.items() if s.get("disabled") == "0"},
                         "exactly the saved searches that send to opsmesh are enabled")
        self.assertIn(self.token_path.read_text(), st.tokens)
        self.assertEqual(0o400, self.token_path.stat().st_mode & 0o777)
        [(path, headers, body)] = self.receiver.requests
        self.assertEqual("/v1/alerts/splunk", path)
        self.assertEqual("https", headers["X-Forwarded-Proto"], "through the TLS door")
        self.assertTrue(support.verify_signature("9f" * 32, headers["X-Opsmesh-Signature"], body))
        self.assertIs(True, json.loads(body)["opsmesh_test"])
        self.assertIn("test alert delivered", done.stdout)

    def test_a_second_run_is_idempotent_and_follows_a_new_hec_token(self):
        """splunk-init: a re-run keeps the index and search token; a changed HEC token replaces the input"""
        self.assertEqual(0, self.run_init().returncode)
        token = self.token_path.read_text()
        (self.secrets / "hec-token").write_text("0d5e9a77-1b2c-4d3e-8f90-a1b2c3d4e5f6")
        again = self.run_init()
        self.assertEqual(0, again.returncode, again.stdout + again.stderr)
        self.assertIn("index opsmesh ready (409)", again.stdout)
        self.assertIn("existing search token is valid", again.stdout)
        self.assertEqual(token, self.token_path.read_text())
        self.assertEqual("0d5e9a77-1b2c-4d3e-8f90-a1b2c3d4e5f6", self.splunkd.state.hec["opsmesh"]["token"])
        self.assertEqual(2, len(self.receiver.requests))

    def test_a_receiver_the_ca_does_not_vouch_for_fails_the_init(self):
        """splunk-init: fails, naming the test alert, when the receiver's certificate does not verify"""
        other = tls_material("another stack", self.tmp / "other-ca")
        failed = self.run_init(RECEIVER_CA_FILE=str(other / "ca.pem"))
        self.assertNotEqual(0, failed.returncode)
        self.assertIn("the test alert did not reach the receiver (HTTP 502)", failed.stderr)
        self.assertIn("certificate verification failed", failed.stderr)
        self.assertEqual([], self.receiver.requests)

    def test_splunkd_is_verified_against_the_ca(self):
        """splunk-init: refuses a splunkd whose certificate the CA did not sign"""
        other = tls_material("another stack", self.tmp / "other-ca")
        failed = self.run_init(SPLUNK_CA_FILE=str(other / "ca.pem"))
        self.assertNotEqual(0, failed.returncode)
        self.assertEqual([], self.splunkd.state.calls)


class DoorTest(unittest.TestCase):
    def test_the_door_forwards_only_the_alert_endpoints(self):
        """receiver-tls/nginx.conf: https on the CA's certificate, /v1/alerts/ forwarded, the rest 404, health on loopback"""
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp)
        secrets = tls_material("stack", tmp / "secrets")
        receiver = serve(Receiver)
        receiver.secret, receiver.requests = "9f" * 32, []
        self.addCleanup(receiver.server_close)
        self.addCleanup(receiver.shutdown)
        (tmp / "door").mkdir()
        door = Door(tmp / "door", secrets, receiver.server_address[1])
        self.addCleanup(door.stop)
        context = ssl.create_default_context(cafile=str(secrets / "ca.pem"))
        for host in ("localhost", "127.0.0.1"):
            conn = http.client.HTTPSConnection(host, door.port, context=context, timeout=10)
            conn.request("POST", "/v1/alerts/splunk", body=b"{}", headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            self.assertEqual(403, response.status, "forwarded: the receiver checked the signature")
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            response.read()
            self.assertEqual(404, response.status)
            conn.close()
        self.assertEqual(2, len(receiver.requests))
        health = http.client.HTTPConnection("127.0.0.1", door.health_port, timeout=10)
        health.request("GET", "/healthz")
        self.assertEqual(200, health.getresponse().status)


class _Lines(unittest.TextTestResult):
    """ok/FAIL lines for deploy/check.sh's `tool`."""

    def addSuccess(self, test):
        print(f"ok   compose: {test.shortDescription()}")

    def addFailure(self, test, err):
        print(f"FAIL compose: {test.shortDescription()}")
        print("\n".join("       " + line for line in self._exc_info_to_string(err, test).splitlines()))

    addError = addFailure


if __name__ == "__main__":
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(stream=open(os.devnull, "w"), resultclass=_Lines, verbosity=0).run(suite)
    shutil.rmtree(_GENERATED)
    sys.exit(0 if result.wasSuccessful() else 1)
