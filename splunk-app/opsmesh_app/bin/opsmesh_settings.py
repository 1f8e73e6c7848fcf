# -*- coding: utf-8 -*-
"""Setup page backend (restmap.conf [script:opsmesh_settings], [script:opsmesh_test_alert]).

GET  /servicesNS/nobody/opsmesh_app/opsmesh/settings    the site settings; the secret only as
                                                        "stored or not", never its value
POST /servicesNS/nobody/opsmesh_app/opsmesh/settings    validate every field, then store the
                                                        secret (storage/passwords) and the
                                                        settings (alert_actions.conf)
POST /servicesNS/nobody/opsmesh_app/opsmesh/test_alert  send a signed test alert with the
                                                        stored settings and secret

splunkd runs both for users with admin_all_objects and passes the caller's session token;
every splunkd call below is made with it, so the handler can do nothing its caller cannot.
"""
import io
import json
import os
import sys
import time
from urllib import parse as urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from opsmesh import (  # noqa: E402  pylint: disable=wrong-import-position
    ACTION_NAME, REALM, SPLUNKD_TIMEOUT, Log, TransportError, app_id_from_path, build_body, deliver,
    find_password, http_request, splunkd_tls_context,
)
from opsmesh_config import (  # noqa: E402  pylint: disable=wrong-import-position
    CLUSTER_RE, CREDENTIAL_RE, EXIT_CONFIG, LOG_LEVELS, MAX_RETRY_BUDGET, ActionError, float_param, parse_config,
    validate_pem_bundle, validate_proxy_url, validate_url,
)
from opsmesh_credential import JsonRequestHandler, reply as _reply  # noqa: E402  pylint: disable=wrong-import-position

# What GET returns in place of a stored secret, and what POST takes as "keep the stored one".
SECRET_MASK = "********"
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 1024
# splunkd gives a REST handler about 30 s; the test alert must answer within that.
TEST_ALERT_BUDGET = 20.0
READ_ROLES = "admin,sc_admin,opsmesh_alert_sender"
WRITE_ROLES = "admin,sc_admin"
# The settings the page edits (alert_actions.conf [opsmesh] param.<name>).
SETTINGS = ("receiver_url", "credential", "cluster", "timeout", "retry_budget", "proxy_url", "log_level",
            "ca_bundle")


def _pairs(items):
    return dict((k, v) for k, v in (pair for pair in items or [] if isinstance(pair, list) and len(pair) == 2))


def _form(request):
    """POST fields: splunkd's parsed form, else the url-encoded body."""
    if request.get("form"):
        return _pairs(request["form"])
    payload = request.get("payload") or ""
    return dict(urlparse.parse_qsl(payload, keep_blank_values=True))


def validate_settings(form):
    """(settings, secret or None to keep the stored one, {field: error})."""
    errors = {}
    settings = {}

    def check(name, validator):
        value = ("%s" % form.get(name, "")).strip()
        try:
            settings[name] = validator(value)
        except ActionError as err:
            errors[name] = err.message

    check("receiver_url", lambda v: validate_url(v, "receiver_url"))
    for name, pattern in (("credential", CREDENTIAL_RE), ("cluster", CLUSTER_RE)):
        check(name, lambda v, n=name, p=pattern: _matching(v or "default", n, p))
    check("timeout", lambda v: "%g" % float_param(v or "10", "timeout", 1.0, 60.0))
    check("retry_budget", lambda v: "%g" % float_param(v or "120", "retry_budget", 1.0, MAX_RETRY_BUDGET))
    check("proxy_url", lambda v: validate_proxy_url(v, "proxy_url"))
    check("log_level", _log_level)
    check("ca_bundle", lambda v: validate_pem_bundle(v, "ca_bundle") if v else "")
    secret = form.get("secret", "")
    if secret in ("", SECRET_MASK):
        secret = None
    elif secret != secret.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        errors["secret"] = "secret must not contain control characters or start or end with whitespace"
    elif not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        errors["secret"] = "secret must be %d-%d characters" % (MIN_SECRET_CHARS, MAX_SECRET_CHARS)
    return settings, secret, errors


def _matching(value, name, pattern):
    if not pattern.match(value):
        raise ActionError(EXIT_CONFIG, "%s may use letters, digits, '.', '_' and '-', starting with a letter or digit" % name)
    return value


def _log_level(value):
    level = (value or "INFO").upper()
    if level not in LOG_LEVELS:
        raise ActionError(EXIT_CONFIG, "log_level must be one of %s" % ", ".join(LOG_LEVELS))
    return level


class Splunkd(object):
    """splunkd's REST API with the caller's session."""

    def __init__(self, base, token, app_id, transport):
        self.base = base
        self.token = token
        self.app_id = app_id
        self.app_path = "/servicesNS/nobody/%s" % urlparse.quote(app_id, safe="")
        self.transport = transport

    def call(self, method, path, fields=None):
        url = "%s%s?output_mode=json" % (self.base, path)
        headers = {"Authorization": "Splunk %s" % self.token, "Accept": "application/json"}
        body = None
        if fields is not None:
            body = urlparse.urlencode(fields).encode("utf-8")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        status, _, data = self.transport(method, url, headers, body, SPLUNKD_TIMEOUT,
                                         splunkd_tls_context(self.base, os.environ))
        try:
            doc = json.loads(data.decode("utf-8", "replace")) if data else None
        except ValueError:
            doc = None
        return status, doc

    def credential_path(self, name):
        return "%s/storage/passwords/%s" % (self.app_path, urlparse.quote("%s:%s:" % (REALM, name), safe=""))

    def action_params(self):
        status, doc = self.call("GET", "%s/configs/conf-alert_actions/%s" % (self.app_path, ACTION_NAME))
        if status != 200 or not isinstance(doc, dict) or not doc.get("entry"):
            raise SplunkdError("reading alert_actions.conf [%s]" % ACTION_NAME, status)
        content = doc["entry"][0].get("content") or {}
        return dict((k[len("param."):], v) for k, v in content.items() if k.startswith("param."))

    def secret(self, credential):
        status, doc = self.call("GET", self.credential_path(credential))
        return find_password(doc, credential) if status == 200 else None

    def store_secret(self, credential, secret):
        status, _ = self.call("POST", "%s/storage/passwords" % self.app_path,
                              {"name": credential, "realm": REALM, "password": secret})
        if status == 409:
            status, _ = self.call("POST", self.credential_path(credential), {"password": secret})
        if status not in (200, 201):
            raise SplunkdError("storing the secret", status)
        status, _ = self.call("POST", self.credential_path(credential) + "/acl",
                              {"sharing": "app", "owner": "nobody", "perms.read": READ_ROLES,
                               "perms.write": WRITE_ROLES})
        if status != 200:
            raise SplunkdError("restricting who may read the secret", status)

    def store_settings(self, settings):
        fields = dict(("param.%s" % name, settings[name]) for name in SETTINGS)
        status, _ = self.call("POST", "%s/configs/conf-alert_actions/%s" % (self.app_path, ACTION_NAME), fields)
        if status != 200:
            raise SplunkdError("writing alert_actions.conf", status)
        status, _ = self.call("POST", "/services/apps/local/%s" % urlparse.quote(self.app_id, safe=""),
                              {"configured": "true"})
        if status != 200:
            raise SplunkdError("marking the app configured", status)


class SplunkdError(Exception):
    def __init__(self, doing, status):
        Exception.__init__(self, "splunkd answered HTTP %s %s" % (status, doing))


def get_settings(splunkd):
    params = splunkd.action_params()
    settings = dict((name, params.get(name, "")) for name in SETTINGS)
    stored = splunkd.secret(settings["credential"] or "default") is not None
    return _reply(200, settings=settings, secret=SECRET_MASK if stored else "", secret_stored=stored)


def post_settings(splunkd, form):
    settings, secret, errors = validate_settings(form)
    if secret is None and "credential" in settings and splunkd.secret(settings["credential"]) is None:
        errors["secret"] = "no secret is stored for credential '%s': enter one" % settings["credential"]
    if errors:
        return _reply(400, error="invalid settings: %s" % ", ".join(sorted(errors)), errors=errors)
    if secret is not None:
        splunkd.store_secret(settings["credential"], secret)
    splunkd.store_settings(settings)
    return _reply(200, settings=settings, secret=SECRET_MASK, secret_stored=True)


def send_test_alert(splunkd, transport=http_request, wallclock=time.time, clock=time.monotonic):
    """Deliver a signed test alert with the stored settings and secret; the action's log lines
    come back so the page can show why a delivery failed."""
    try:
        cfg = parse_config(splunkd.action_params())
    except ActionError as err:
        return _reply(400, error="the stored settings are invalid: %s" % err.message, delivered=False)
    secret = splunkd.secret(cfg.credential)
    if secret is None:
        return _reply(400, error="no secret is stored for credential '%s'" % cfg.credential, delivered=False)
    now = int(wallclock())
    row = {"message": "test alert from the opsmesh setup page"}
    # opsmesh_test (inside the signed body): the receiver validates and answers 200 but opens
    # no incident.
    meta = {"sid": "opsmesh_setup_test_%d" % now, "search_name": "opsmesh setup test alert", "app": None,
            "owner": None, "results_link": None, "server_host": None, "cluster": cfg.cluster,
            "severity": "info", "entity_fields": [], "sent_at": now, "opsmesh_test": True}
    body = build_body(meta, row, [row], False, cfg.max_body_bytes)[0]
    cfg.retry_budget = min(cfg.retry_budget, TEST_ALERT_BUDGET)
    stream = io.StringIO()
    log = Log(stream)
    log.redact(secret)
    code = deliver(cfg, body, secret, log, clock() + cfg.retry_budget, clock=clock, wallclock=wallclock,
                   transport=transport)
    lines = stream.getvalue().splitlines()
    if code == 0:
        return _reply(200, delivered=True, receiver=cfg.receiver_display(), log=lines)
    return _reply(502, delivered=False, receiver=cfg.receiver_display(), exit_code=code, log=lines,
                  error=lines[-1] if lines else "delivery failed (exit code %d)" % code)


def handle(request, app_id, transport=http_request):
    """One request as splunkd hands it to a persistent handler; returns the reply."""
    token = (request.get("session") or {}).get("authtoken")
    base = ((request.get("server") or {}).get("rest_uri") or "").rstrip("/")
    if not token or not base:
        return _reply(500, error="splunkd passed no session or rest_uri")
    splunkd = Splunkd(base, token, app_id, transport)
    method = request.get("method", "GET")
    path = (request.get("rest_path") or request.get("path_info") or "").rstrip("/")
    try:
        if path.endswith("test_alert"):
            if method != "POST":
                return _reply(405, error="use POST to send a test alert")
            return send_test_alert(splunkd, transport)
        if method == "GET":
            return get_settings(splunkd)
        if method == "POST":
            return post_settings(splunkd, _form(request))
        return _reply(405, error="only GET and POST are supported")
    except SplunkdError as err:
        return _reply(502, error="%s" % err)
    except TransportError as err:
        return _reply(502, error="cannot reach splunkd: %s" % err)


class SettingsHandler(JsonRequestHandler):
    """restmap.conf: scripttype = persist, handler = opsmesh_settings.SettingsHandler."""

    def respond(self, request):
        return handle(request, app_id_from_path())
