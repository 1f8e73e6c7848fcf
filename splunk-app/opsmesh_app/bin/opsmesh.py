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

Parameters and their validation are in opsmesh_config.py, reading result rows in
opsmesh_results.py, the credential broker it asks for the secret in opsmesh_credential.py.
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
import hashlib
import hmac
import http.client
import json
import os
import random
import ssl
import sys
import time
from urllib import error as urlerror
from urllib import parse as urlparse
from urllib import request as urlrequest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from opsmesh_config import (  # noqa: E402  pylint: disable=wrong-import-position
    EXIT_AUTH, EXIT_CONFIG, EXIT_INTERNAL, EXIT_OK, EXIT_REFUSED, EXIT_SECRET, EXIT_UNREACHABLE, EXIT_USAGE,
    LOG_LEVELS, SESSION_KEY_RE, ActionError, allowed_only, display_url, is_loopback_host, is_pem_text,
    left_out_fields, parse_config, validate_url,
)
from opsmesh_results import (  # noqa: E402  pylint: disable=wrong-import-position
    as_text, normalize_row, read_results_file,
)

VERSION = "0.1.0"
ACTION_NAME = "opsmesh"
REALM = "opsmesh"
SIGNATURE_HEADER = "X-Opsmesh-Signature"

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
SHRUNK_VALUE_CHARS = 1024
SHRUNK_MV_VALUES = 20




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
        # everything until param.log_level is known
        self.threshold = 0

    def set_level(self, level):
        """Drop lines below level (one of LOG_LEVELS); FATAL is always written."""
        self.threshold = LOG_LEVELS.index(level)

    def redact(self, value):
        if value and len(value) >= 4 and value not in self._redact:
            self._redact.append(value)
            self._redact.sort(key=len, reverse=True)

    def _emit(self, level, message):
        if level in LOG_LEVELS and LOG_LEVELS.index(level) < self.threshold:
            return
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
    """Verified TLS: system trust store, or only the given CA bundle (PEM text or file).
    No way to turn it off."""
    if is_pem_text(ca_bundle):
        context = ssl.create_default_context(cadata=ca_bundle)
    elif ca_bundle:
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


def http_request(method, url, headers, body, timeout, context, proxy_url=""):
    """One HTTP exchange. Returns (status, headers, body bytes); raises TransportError.

    proxy_url: forward proxy for non-loopback hosts (https through CONNECT); without it the
    https_proxy / no_proxy environment applies."""
    host = urlparse.urlsplit(url).hostname
    handlers = [_NoRedirect(), urlrequest.HTTPSHandler(context=context)]
    if is_loopback_host(host):
        handlers.append(urlrequest.ProxyHandler({}))
    elif proxy_url:
        handlers.append(urlrequest.ProxyHandler({"http": proxy_url, "https": proxy_url}))
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
        log.debug("attempt %d to %s, timeout %.1fs%s" % (attempt, target, attempt_timeout,
                                                       " via proxy " + display_url(cfg.proxy_url) if cfg.proxy_url else ""))
        try:
            status, resp_headers, data = transport("POST", cfg.receiver_url, headers, body,
                                                   attempt_timeout, context, cfg.proxy_url)
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
    log.set_level(cfg.log_level)
    deadline = started + cfg.retry_budget

    first, rows, more = load_rows(payload, cfg, log)
    meta = {
        "sid": as_text(payload.get("sid")),
        "search_name": payload.get("search_name") if isinstance(payload.get("search_name"), str) else None,
        "app": as_text(payload.get("app")),
        "owner": as_text(payload.get("owner")),
        "results_link": as_text(payload.get("results_link")),
        "server_host": as_text(payload.get("server_host")),
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
