# -*- coding: utf-8 -*-
"""Credential broker: GET /servicesNS/nobody/opsmesh_app/opsmesh/credential?name=<credential>.

Alert owners need the opsmesh signing secret, but the capability list_storage_passwords
would let them read every credential they can see. splunkd runs this persistent REST
handler (restmap.conf [script:opsmesh_credential]) only for users with the capability
opsmesh_read_credential, and passes it a system token (passSystemAuth = true). The handler
checks the capability again with the caller's own token, then reads exactly one
credential — realm "opsmesh", the requested name, in this app — with the system token,
and returns only its secret. No other realm, app or listing is reachable through it.
"""
import json
import os
import sys
from urllib import parse as urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from opsmesh import (  # noqa: E402  pylint: disable=wrong-import-position
    REALM, SPLUNKD_TIMEOUT, TransportError, app_id_from_path, find_password, http_request, splunkd_tls_context,
)
from opsmesh_config import CREDENTIAL_RE  # noqa: E402  pylint: disable=wrong-import-position

try:
    from splunk.persistconn.application import PersistentServerConnectionApplication
except ImportError:  # outside splunkd (the tests): the logic below needs nothing from it
    PersistentServerConnectionApplication = object

CAPABILITY = "opsmesh_read_credential"


def reply(status, **payload):
    return {"status": status, "headers": {"Content-Type": "application/json"}, "payload": payload}


def _get_json(transport, base, path, token):
    url = "%s%s%soutput_mode=json" % (base, path, "&" if "?" in path else "?")
    headers = {"Authorization": "Splunk %s" % token, "Accept": "application/json"}
    status, _, data = transport("GET", url, headers, None, SPLUNKD_TIMEOUT, splunkd_tls_context(base, os.environ))
    try:
        doc = json.loads(data.decode("utf-8", "replace")) if data else None
    except ValueError:
        doc = None
    return status, doc


def capabilities_of(transport, base, token):
    """The caller's user name and capabilities (authentication/current-context)."""
    status, doc = _get_json(transport, base, "/services/authentication/current-context", token)
    if status != 200 or not isinstance(doc, dict) or not doc.get("entry"):
        return None, None
    content = doc["entry"][0].get("content") or {}
    return content.get("username"), set(content.get("capabilities") or [])


def handle(request, app_id, transport=http_request):
    """One request as splunkd hands it to a persistent handler; returns the reply."""
    query = dict(pair for pair in request.get("query") or [] if isinstance(pair, list) and len(pair) == 2)
    name = ("%s" % query.get("name", "")).strip()
    if not CREDENTIAL_RE.match(name):
        return reply(400, error="query parameter 'name' must be a credential name: 1-128 letters, "
                                 "digits, '.', '_' or '-'")
    user_token = (request.get("session") or {}).get("authtoken")
    system_token = request.get("system_authtoken")
    base = ((request.get("server") or {}).get("rest_uri") or "").rstrip("/")
    if not user_token or not system_token or not base:
        return reply(500, error="splunkd passed no session, system token or rest_uri "
                                 "(restmap.conf needs passSystemAuth = true)")
    try:
        user, capabilities = capabilities_of(transport, base, user_token)
        if capabilities is None:
            return reply(401, error="splunkd did not confirm the caller's session")
        if CAPABILITY not in capabilities:
            return reply(403, error="user %s lacks the capability %s (role opsmesh_alert_sender grants it)"
                                     % (user, CAPABILITY))
        entity = urlparse.quote("%s:%s:" % (REALM, name), safe="")
        status, doc = _get_json(transport, base, "/servicesNS/nobody/%s/storage/passwords/%s"
                                % (urlparse.quote(app_id, safe=""), entity), system_token)
    except TransportError as err:
        return reply(502, error="cannot reach splunkd: %s" % err)
    secret = find_password(doc, name) if status == 200 else None
    if status == 404 or (status == 200 and not secret):
        return reply(404, error="no credential '%s' in realm '%s'" % (name, REALM), credential_missing=True)
    if status != 200:
        return reply(502, error="splunkd answered HTTP %d reading the credential" % status)
    return reply(200, name=name, realm=REALM, secret=secret)


class JsonRequestHandler(PersistentServerConnectionApplication):
    """A persistent REST handler: splunkd's request JSON in, reply dict out.
    Subclasses set respond(request) to the function that answers a parsed request."""

    def __init__(self, _command_line=None, _command_arg=None):
        PersistentServerConnectionApplication.__init__(self)

    def respond(self, request):
        raise NotImplementedError

    def handle(self, in_string):
        try:
            request = json.loads(in_string)
        except (ValueError, TypeError):
            return reply(400, error="the request is not JSON")
        if not isinstance(request, dict):
            return reply(400, error="the request is not a JSON object")
        return self.respond(request)

    def done(self):
        pass


class CredentialHandler(JsonRequestHandler):
    """restmap.conf: scripttype = persist, handler = opsmesh_credential.CredentialHandler."""

    def respond(self, request):
        if request.get("method", "GET") != "GET":
            return reply(405, error="only GET is supported")
        return handle(request, app_id_from_path())
