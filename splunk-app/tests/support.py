"""Test helpers: the action module, a splunkd that speaks storage/passwords, a receiver
with an independent signature verifier, and a way to run the script as Splunk does."""
import gzip
import hashlib
import hmac
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit, parse_qs, parse_qsl

HERE = os.path.dirname(os.path.abspath(__file__))
SPLUNK_APP = os.path.dirname(HERE)
APP_ID = "opsmesh_app"
APP_DIR = os.path.join(SPLUNK_APP, APP_ID)
SCRIPT = os.path.join(APP_DIR, "bin", "opsmesh.py")
# Real-format Splunk payloads (the alert action's stdin, a results file): copies of some of
# the repository's samples, so the app's tests run from splunk-app/ alone.
FIXTURES = os.path.join(HERE, "fixtures")
SAMPLES = os.path.join(os.path.dirname(SPLUNK_APP), "tests", "samples")
# The repository's scenarios: the rows the detections must produce.
SCENARIOS = os.path.join(os.path.dirname(SPLUNK_APP), "tests", "scenarios")
SAMPLE_PAYLOAD = os.path.join(FIXTURES, "splunk-alert-action-stdin.json")
SAMPLE_RESULTS = os.path.join(FIXTURES, "results.csv.gz")

SESSION_KEY = "s3ss10n-K3y-0f-the-alert-0wner-0123456789abcdef"
SECRET = "whsec-opsmesh-Test-Secret-0123456789-xyz"


def load_action():
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("opsmesh_action_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_module(name):
    """A module of the app's bin/ (opsmesh_config, opsmesh_results, opsmesh_credential)."""
    sys.dont_write_bytecode = True
    bin_dir = os.path.dirname(SCRIPT)
    if bin_dir not in sys.path:
        sys.path.insert(0, bin_dir)
    return importlib.import_module(name)


def load_broker():
    """bin/opsmesh_credential.py, the credential broker splunkd runs as a REST handler."""
    return load_module("opsmesh_credential")


# ---------------------------------------------------------------------------
# independent signature verifier (does not use the action's code)


def verify_signature(secret, header, body, now=None, tolerance=300):
    """True if header is 't=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>' and fresh."""
    if not header:
        return False
    fields = {}
    for part in header.split(","):
        if "=" not in part:
            return False
        key, value = part.split("=", 1)
        fields[key.strip()] = value.strip()
    if not fields.get("t", "").isdigit() or "v1" not in fields:
        return False
    timestamp = int(fields["t"])
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    message = str(timestamp).encode("ascii") + b"." + body
    expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


# ---------------------------------------------------------------------------
# servers


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client that gave up (timeout tests) is expected; anything else is printed
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            ThreadingHTTPServer.handle_error(self, request, client_address)


class _Server(object):
    def __init__(self, handler_class):
        self.httpd = _HTTPServer(("127.0.0.1", 0), handler_class)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True

    @property
    def port(self):
        return self.httpd.server_address[1]

    @property
    def base_url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def _send(self, status, doc=None, headers=None, content_type="application/json"):
        body = b"" if doc is None else (doc if isinstance(doc, bytes) else json.dumps(doc).encode("utf-8"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


SYSTEM_TOKEN = "system-auth-token-splunkd-hands-the-broker-0123456789"
BROKER_CAPABILITY = "opsmesh_read_credential"


class SplunkdStub(_Server):
    """The subset of splunkd's REST API the action uses: storage/passwords, the app's
    credential broker (restmap.conf: capability check, then the real bin/opsmesh_credential.py
    with a system token) and authentication/current-context."""

    def __init__(self, session_key=SESSION_KEY, credentials=None, app=APP_ID, mode="ok"):
        _Server.__init__(self, _SplunkdHandler)
        self.session_key = session_key
        self.app = app
        # {(app, realm, username): clear_password}
        self.credentials = credentials if credentials is not None else {(app, "opsmesh", "default"): SECRET}
        # ok | forbidden (the owner lacks list_storage_passwords) | error (500 everywhere)
        self.mode = mode
        self.broker = True  # False: an app version without the broker (endpoint not found)
        self.capabilities = {BROKER_CAPABILITY}  # the alert owner's capabilities
        self.requests = []


def _password_entry(app, realm, username, password):
    name = "%s:%s:" % (realm, username)
    return {
        "name": name,
        "id": "https://127.0.0.1:8089/servicesNS/nobody/%s/storage/passwords/%s" % (app, name.replace(":", "%3A")),
        "updated": "1970-01-01T00:00:00+00:00",
        "links": {"alternate": "/servicesNS/nobody/%s/storage/passwords/%s" % (app, name.replace(":", "%3A"))},
        "author": "nobody",
        "acl": {"app": app, "owner": "nobody", "sharing": "app",
                "perms": {"read": ["admin", "sc_admin", "opsmesh_alert_sender"], "write": ["admin", "sc_admin"]}},
        "content": {
            "clear_password": password,
            "encr_password": "$7$ZmFrZQ==",
            "password": "********",
            "realm": realm,
            "username": username,
            "eai:acl": None,
        },
    }


def _feed(entries):
    return {
        "links": {"create": "/servicesNS/nobody/-/storage/passwords/_new"},
        "origin": "https://127.0.0.1:8089/servicesNS/nobody/-/storage/passwords",
        "updated": "1970-01-01T00:00:00+00:00",
        "generator": {"build": "0", "version": "9.4.0"},
        "entry": entries,
        "paging": {"total": len(entries), "perPage": 30, "offset": 0},
        "messages": [],
    }


class _SplunkdHandler(_QuietHandler):
    def do_GET(self):
        stub = self.server.owner
        stub.requests.append({"path": self.path, "headers": dict(self.headers)})
        system = self.headers.get("Authorization") == "Splunk %s" % SYSTEM_TOKEN
        if self.headers.get("Authorization") != "Splunk %s" % stub.session_key and not system:
            return self._send(401, {"messages": [{"type": "WARN", "text": "call not properly authenticated"}]})
        parts = urlsplit(self.path)
        if parts.path == "/services/authentication/current-context":
            return self._send(200, _feed([{"name": "alice", "content": {
                "username": "alice", "roles": ["user"], "capabilities": sorted(stub.capabilities)}}]))
        if parts.path == "/servicesNS/nobody/%s/opsmesh/credential" % stub.app and stub.broker and not system:
            return self._broker(stub, parts)
        if stub.mode == "forbidden" and not system and "/storage/passwords" in parts.path:
            return self._send(403, {"messages": [{"type": "ERROR", "text": "You (user=alice) do not have permission to perform this operation (requires capability: list_storage_passwords)."}]})
        if stub.mode == "error":
            return self._send(500, {"messages": [{"type": "ERROR", "text": "internal error"}]})
        query = parse_qs(parts.query)
        if query.get("output_mode") != ["json"]:
            return self._send(400, {"messages": [{"type": "ERROR", "text": "expected output_mode=json"}]})
        segments = parts.path.split("/")
        # /servicesNS/<owner>/<app>/storage/passwords[/<realm>:<user>:]
        if len(segments) < 6 or segments[1] != "servicesNS" or segments[4:6] != ["storage", "passwords"]:
            return self._send(404, {"messages": [{"type": "ERROR", "text": "Not Found"}]})
        app = unquote(segments[3])
        if len(segments) == 7:
            name = unquote(segments[6])
            realm, _, rest = name.partition(":")
            username = rest[:-1] if rest.endswith(":") else rest
            key = (app, realm, username)
            if app == "-" or key not in stub.credentials:
                return self._send(404, {"messages": [{"type": "ERROR", "text": "Could not find object id=%s" % name}]})
            return self._send(200, _feed([_password_entry(app, realm, username, stub.credentials[key])]))
        entries = [_password_entry(a, r, u, p) for (a, r, u), p in sorted(stub.credentials.items())
                   if app in ("-", a)]
        return self._send(200, _feed(entries))

    def _broker(self, stub, parts):
        """What splunkd does for restmap.conf [script:opsmesh_credential]."""
        if stub.mode == "error":
            return self._send(500, {"messages": [{"type": "ERROR", "text": "internal error"}]})
        if BROKER_CAPABILITY not in stub.capabilities:
            return self._send(403, {"messages": [{"type": "ERROR", "text": "You (user=alice) do not have "
                                                  "permission to perform this operation (requires capability: "
                                                  "%s)." % BROKER_CAPABILITY}]})
        request = {"method": "GET", "query": [list(p) for p in parse_qsl(parts.query)],
                   "session": {"user": "alice", "authtoken": stub.session_key},
                   "system_authtoken": SYSTEM_TOKEN, "server": {"rest_uri": stub.base_url}}
        reply = load_broker().handle(request, stub.app)
        return self._send(reply["status"], reply["payload"])


class ReceiverStub(_Server):
    """An alert receiver: scripted answers, records every request, verifies signatures, and
    answers a test alert ("opsmesh_test": true) 200 as the real receiver's test mode does."""

    def __init__(self, responses=None, secret=SECRET, verify=True, delay=0.0):
        _Server.__init__(self, _ReceiverHandler)
        # list of (status, headers, body); the last one repeats
        self.responses = list(responses or [(202, {}, {"alert_ids": ["a-1"], "incident_key": "ik-1"})])
        self.secret = secret
        self.verify = verify
        self.delay = delay
        self.requests = []
        self.lock = threading.Lock()

    @property
    def url(self):
        return self.base_url + "/v1/alerts/splunk"


class _ReceiverHandler(_QuietHandler):
    def do_POST(self):
        stub = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with stub.lock:
            index = len(stub.requests)
            stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                  "at": time.monotonic()})
            status, headers, doc = stub.responses[min(index, len(stub.responses) - 1)]
        if stub.delay:
            time.sleep(stub.delay)
        if stub.verify and not verify_signature(stub.secret, self.headers.get("X-Opsmesh-Signature"), body):
            return self._send(401, {"type": "about:blank", "title": "Unauthorized", "status": 401,
                                    "detail": "signature mismatch"}, content_type="application/problem+json")
        if _is_test_alert(body):
            # the receiver's test mode: validated, answered 200, no incident opened
            return self._send(200, {"test": True, "incident_opened": False})
        ctype = "application/problem+json" if status >= 400 else "application/json"
        return self._send(status, doc, headers, content_type=ctype)


def _is_test_alert(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("opsmesh_test") is True


# ---------------------------------------------------------------------------
# payloads and running the script


def sample_payload(receiver_url, splunkd_url, **configuration):
    with open(SAMPLE_PAYLOAD, "r", encoding="utf-8") as fh:
        payload = json.load(fh)
    payload["results_file"] = SAMPLE_RESULTS
    payload["server_uri"] = splunkd_url
    payload["session_key"] = SESSION_KEY
    conf = dict(payload.get("configuration") or {})
    conf["receiver_url"] = receiver_url
    conf.update(configuration)
    payload["configuration"] = conf
    return payload


def write_results(path, header, rows):
    """Write a gzipped CSV the way Splunk's dispatch directory holds it."""
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(row)
    with gzip.open(path, "wb") as fh:
        fh.write(buf.getvalue().encode("utf-8"))
    return path


class Result(object):
    def __init__(self, code, stderr, stdout, elapsed):
        self.code = code
        self.stderr = stderr
        self.stdout = stdout
        self.elapsed = elapsed


def run_script(payload, args=("--execute",), timeout=60, raw_stdin=None, env=None):
    """Run bin/opsmesh.py as Splunk does: python3 opsmesh.py --execute < payload."""
    data = raw_stdin if raw_stdin is not None else json.dumps(payload).encode("utf-8")
    environ = dict(os.environ)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        environ.pop(name, None)
    environ.update(env or {})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, SCRIPT] + list(args), input=data, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, env=environ, cwd=os.path.dirname(SCRIPT))
    return Result(proc.returncode, proc.stderr.decode("utf-8", "replace"), proc.stdout.decode("utf-8", "replace"),
                  time.monotonic() - started)


def read_conf(path):
    """Splunk .conf: [stanza], key = value, '\\' at line end continues the value."""
    stanzas = {}
    current = stanzas.setdefault("default", {})
    key = None
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stanzas.setdefault(stripped[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise AssertionError("%s: bad line %r" % (path, line))
        value = value.strip()
        while value.endswith("\\"):
            value = value[:-1] + "\n" + lines[i].strip()
            i += 1
        current[key.strip()] = value
    return stanzas


def shipped_detection(name):
    """The settings of one of the app's detections (default/savedsearches.conf)."""
    return read_conf(os.path.join(APP_DIR, "default", "savedsearches.conf"))[name]
