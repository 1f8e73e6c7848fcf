# -*- coding: utf-8 -*-
"""Send to opsmesh: a Splunk custom alert action.

Splunk runs this script as ``python3 opsmesh.py --execute`` and writes a JSON payload
to its standard input (``payload_format = json`` in alert_actions.conf).  The script

* reads every result row from ``results_file`` (gzipped CSV, ``__mv_`` columns decoded
  into lists), falling back to the payload's ``result`` (first row only);
* reads the signing secret through the app's credential broker (bin/opsmesh_credential.py)
  at ``server_uri`` with the alert owner's ``session_key`` (capability
  opsmesh_read_credential), or ``storage/passwords`` when there is no broker;
* posts a bounded JSON document to the opsmesh alert receiver, signed with
  ``X-Opsmesh-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` over verified
  TLS, retrying network errors, 429 and 5xx with exponential backoff and jitter (honouring
  ``Retry-After``) inside a time budget that stays below the action's ``maxtime``.

Standard library only; works on Python 3.7 and later (Splunk bundles 3.9 and 3.13).
Messages go to stderr prefixed with a level (DEBUG/INFO/WARN/ERROR/FATAL) and end up in
``index=_internal sourcetype=splunkd component=sendmodalert action=opsmesh``.  The secret
and the session key are never written anywhere.

Exit codes (see README.md):
    0  delivered (receiver answered 2xx)
    1  unexpected internal error
    2  usage: not run with --execute, or the payload on stdin is not a JSON object
    3  configuration: receiver URL, credential name, parameters, CA bundle, missing
       credential in storage/passwords, or an alert that cannot fit in max_body_bytes
    4  secret unavailable: splunkd refused or failed to return the credential
       (the alert owner lacks the capability opsmesh_read_credential)
    5  receiver authentication failed (401/403: wrong secret, clock skew)
    6  receiver refused the alert (400, 404, 413, 415, 422 and other non-retryable codes)
    7  receiver unreachable: network/TLS errors, 429 or 5xx until the budget ran out
"""
import csv
import email.utils
import gzip
import hashlib
import hmac
import http.client
import io
import ipaddress
import json
import os
import random
import re
import ssl
import sys
import time
from urllib import error as urlerror
from urllib import parse as urlparse
from urllib import request as urlrequest

VERSION = "0.1.0"
ACTION_NAME = "opsmesh"
REALM = "opsmesh"
SIGNATURE_HEADER = "X-Opsmesh-Signature"

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

# alert_actions.conf sets maxtime = 3m (180 s); the whole run (secret look-up, every
# attempt and every pause) must end before that, with a margin for process start-up.
MAX_RETRY_BUDGET = 150.0
MIN_ATTEMPT_SECONDS = 1.0
BACKOFF_BASE = 1.0
BACKOFF_CAP = 20.0
SPLUNKD_BUDGET = 20.0
SPLUNKD_TIMEOUT = 10.0
# The credential broker (bin/opsmesh_credential.py, restmap.conf): alert owners need only
# the capability opsmesh_read_credential, not list_storage_passwords.
BROKER_PATH = "opsmesh/credential"
BROKER_CAPABILITY = "opsmesh_read_credential"
MAX_RESPONSE_BYTES = 64 * 1024
MAX_FIELD_BYTES = 16 * 1024 * 1024
SHRUNK_VALUE_CHARS = 1024
SHRUNK_MV_VALUES = 20

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

# Result fields that Splunk adds for its own bookkeeping; they say nothing about the entity.
INTERNAL_FIELDS = frozenset(("_si", "_cd", "_bkt", "_serial", "_kv", "_eventtype_color", "_sourcetype"))


class ActionError(Exception):
    """An error that ends the run with a documented exit code."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


class TransportError(Exception):
    """The request did not produce an HTTP response."""

    def __init__(self, message, permanent=False):
        Exception.__init__(self, message)
        self.permanent = permanent


class Log(object):
    """Writes level-prefixed single lines to stderr and redacts registered secrets."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self._redact = []

    def redact(self, value):
        if value and len(value) >= 4 and value not in self._redact:
            self._redact.append(value)
            self._redact.sort(key=len, reverse=True)

    def _emit(self, level, message):
        text = "%s" % (message,)
        for value in self._redact:
            text = text.replace(value, "<redacted>")
        text = text.replace("\r", " ").replace("\n", " ")
        try:
            self.stream.write("%s %s\n" % (level, text))
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def debug(self, message):
        self._emit("DEBUG", message)

    def info(self, message):
        self._emit("INFO", message)

    def warn(self, message):
        self._emit("WARN", message)

    def error(self, message):
        self._emit("ERROR", message)

    def fatal(self, message):
        self._emit("FATAL", message)


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


def validate_url(url, what):
    """Return the URL if it is https (or http to a loopback address), else raise."""
    if not url:
        raise ActionError(EXIT_CONFIG, "%s is not set" % what)
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ActionError(EXIT_CONFIG, "%s contains whitespace or control characters" % what)
    try:
        parts = urlparse.urlsplit(url)
        parts.port  # raises ValueError for a malformed port  # pylint: disable=pointless-statement
    except ValueError as err:
        raise ActionError(EXIT_CONFIG, "%s is not a valid URL: %s" % (what, err))
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


def _int_param(raw, name, low, high):
    text = ("%s" % raw).strip()
    try:
        value = int(text)
    except ValueError:
        raise ActionError(EXIT_CONFIG, "param.%s must be an integer, got %r" % (name, text[:40]))
    if value < low or value > high:
        raise ActionError(EXIT_CONFIG, "param.%s must be between %d and %d, got %d" % (name, low, high, value))
    return value


def _float_param(raw, name, low, high):
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


def resolve_ca_bundle(raw, param, environ):
    path = ("%s" % raw).strip()
    if not path:
        return ""
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
    cfg.max_rows = _int_param(*get("max_rows"), low=1, high=100000)
    cfg.max_body_bytes = _int_param(*get("max_body_bytes"), low=4096, high=16 * 1024 * 1024)
    cfg.ca_bundle = resolve_ca_bundle(*get("ca_bundle"), environ=environ)
    cfg.timeout = _float_param(*get("timeout"), low=1.0, high=60.0)
    cfg.retry_budget = _float_param(*get("retry_budget"), low=1.0, high=MAX_RETRY_BUDGET)
    return cfg


def allowed_only(row, cfg):
    return dict((name, value) for name, value in row.items() if cfg.allows(name))


def left_out_fields(rows, cfg):
    """Names of the fields the allow-list keeps in Splunk (for the log, never their values)."""
    names = set()
    for row in rows:
        names.update(name for name in row if not cfg.allows(name))
    return sorted(names)


# ---------------------------------------------------------------------------
# result rows


def decode_mv(encoded):
    """Decode Splunk's multivalue encoding ``$v1$;$v2$`` (``$$`` is a literal ``$``)."""
    values = []
    i = 0
    n = len(encoded)
    while i < n:
        if encoded[i] != "$":
            raise ValueError("multivalue item does not start with '$'")
        i += 1
        buf = []
        while True:
            if i >= n:
                raise ValueError("unterminated multivalue item")
            ch = encoded[i]
            if ch == "$":
                if i + 1 < n and encoded[i + 1] == "$":
                    buf.append("$")
                    i += 2
                    continue
                i += 1
                break
            buf.append(ch)
            i += 1
        values.append("".join(buf))
        if i < n:
            if encoded[i] != ";":
                raise ValueError("multivalue items are not separated by ';'")
            i += 1
            if i >= n:
                raise ValueError("trailing ';' in multivalue field")
    return values


def _as_text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "%s" % (value,)


def normalize_row(row):
    """Field -> string, or list of strings for a multivalue field; empty values dropped."""
    out = {}
    if not isinstance(row, dict):
        return out
    for key, value in row.items():
        name = _as_text(key)
        if not name or name.startswith("__mv_") or name in INTERNAL_FIELDS:
            continue
        if isinstance(value, (list, tuple)):
            items = [_as_text(v) for v in value]
            if len(items) > 1:
                out[name] = items
            elif items and items[0] != "":
                out[name] = items[0]
            continue
        text = _as_text(value)
        if text != "":
            out[name] = text
    return out


def read_results_file(path, max_rows, log):
    """Return (rows, more) with at most max_rows rows; more is True when rows were left out."""
    if csv.field_size_limit() < MAX_FIELD_BYTES:
        csv.field_size_limit(MAX_FIELD_BYTES)
    rows = []
    more = False
    warned = set()
    with gzip.open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if not header:
            return rows, False
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        mv_columns = {}
        plain = []
        for index, name in enumerate(header):
            if name.startswith("__mv_"):
                mv_columns[name[5:]] = index
            else:
                plain.append((index, name))
        plain_names = set(name for _, name in plain)
        mv_only = [(index, name) for name, index in mv_columns.items() if name not in plain_names]
        for record in reader:
            if not record:
                continue
            if len(rows) >= max_rows:
                more = True
                break
            row = {}
            for index, name in plain + mv_only:
                if name in INTERNAL_FIELDS or not name:
                    continue
                value = record[index] if index < len(record) else ""
                mv_index = mv_columns.get(name)
                encoded = record[mv_index] if mv_index is not None and mv_index < len(record) else ""
                if encoded:
                    try:
                        values = decode_mv(encoded)
                    except ValueError as err:
                        values = None
                        if name not in warned:
                            warned.add(name)
                            log.warn("column __mv_%s is not valid multivalue encoding (%s); using the plain value" % (name, err))
                    if values is not None and len(values) > 1:
                        row[name] = values
                        continue
                    if values is not None and len(values) == 1 and value == "":
                        value = values[0]
                if value != "":
                    row[name] = value
            rows.append(row)
    return rows, more


def load_rows(payload, cfg, log):
    """Return (first_row, rows_to_send, rows_truncated), each row cut to the allowed fields."""
    limit = 1 if cfg.send_rows == "first" else cfg.max_rows
    rows = None
    more = False
    path = payload.get("results_file")
    if cfg.send_rows == "result":
        pass  # a per-result alert: the triggering row below is the whole alert
    elif isinstance(path, str) and path:
        try:
            rows, more = read_results_file(path, limit, log)
        except (OSError, EOFError, csv.Error, UnicodeError, ValueError) as err:
            log.warn("cannot read results_file (%s: %s); falling back to the first result row" % (type(err).__name__, err))
    else:
        log.warn("payload has no results_file; sending the first result row only")
    if not rows:
        # without the file (or with an empty one) the payload's row is all there is
        first = normalize_row(payload.get("result"))
        rows = [first] if first else []
    left_out = left_out_fields(rows, cfg)
    if left_out:
        log.info("fields kept in Splunk (not in entity_fields or the fields allow-list): %s"
                 % ", ".join(left_out[:50]))
    rows = [allowed_only(row, cfg) for row in rows]
    return (rows[0] if rows else {}), rows, more


# ---------------------------------------------------------------------------
# body


def _encode(doc):
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _shrink_row(row):
    out = {}
    for key, value in row.items():
        if isinstance(value, list):
            out[key] = [v[:SHRUNK_VALUE_CHARS] for v in value[:SHRUNK_MV_VALUES]]
        else:
            out[key] = value[:SHRUNK_VALUE_CHARS]
    return out


def build_body(meta, first, rows, truncated, max_body_bytes):
    """Serialise the document within max_body_bytes. Returns (body, rows_sent, truncated)."""
    doc = dict(meta)
    doc["result"] = first
    doc["rows"] = rows
    doc["rows_truncated"] = bool(truncated)
    body = _encode(doc)
    if len(body) <= max_body_bytes:
        return body, len(rows), bool(truncated)
    doc["rows_truncated"] = True
    low, high, best = 0, len(rows) - 1, None
    while low <= high:
        mid = (low + high) // 2
        doc["rows"] = rows[:mid]
        candidate = _encode(doc)
        if len(candidate) <= max_body_bytes:
            best = (candidate, mid)
            low = mid + 1
        else:
            high = mid - 1
    if best is not None:
        return best[0], best[1], True
    # even the first row alone is too big: cut its long values
    doc["rows"] = []
    doc["result"] = _shrink_row(first)
    body = _encode(doc)
    if len(body) <= max_body_bytes:
        return body, 0, True
    raise ActionError(
        EXIT_CONFIG,
        "the alert does not fit in max_body_bytes=%d even without rows (%d bytes); "
        "raise param.max_body_bytes or return fewer fields" % (max_body_bytes, len(body)),
    )


def sign(secret, timestamp, body):
    mac = hmac.new(secret.encode("utf-8"), ("%d." % timestamp).encode("ascii") + body, hashlib.sha256)
    return "t=%d,v1=%s" % (timestamp, mac.hexdigest())


# ---------------------------------------------------------------------------
# HTTP


class _NoRedirect(urlrequest.HTTPRedirectHandler):
    """A signed POST must not be replayed elsewhere: a redirect is returned as is."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


def receiver_tls_context(ca_bundle):
    """Verified TLS: system trust store, or only the given CA bundle. No way to turn it off."""
    if ca_bundle:
        context = ssl.create_default_context(cafile=ca_bundle)
    else:
        context = ssl.create_default_context()
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def splunkd_tls_context(server_uri, environ):
    """TLS context for the local splunkd management port.

    splunkd on the same host (the server_uri Splunk hands the script is a loopback address)
    presents its own self-signed certificate issued to 'SplunkServerDefaultCert', so neither
    the system trust store nor the host name can verify it; the connection never leaves the
    host. A splunkd on another host is verified like any other server.
    """
    host = urlparse.urlsplit(server_uri).hostname
    if is_loopback_host(host):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context()
    splunk_home = environ.get("SPLUNK_HOME", "")
    ca_file = os.path.join(splunk_home, "etc", "auth", "cacert.pem") if splunk_home else ""
    if ca_file and os.path.isfile(ca_file):
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError):
            pass
    return context


def http_request(method, url, headers, body, timeout, context):
    """One HTTP exchange. Returns (status, headers, body bytes); raises TransportError."""
    host = urlparse.urlsplit(url).hostname
    handlers = [_NoRedirect(), urlrequest.HTTPSHandler(context=context)]
    if is_loopback_host(host):
        handlers.append(urlrequest.ProxyHandler({}))
    opener = urlrequest.build_opener(*handlers)
    req = urlrequest.Request(url, data=body, headers=headers, method=method)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read(MAX_RESPONSE_BYTES)
    except urlerror.HTTPError as err:
        try:
            data = err.read(MAX_RESPONSE_BYTES)
        except (OSError, http.client.HTTPException, ValueError):
            data = b""
        return err.code, err.headers, data
    except urlerror.URLError as err:
        reason = err.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise TransportError("TLS certificate verification failed: %s" % (reason.verify_message or reason), True)
        if isinstance(reason, ssl.CertificateError):
            raise TransportError("TLS certificate verification failed: %s" % reason, True)
        raise TransportError("%s" % (reason,))
    except ssl.SSLCertVerificationError as err:
        raise TransportError("TLS certificate verification failed: %s" % (err.verify_message or err), True)
    except (OSError, http.client.HTTPException) as err:
        raise TransportError("%s: %s" % (type(err).__name__, err))


def parse_retry_after(value, now=None):
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt, rand):
    """Exponential backoff with equal jitter: half fixed, half random."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** (attempt - 1)))
    return ceiling / 2.0 + rand() * ceiling / 2.0


def describe_problem(data):
    """Short text from an RFC 9457 problem body (or the raw body)."""
    if not data:
        return ""
    text = data.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(doc, dict):
        parts = [("%s" % doc[k]) for k in ("title", "detail") if doc.get(k)]
        if parts:
            return ": ".join(parts)[:300]
    return text.strip()[:300]


# ---------------------------------------------------------------------------
# secret


def fetch_secret(payload, cfg, app_id, log, deadline, clock, sleep, environ, transport):
    server_uri = payload.get("server_uri")
    session_key = payload.get("session_key")
    if not isinstance(server_uri, str) or not server_uri:
        raise ActionError(EXIT_CONFIG, "payload has no server_uri; cannot read the secret from storage/passwords")
    if not isinstance(session_key, str) or not session_key:
        raise ActionError(EXIT_CONFIG, "payload has no session_key; cannot read the secret from storage/passwords")
    if not SESSION_KEY_RE.match(session_key):
        raise ActionError(EXIT_SECRET, "payload session_key is malformed")
    base = validate_url(server_uri.strip().rstrip("/"), "server_uri")
    context = splunkd_tls_context(base, environ)
    headers = {
        "Authorization": "Splunk %s" % session_key,
        "Accept": "application/json",
        "User-Agent": "opsmesh-splunk-alert-action/%s" % VERSION,
    }
    app = urlparse.quote(app_id, safe="")
    local_deadline = min(deadline, clock() + SPLUNKD_BUDGET)
    broker = "%s/servicesNS/nobody/%s/%s?output_mode=json&name=%s" % (
        base, app, BROKER_PATH, urlparse.quote(cfg.credential, safe=""))
    status, data = _splunkd_get(broker, headers, context, log, local_deadline, clock, sleep, transport)
    doc = _json_or_none(data)
    if status == 200:
        secret = doc.get("secret") if isinstance(doc, dict) else None
        if isinstance(secret, str) and secret:
            return secret
        raise ActionError(EXIT_SECRET, "the credential broker answered without a secret")
    if status == 404 and isinstance(doc, dict) and doc.get("credential_missing"):
        raise _no_credential(cfg)
    if status != 404:
        raise ActionError(EXIT_SECRET, _refusal(status, doc, cfg))
    # 404 without the broker's answer: no broker (an older app version on a search head
    # cluster member during an upgrade); read storage/passwords, which needs
    # list_storage_passwords.
    log.warn("no credential broker at %s; reading storage/passwords directly" % display_url(broker))
    entity = urlparse.quote("%s:%s:" % (REALM, cfg.credential), safe="")
    urls = [
        "%s/servicesNS/nobody/%s/storage/passwords/%s?output_mode=json" % (base, app, entity),
        "%s/servicesNS/-/-/storage/passwords?output_mode=json&count=0&search=%s"
        % (base, urlparse.quote("realm=%s" % REALM, safe="")),
    ]
    for url in urls:
        status, data = _splunkd_get(url, headers, context, log, local_deadline, clock, sleep, transport)
        if status == 404:
            continue
        if status != 200:
            raise ActionError(EXIT_SECRET, _refusal(status, _json_or_none(data), cfg))
        secret = find_password(_json_or_none(data), cfg.credential)
        if secret:
            return secret
    raise _no_credential(cfg)


def _json_or_none(data):
    try:
        return json.loads(data.decode("utf-8", "replace")) if data else None
    except ValueError:
        return None


def _no_credential(cfg):
    return ActionError(
        EXIT_CONFIG,
        "no credential '%s' in realm '%s' in storage/passwords (run the opsmesh setup page, "
        "or check param.credential)" % (cfg.credential, REALM),
    )


def _splunkd_message(doc):
    """The broker's "error", or the text of splunkd's own "messages"."""
    if not isinstance(doc, dict):
        return ""
    if isinstance(doc.get("error"), str):
        return doc["error"]
    messages = doc.get("messages") if isinstance(doc.get("messages"), list) else []
    return " ".join("%s" % m.get("text") for m in messages if isinstance(m, dict) and m.get("text"))


def _refusal(status, doc, cfg):
    detail = _splunkd_message(doc)
    detail = (" (%s)" % detail[:200]) if detail else ""
    if status == 401:
        return "splunkd rejected the session key while reading the secret (HTTP 401)%s" % detail
    if status == 403:
        return ("the alert owner may not read the opsmesh secret (HTTP 403)%s: grant the role "
                "'opsmesh_alert_sender' (capability %s) and read access to credential %s:%s:"
                % (detail, BROKER_CAPABILITY, REALM, cfg.credential))
    return "splunkd answered HTTP %d while reading the secret%s" % (status, detail)


def _splunkd_get(url, headers, context, log, deadline, clock, sleep, transport):
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - clock()
        try:
            status, _, data = transport("GET", url, headers, None, max(1.0, min(SPLUNKD_TIMEOUT, remaining)), context)
        except TransportError as err:
            problem = "cannot reach splunkd: %s" % err
            if err.permanent:
                raise ActionError(EXIT_SECRET, problem)
        else:
            if status < 500:
                return status, data
            problem = "splunkd answered HTTP %d" % status
        delay = backoff_delay(attempt, random.random)
        if attempt >= 3 or clock() + delay + MIN_ATTEMPT_SECONDS > deadline:
            raise ActionError(EXIT_SECRET, problem + " (reading storage/passwords)")
        log.warn("%s; retrying in %.1fs" % (problem, delay))
        sleep(delay)


def find_password(doc, credential):
    """The clear password of credential in realm opsmesh from a storage/passwords feed."""
    entries = doc.get("entry") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return None
    for entry in entries:
        content = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(content, dict):
            continue
        if content.get("realm") == REALM and content.get("username") == credential:
            secret = content.get("clear_password")
            if isinstance(secret, str) and secret:
                return secret
    return None


# ---------------------------------------------------------------------------
# delivery


def deliver(cfg, body, secret, log, deadline, clock=time.monotonic, sleep=time.sleep,
            rand=random.random, wallclock=time.time, transport=http_request, context=None):
    """POST the body until accepted, refused, or out of budget. Returns an exit code."""
    if context is None:
        context = receiver_tls_context(cfg.ca_bundle)
    target = cfg.receiver_display()
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - clock()
        if attempt > 1 and remaining < MIN_ATTEMPT_SECONDS:
            log.error("gave up delivering to %s: time budget of %gs used up after %d attempt(s)"
                      % (target, cfg.retry_budget, attempt - 1))
            return EXIT_UNREACHABLE
        # the first attempt always happens, with at least MIN_ATTEMPT_SECONDS
        attempt_timeout = max(MIN_ATTEMPT_SECONDS, min(cfg.timeout, remaining))
        timestamp = int(wallclock())
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, application/problem+json",
            "User-Agent": "opsmesh-splunk-alert-action/%s" % VERSION,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        retry_after = None
        try:
            status, resp_headers, data = transport("POST", cfg.receiver_url, headers, body,
                                                   attempt_timeout, context)
        except TransportError as err:
            if err.permanent:
                log.error("cannot deliver to %s: %s (set param.ca_bundle if the receiver uses a private CA)"
                          % (target, err))
                return EXIT_UNREACHABLE
            problem = "network error: %s" % err
        else:
            if 200 <= status < 300:
                log.info("delivered to %s: HTTP %d%s" % (target, status, _accepted_summary(data)))
                return EXIT_OK
            detail = describe_problem(data)
            suffix = (" - %s" % detail) if detail else ""
            if status in (401, 403):
                log.error("receiver %s rejected the signature (HTTP %d)%s; check that the secret in "
                          "storage/passwords matches the receiver's and that this host's clock is right"
                          % (target, status, suffix))
                return EXIT_AUTH
            if status == 429 or (500 <= status <= 599 and status not in (501, 505)):
                problem = "HTTP %d%s" % (status, suffix)
                retry_after = parse_retry_after(resp_headers.get("Retry-After") if resp_headers else None,
                                                wallclock())
            else:
                log.error("receiver %s refused the alert (HTTP %d)%s; not retrying" % (target, status, suffix))
                return EXIT_REFUSED
        if retry_after is not None:
            delay = max(retry_after, 0.25)
        else:
            delay = backoff_delay(attempt, rand)
        left = deadline - clock()
        if delay + MIN_ATTEMPT_SECONDS > left:
            if retry_after is not None and retry_after + MIN_ATTEMPT_SECONDS > left:
                log.error("gave up delivering to %s after %d attempt(s): %s; receiver asked to retry after "
                          "%.0fs, beyond the remaining budget of %.1fs" % (target, attempt, problem, retry_after, left))
                return EXIT_UNREACHABLE
            delay = left - MIN_ATTEMPT_SECONDS
            if delay < 0:
                log.error("gave up delivering to %s after %d attempt(s): %s; time budget used up"
                          % (target, attempt, problem))
                return EXIT_UNREACHABLE
        log.warn("attempt %d to %s failed (%s); retrying in %.1fs" % (attempt, target, problem, delay))
        sleep(delay)


def _accepted_summary(data):
    try:
        doc = json.loads(data.decode("utf-8", "replace")) if data else None
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    parts = []
    if doc.get("incident_key"):
        parts.append("incident_key=%s" % doc.get("incident_key"))
    if isinstance(doc.get("alert_ids"), list):
        parts.append("alert_ids=%s" % ",".join("%s" % a for a in doc["alert_ids"][:10]))
    return (" " + " ".join(parts)) if parts else ""


# ---------------------------------------------------------------------------
# main


def app_id_from_path():
    return os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(payload, log, environ=None, clock=time.monotonic, sleep=time.sleep, rand=random.random,
        wallclock=time.time, transport=http_request, started=None):
    environ = os.environ if environ is None else environ
    started = clock() if started is None else started
    if not isinstance(payload, dict):
        raise ActionError(EXIT_USAGE, "the payload on stdin is not a JSON object")
    session_key = payload.get("session_key")
    if isinstance(session_key, str):
        log.redact(session_key)
    cfg = parse_config(payload.get("configuration"), environ)
    deadline = started + cfg.retry_budget

    first, rows, more = load_rows(payload, cfg, log)
    meta = {
        "sid": _as_text(payload.get("sid")),
        "search_name": payload.get("search_name") if isinstance(payload.get("search_name"), str) else None,
        "app": _as_text(payload.get("app")),
        "owner": _as_text(payload.get("owner")),
        "results_link": _as_text(payload.get("results_link")),
        "server_host": _as_text(payload.get("server_host")),
        "cluster": cfg.cluster,
        "severity": cfg.severity,
        "entity_fields": list(cfg.entity_fields),
        "sent_at": int(wallclock()),
    }
    missing = [f for f in cfg.entity_fields if first and f not in first]
    if missing:
        log.warn("entity field(s) %s are not in the first result row" % ", ".join(missing))

    secret = fetch_secret(payload, cfg, app_id_from_path(), log, deadline, clock, sleep, environ, transport)
    log.redact(secret)

    body, sent, truncated = build_body(meta, first, rows, more, cfg.max_body_bytes)
    log.info("sending alert sid=%s search_name=%r rows=%d truncated=%s bytes=%d to %s"
             % (meta["sid"], meta["search_name"], sent, "true" if truncated else "false", len(body),
                cfg.receiver_display()))
    return deliver(cfg, body, secret, log, deadline, clock=clock, sleep=sleep, rand=rand,
                   wallclock=wallclock, transport=transport)


def main(argv=None, stdin=None, stderr=None, environ=None):
    argv = sys.argv if argv is None else argv
    log = Log(stderr)
    started = time.monotonic()
    if len(argv) < 2 or argv[1] != "--execute":
        log.fatal("usage: %s --execute < payload.json (Splunk runs this alert action with "
                  "payload_format = json)" % os.path.basename(argv[0] if argv else "opsmesh.py"))
        return EXIT_USAGE
    stream = sys.stdin if stdin is None else stdin
    try:
        raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        payload = json.loads(raw)
    except (ValueError, UnicodeError, OSError) as err:
        log.fatal("cannot read the JSON payload from stdin: %s" % type(err).__name__)
        return EXIT_USAGE
    if not isinstance(payload, dict):
        log.fatal("the payload on stdin is not a JSON object")
        return EXIT_USAGE
    if isinstance(payload.get("session_key"), str):
        log.redact(payload["session_key"])
    try:
        return run(payload, log, environ=environ, started=started)
    except ActionError as err:
        log.error(err.message)
        return err.code
    except Exception as err:  # pylint: disable=broad-except
        log.fatal("unexpected error: %s: %s" % (type(err).__name__, err))
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
