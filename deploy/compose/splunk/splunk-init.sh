#!/bin/sh
# One-shot (compose service `splunk-init`), idempotent: configures Splunk for opsmesh through
# splunkd's REST API only, so that after `up.sh` an event matching a detection flows
# Splunk → receiver → … → HEC → Splunk with no manual step:
#  1. the index opsmesh writes to ($OPSMESH_INDEX; the app's `opsmesh_index` macro);
#  2. HEC on, and the HEC token the reporter writes with (input "opsmesh", value from
#     $HEC_TOKEN_FILE, default index $OPSMESH_INDEX);
#  3. the opsmesh app's settings through its setup handler (opsmesh/settings, the same
#     validation as the setup page): receiver URL, cluster, the receiver's CA as PEM text,
#     and the HMAC secret, which the handler stores in storage/passwords (realm opsmesh);
#  4. every saved search of the app that sends to opsmesh (action.opsmesh = 1) enabled;
#  5. a Splunk authentication token for the diagnoser's searches in $TOKEN_PATH (a shared
#     volume); an existing token that still authenticates is kept;
#  6. a test alert through the app's opsmesh/test_alert: proves Splunk reaches the receiver
#     over TLS with the right secret (the receiver's test mode opens no incident).
# Runs in curlimages/curl (busybox sh, curl); splunkd's certificate is verified against the
# stack's CA ($SPLUNK_CA_FILE). Limit: SPLUNK_INIT_TIMEOUT seconds per request (30).
set -eu

: "${SPLUNK_URL:?}" "${SPLUNK_PASSWORD:?}" "${SPLUNK_CA_FILE:?}" "${TOKEN_PATH:?}"
: "${RECEIVER_URL:?}" "${RECEIVER_SECRET_FILE:?}" "${RECEIVER_CA_FILE:?}" "${HEC_TOKEN_FILE:?}"
owner="${TOKEN_OWNER_UID:-10001}"
index="${OPSMESH_INDEX:-opsmesh}"
app="${OPSMESH_APP:-opsmesh_app}"
cluster="${OPSMESH_CLUSTER:-default}"
timeout="${SPLUNK_INIT_TIMEOUT:-30}"
hec_input="/servicesNS/nobody/splunk_httpinput/data/inputs/http"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

say() { echo "splunk-init: $*"; }
die() { echo "splunk-init: $*" >&2; [ -s "$out" ] && sed 's/^/  /' "$out" >&2; exit 1; }
# api METHOD PATH [curl args...]: admin call; the body lands in $out, the status on stdout.
api() {
    method="$1" path="$2"
    shift 2
    curl --silent --show-error --max-time "$timeout" --cacert "$SPLUNK_CA_FILE" \
        -u "admin:$SPLUNK_PASSWORD" -X "$method" -o "$out" -w '%{http_code}' \
        "$SPLUNK_URL$path" "$@"
}
# urlencode TEXT: every byte as %XX (a valid path segment whatever the name holds).
urlencode() { printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n' | sed 's/../%&/g'; }

# 1. the index (201 created, 409 already there)
code="$(api POST /services/data/indexes -d "name=$index")"
case "$code" in
    201 | 409) say "index $index ready ($code)" ;;
    *) die "creating index $index failed (HTTP $code)" ;;
esac

# 2. HEC on, and the reporter's token: kept if it holds the token value, else made again.
code="$(api POST "$hec_input/http/enable")"
[ "$code" = 200 ] || die "enabling HEC failed (HTTP $code)"
hec_token="$(cat "$HEC_TOKEN_FILE")"
code="$(api GET "$hec_input/opsmesh?output_mode=json")"
if [ "$code" = 200 ] && ! grep -Eq "\"token\" *: *\"$hec_token\"" "$out"; then
    code="$(api DELETE "$hec_input/opsmesh")"
    [ "$code" = 200 ] || die "removing the outdated HEC token failed (HTTP $code)"
    code=404
fi
case "$code" in
    200) code="$(api POST "$hec_input/opsmesh" -d "index=$index" -d "indexes=$index" -d disabled=0)" ;;
    404) code="$(api POST "$hec_input" -d name=opsmesh --data-urlencode "token=$hec_token" \
        -d "index=$index" -d "indexes=$index" -d disabled=0)" ;;
    *) die "reading the HEC token input failed (HTTP $code)" ;;
esac
case "$code" in
    200 | 201) say "HEC token opsmesh writes to $index ($code)" ;;
    *) die "configuring the HEC token failed (HTTP $code)" ;;
esac

# 3. the app's settings and secret, validated by the app's own setup handler
code="$(api POST "/servicesNS/nobody/$app/opsmesh/settings" \
    --data-urlencode "receiver_url=$RECEIVER_URL" --data-urlencode "secret@$RECEIVER_SECRET_FILE" \
    --data-urlencode "ca_bundle@$RECEIVER_CA_FILE" --data-urlencode "cluster=$cluster" \
    -d credential=default)"
[ "$code" = 200 ] || die "the opsmesh app refused its settings (HTTP $code)"
say "opsmesh app sends to $RECEIVER_URL (secret in storage/passwords, CA as param.ca_bundle)"

# 4. the detections: every saved search of the app with the opsmesh action
code="$(api GET "/servicesNS/nobody/$app/saved/searches?output_mode=json&count=0&f=action.opsmesh&search=action.opsmesh%3D1")"
[ "$code" = 200 ] || die "listing the app's saved searches failed (HTTP $code)"
detections="$(grep -o '"name" *: *"[^"]*"' "$out" | sed 's/^"name" *: *"//; s/"$//')"
[ -n "$detections" ] || die "no saved search of $app sends to opsmesh (action.opsmesh = 1)"
while IFS= read -r name; do
    code="$(api POST "/servicesNS/nobody/$app/saved/searches/$(urlencode "$name")" -d disabled=0)"
    [ "$code" = 200 ] || die "enabling the detection \"$name\" failed (HTTP $code)"
    say "detection enabled: $name"
done <<NAMES
$detections
NAMES

# 5. the diagnoser's search token
token_valid() {
    [ -s "$TOKEN_PATH" ] && curl --silent --fail --max-time "$timeout" --cacert "$SPLUNK_CA_FILE" \
        -o /dev/null -H "Authorization: Bearer $(cat "$TOKEN_PATH")" \
        "$SPLUNK_URL/services/authentication/current-context"
}
if token_valid; then
    say "existing search token is valid"
else
    # Token authentication is off on a fresh instance.
    code="$(api POST /services/admin/token-auth/tokens_auth -d disabled=false)"
    [ "$code" = 200 ] || die "enabling token authentication failed (HTTP $code)"
    code="$(api POST "/services/authorization/tokens?output_mode=json" \
        -d name=admin -d audience=opsmesh-diagnoser -d expires_on=+90d)"
    case "$code" in 200 | 201) ;; *) die "creating the search token failed (HTTP $code)" ;; esac
    token="$(sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p' "$out")"
    [ -n "$token" ] || die "no token in splunkd's answer"
    (
        umask 077
        printf '%s' "$token" >"$TOKEN_PATH.tmp"
    )
    chown "$owner:$owner" "$TOKEN_PATH.tmp"
    chmod 0400 "$TOKEN_PATH.tmp"
    mv "$TOKEN_PATH.tmp" "$TOKEN_PATH"
    say "search token written to $TOKEN_PATH"
fi

# 6. Splunk → receiver, as the alert action will send
code="$(api POST "/servicesNS/nobody/$app/opsmesh/test_alert?output_mode=json")"
[ "$code" = 200 ] || die "the test alert did not reach the receiver (HTTP $code)"
say "test alert delivered to $RECEIVER_URL"
