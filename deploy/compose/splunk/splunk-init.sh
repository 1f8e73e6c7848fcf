#!/bin/sh
# One-shot (compose service `splunk-init`), idempotent:
#  1. creates the index opsmesh writes to ($OPSMESH_INDEX, default opsmesh; the
#     app's `opsmesh_index` macro searches it) and lets the HEC token write it;
#  2. makes a Splunk authentication token for the diagnoser's searches and
#     leaves it in $TOKEN_PATH (a shared volume); an existing token that
#     still authenticates is kept.
# Runs in curlimages/curl (busybox sh); the container's certificate is
# self-signed, hence --insecure, on the compose network only.
set -eu

: "${SPLUNK_URL:?}" "${SPLUNK_PASSWORD:?}" "${TOKEN_PATH:?}"
owner="${TOKEN_OWNER_UID:-10001}"
index="${OPSMESH_INDEX:-opsmesh}"
curl_() { curl --silent --show-error --insecure --max-time 30 "$@"; }

# 1. the index (201 created, 409 already there)
code="$(curl_ -o /dev/null -w '%{http_code}' -u "admin:$SPLUNK_PASSWORD" -X POST \
    "$SPLUNK_URL/services/data/indexes" -d "name=$index")"
case "$code" in
    201 | 409) echo "splunk-init: index $index ready ($code)" ;;
    *) echo "splunk-init: creating index $index failed (HTTP $code)" >&2; exit 1 ;;
esac
# The image's HEC token input is named splunk_hec_token; allow it the index
# (best effort: an unrestricted token needs nothing).
code="$(curl_ -o /dev/null -w '%{http_code}' -u "admin:$SPLUNK_PASSWORD" -X POST \
    "$SPLUNK_URL/servicesNS/nobody/splunk_httpinput/data/inputs/http/splunk_hec_token" \
    -d "indexes=main,$index")"
echo "splunk-init: HEC token allowed indexes main,$index (HTTP $code)"

if [ -s "$TOKEN_PATH" ]; then
    if curl_ --fail -o /dev/null -H "Authorization: Bearer $(cat "$TOKEN_PATH")" \
        "$SPLUNK_URL/services/authentication/current-context"; then
        echo "splunk-init: existing search token is valid"
        exit 0
    fi
    echo "splunk-init: existing search token rejected, creating a new one"
fi

# Token authentication is off on a fresh instance.
curl_ --fail -o /dev/null -u "admin:$SPLUNK_PASSWORD" -X POST \
    "$SPLUNK_URL/services/admin/token-auth/tokens_auth" -d disabled=false

resp="$(curl_ --fail -u "admin:$SPLUNK_PASSWORD" -X POST \
    "$SPLUNK_URL/services/authorization/tokens?output_mode=json" \
    -d name=admin -d audience=opsmesh-diagnoser -d expires_on=+90d)"
token="$(printf '%s' "$resp" | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')"
if [ -z "$token" ]; then
    echo "splunk-init: no token in Splunk's answer" >&2
    exit 1
fi

umask 077
printf '%s' "$token" > "$TOKEN_PATH.tmp"
chown "$owner:$owner" "$TOKEN_PATH.tmp"
chmod 0400 "$TOKEN_PATH.tmp"
mv "$TOKEN_PATH.tmp" "$TOKEN_PATH"
echo "splunk-init: search token written to $TOKEN_PATH"
