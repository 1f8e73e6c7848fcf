# -*- coding: utf-8 -*-
"""Configuration of the "Send to opsmesh" alert action: exit codes, the param.* defaults,
site settings and their per-alert *_override twins, the fields allow-list, validation.

Standard library only (see opsmesh.py)."""
import ipaddress
import os
import re
import ssl
from urllib import parse as urlparse

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_SECRET = 4
EXIT_AUTH = 5
EXIT_REFUSED = 6
EXIT_UNREACHABLE = 7

SEVERITIES = ("critical", "high", "medium", "low", "info")
# all: every row of results_file; first: its first row; result: only the payload's result,
# the row that triggered a per-result alert ("Trigger: For each result"), whose
# results_file still holds every row.
SEND_ROWS = ("all", "first", "result")
# The action's stderr lines below this level are not written (splunkd logs them under
# sendmodalert; DEBUG adds per-attempt detail).
LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")
PEM_CERTIFICATE_BEGIN = "-----BEGIN CERTIFICATE-----"
PEM_CERTIFICATE_END = "-----END CERTIFICATE-----"

# alert_actions.conf sets maxtime = 3m (180 s); the whole run (secret look-up, every
# attempt and every pause) must end before that, with a margin for process start-up.
MAX_RETRY_BUDGET = 150.0

DEFAULTS = {
    "receiver_url": "",
    "credential": "default",
    "cluster": "default",
    "severity": "medium",
    "entity_fields": "",
    "fields": "",
    "send_rows": "all",
    "max_rows": "1000",
    "max_body_bytes": "900000",
    "ca_bundle": "",
    "timeout": "10",
    "retry_budget": "120",
    "proxy_url": "",
    "log_level": "INFO",
}
# Site-wide settings (setup page, alert_actions.conf). An alert changes one only through
# param.<name>_override, which is empty by default: a saved alert then keeps following the
# site value instead of freezing the value the alert editor showed when it was saved.
OVERRIDABLE = ("receiver_url", "credential", "cluster", "fields", "max_rows", "max_body_bytes",
               "ca_bundle", "timeout", "retry_budget")
OVERRIDE_SUFFIX = "_override"
# param.fields value that lets every result field leave Splunk (still never _raw).
ALL_FIELDS = "*"
# The raw event text never leaves Splunk, whatever the allow-list says.
NEVER_SENT = frozenset(("_raw",))

CREDENTIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$")
FIELD_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f,]{1,128}$")
SESSION_KEY_RE = re.compile(r"^[\x21-\x7e]{1,4096}$")
MAX_ENTITY_FIELDS = 32
MAX_ALLOWED_FIELDS = 256


class ActionError(Exception):
    """An error that ends the run with a documented exit code."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message



class Config(object):
    """The validated ``configuration`` block (merged ``param.*`` values)."""

    def __init__(self):
        self.receiver_url = ""
        self.credential = "default"
        self.cluster = "default"
        self.severity = "medium"
        self.entity_fields = []
        # None: every field (param.fields = *); else the allow-list beside entity_fields
        self.fields = []
        self.send_rows = "all"
        self.max_rows = 1000
        self.max_body_bytes = 900000
        self.ca_bundle = ""
        self.timeout = 10.0
        self.retry_budget = 120.0
        self.proxy_url = ""
        self.log_level = "INFO"

    def receiver_display(self):
        return display_url(self.receiver_url)

    def allows(self, field):
        """Whether a result field may leave Splunk: never _raw; else entity fields and the allow-list."""
        if field in NEVER_SENT:
            return False
        return self.fields is None or field in self.entity_fields or field in self.fields


# ---------------------------------------------------------------------------
# configuration


def is_loopback_host(host):
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def display_url(url):
    """scheme://host[:port]/path without user info, query or fragment (never log secrets)."""
    try:
        parts = urlparse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = "[%s]" % host
        port = ":%d" % parts.port if parts.port else ""
        return "%s://%s%s%s" % (parts.scheme, host, port, parts.path)
    except ValueError:
        return "<invalid url>"


def split_url(url, what):
    """urlsplit() of a URL without whitespace or control characters and with a valid port."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ActionError(EXIT_CONFIG, "%s contains whitespace or control characters" % what)
    try:
        parts = urlparse.urlsplit(url)
        parts.port  # raises ValueError for a malformed port  # pylint: disable=pointless-statement
    except ValueError as err:
        raise ActionError(EXIT_CONFIG, "%s is not a valid URL: %s" % (what, err))
    return parts


def validate_url(url, what):
    """Return the URL if it is https (or http to a loopback address), else raise."""
    if not url:
        raise ActionError(EXIT_CONFIG, "%s is not set" % what)
    parts = split_url(url, what)
    scheme = (parts.scheme or "").lower()
    host = parts.hostname
    if not host:
        raise ActionError(EXIT_CONFIG, "%s has no host: %s" % (what, display_url(url)))
    if parts.username is not None or parts.password is not None:
        raise ActionError(
            EXIT_CONFIG,
            "%s must not carry credentials; the secret belongs in storage/passwords" % what,
        )
    if parts.fragment:
        raise ActionError(EXIT_CONFIG, "%s must not have a fragment" % what)
    if scheme == "https":
        return url
    if scheme == "http" and is_loopback_host(host):
        return url
    if scheme == "http":
        raise ActionError(
            EXIT_CONFIG,
            "%s must use https (plain http is accepted only for loopback addresses): %s"
            % (what, display_url(url)),
        )
    raise ActionError(EXIT_CONFIG, "%s must be an https URL: %s" % (what, display_url(url)))


def int_param(raw, name, low, high):
    text = ("%s" % raw).strip()
    try:
        value = int(text)
    except ValueError:
        raise ActionError(EXIT_CONFIG, "param.%s must be an integer, got %r" % (name, text[:40]))
    if value < low or value > high:
        raise ActionError(EXIT_CONFIG, "param.%s must be between %d and %d, got %d" % (name, low, high, value))
    return value


def float_param(raw, name, low, high):
    text = ("%s" % raw).strip()
    try:
        value = float(text)
    except ValueError:
        raise ActionError(EXIT_CONFIG, "param.%s must be a number, got %r" % (name, text[:40]))
    if value != value or value < low or value > high:
        raise ActionError(EXIT_CONFIG, "param.%s must be between %g and %g, got %s" % (name, low, high, text[:40]))
    return value


def parse_field_list(raw, param, limit):
    fields = []
    for item in ("%s" % raw).split(","):
        name = item.strip()
        if not name:
            continue
        if not FIELD_NAME_RE.match(name):
            raise ActionError(EXIT_CONFIG, "param.%s has an invalid field name %r" % (param, name[:60]))
        if name in NEVER_SENT:
            raise ActionError(EXIT_CONFIG, "param.%s lists %s: the raw event never leaves Splunk" % (param, name))
        if name not in fields:
            fields.append(name)
    if len(fields) > limit:
        raise ActionError(EXIT_CONFIG, "param.%s lists more than %d fields" % (param, limit))
    return fields


def parse_allowed_fields(raw, param):
    """None for "*" (every field but _raw), else the listed field names."""
    if ("%s" % raw).strip() == ALL_FIELDS:
        return None
    return parse_field_list(raw, param, MAX_ALLOWED_FIELDS)


def validate_proxy_url(url, what):
    """An http(s)://host[:port] forward proxy URL, or "" for none (then https_proxy applies)."""
    url = url.strip()
    if not url:
        return ""
    parts = split_url(url, what)
    if (parts.scheme or "").lower() not in ("http", "https") or not parts.hostname:
        raise ActionError(EXIT_CONFIG, "%s must look like http://proxy.example.com:3128, got %s"
                          % (what, display_url(url)))
    if parts.username is not None or parts.password is not None:
        raise ActionError(EXIT_CONFIG, "%s must not carry credentials (they would be stored in clear text)" % what)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ActionError(EXIT_CONFIG, "%s must be scheme://host[:port] without a path or query" % what)
    return url


def is_pem_text(value):
    return PEM_CERTIFICATE_BEGIN in value


def validate_pem_bundle(text, what):
    """PEM text with one or more CA certificates that Python's ssl module loads."""
    text = text.strip()
    if not is_pem_text(text) or PEM_CERTIFICATE_END not in text:
        raise ActionError(EXIT_CONFIG, "%s must be the CA certificate(s) as PEM text (%s ... %s), "
                          "not a file path" % (what, PEM_CERTIFICATE_BEGIN, PEM_CERTIFICATE_END))
    try:
        ssl.create_default_context(cadata=text + "\n")
    except (ssl.SSLError, ValueError) as err:
        raise ActionError(EXIT_CONFIG, "%s is not a loadable PEM CA bundle: %s" % (what, err))
    return text + "\n"


def resolve_ca_bundle(raw, param, environ):
    """PEM text (as the setup page stores it; works on Splunk Cloud) or, on Splunk
    Enterprise, the path of a PEM file."""
    path = ("%s" % raw).strip()
    if not path:
        return ""
    if is_pem_text(path):
        return validate_pem_bundle(path, "param." + param)
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        splunk_home = environ.get("SPLUNK_HOME", "")
        if not splunk_home:
            raise ActionError(EXIT_CONFIG, "param.%s must be an absolute path (SPLUNK_HOME is not set)" % param)
        path = os.path.join(splunk_home, path)
    if not os.path.isfile(path):
        raise ActionError(EXIT_CONFIG, "param.%s %s does not exist or is not a file" % (param, path))
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as err:
        raise ActionError(EXIT_CONFIG, "param.%s %s cannot be loaded: %s" % (param, path, err))
    return path


def parse_config(raw, environ=None):
    environ = os.environ if environ is None else environ
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ActionError(EXIT_CONFIG, "payload 'configuration' is not an object")

    def present(name):
        value = raw.get(name)
        return value is not None and ("%s" % value).strip() != ""

    def get(name):
        """(value, parameter it came from): a non-empty override wins over the site value."""
        override = name + OVERRIDE_SUFFIX
        if name in OVERRIDABLE and present(override):
            return "%s" % raw[override], override
        return ("%s" % raw[name] if present(name) else DEFAULTS[name]), name

    cfg = Config()
    url, param = get("receiver_url")
    cfg.receiver_url = validate_url(url.strip(), "param." + param)
    credential, param = get("credential")
    cfg.credential = credential.strip()
    if not CREDENTIAL_RE.match(cfg.credential):
        raise ActionError(
            EXIT_CONFIG,
            "param.%s must be 1-128 characters of letters, digits, '.', '_' or '-', got %r"
            % (param, cfg.credential[:60]),
        )
    cluster, param = get("cluster")
    cfg.cluster = cluster.strip()
    if not CLUSTER_RE.match(cfg.cluster):
        raise ActionError(EXIT_CONFIG, "param.%s is not a valid cluster name: %r" % (param, cfg.cluster[:60]))
    cfg.severity = get("severity")[0].strip().lower()
    if cfg.severity not in SEVERITIES:
        raise ActionError(
            EXIT_CONFIG, "param.severity must be one of %s, got %r" % (", ".join(SEVERITIES), cfg.severity[:40])
        )
    cfg.entity_fields = parse_field_list(get("entity_fields")[0], "entity_fields", MAX_ENTITY_FIELDS)
    cfg.fields = parse_allowed_fields(*get("fields"))
    cfg.send_rows = get("send_rows")[0].strip().lower()
    if cfg.send_rows not in SEND_ROWS:
        raise ActionError(EXIT_CONFIG, "param.send_rows must be one of %s, got %r"
                          % (", ".join(SEND_ROWS), cfg.send_rows[:40]))
    cfg.max_rows = int_param(*get("max_rows"), low=1, high=100000)
    cfg.max_body_bytes = int_param(*get("max_body_bytes"), low=4096, high=16 * 1024 * 1024)
    cfg.ca_bundle = resolve_ca_bundle(*get("ca_bundle"), environ=environ)
    cfg.timeout = float_param(*get("timeout"), low=1.0, high=60.0)
    cfg.retry_budget = float_param(*get("retry_budget"), low=1.0, high=MAX_RETRY_BUDGET)
    cfg.proxy_url = validate_proxy_url(get("proxy_url")[0], "param.proxy_url")
    cfg.log_level = get("log_level")[0].strip().upper()
    if cfg.log_level not in LOG_LEVELS:
        raise ActionError(EXIT_CONFIG, "param.log_level must be one of %s, got %r"
                          % (", ".join(LOG_LEVELS), cfg.log_level[:40]))
    return cfg


def allowed_only(row, cfg):
    return dict((name, value) for name, value in row.items() if cfg.allows(name))


def left_out_fields(rows, cfg):
    """Names of the fields the allow-list keeps in Splunk (for the log, never their values)."""
    names = set()
    for row in rows:
        names.update(name for name in row if not cfg.allows(name))
    return sorted(names)
