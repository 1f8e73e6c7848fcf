#!/usr/bin/env bash
# End-to-end smoke test of the compose stack, for a machine with Docker:
#
#   deploy/compose/up.sh && deploy/compose/smoke.sh
#
# 1. waits until every compose service is healthy and Splunk's HEC answers;
# 2. indexes a synthetic OOMKilled telemetry event through HEC (the sample of the
#    "KServe model OOMKilled" detection, splunk-app/tests/detections/kserve-oomkilled.json,
#    stamped two minutes ago so it lies in the detection's -6m@m..-1m@m window, about the
#    stack's cluster and a model named for this run, so the detection's per-model throttle
#    cannot hold its alert back);
# 3. runs that detection at once (saved search dispatch with trigger_actions=1) instead of
#    waiting for its schedule: the "Send to opsmesh" action sends the alert to the receiver;
# 4. waits until opsmesh wrote the alert back (opsmesh:alert with the search's sid) and then
#    the incident's opsmesh:remediation events, and prints the SPL that shows the incident.
#
# Needs curl and python3. Limits: OPSMESH_SMOKE_TIMEOUT (seconds per wait, default 600),
# OPSMESH_SMOKE_POLL (seconds between polls, default 10). Exits non-zero naming the step
# that did not complete.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

TIMEOUT="${OPSMESH_SMOKE_TIMEOUT:-600}"
POLL="${OPSMESH_SMOKE_POLL:-10}"
SPLUNKD="${OPSMESH_SMOKE_SPLUNKD:-https://127.0.0.1:8089}"
HEC="${OPSMESH_SMOKE_HEC:-http://127.0.0.1:8088}"
APP="opsmesh_app"
DETECTION="KServe model OOMKilled"
SAMPLE="$repo/splunk-app/tests/detections/kserve-oomkilled.json"

fail() { echo "smoke.sh: $*" >&2; exit 1; }
step() { printf '== %s\n' "$*" >&2; }
for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "needs $tool"
done
[ -s .env ] || fail "no deploy/compose/.env: run deploy/compose/up.sh first"
[ -s .secrets/hec-token ] || fail "no deploy/compose/.secrets/hec-token: run deploy/compose/up.sh first"
[ -s "$SAMPLE" ] || fail "missing $SAMPLE"
password="$(sed -n 's/^SPLUNK_PASSWORD=//p' .env)"
hec_token="$(cat .secrets/hec-token)"
[ -n "$password" ] || fail "SPLUNK_PASSWORD is not set in deploy/compose/.env"

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    fail "needs Docker Compose (the 'docker compose' plugin or docker-compose)"
fi

# splunkd's certificate is signed by the stack's CA (up.sh → tls.sh) for 127.0.0.1 too.
[ -s .secrets/ca.pem ] || fail "no deploy/compose/.secrets/ca.pem: run deploy/compose/up.sh first"
splunkd() { curl --silent --show-error --max-time 30 --cacert .secrets/ca.pem -u "admin:$password" "$@"; }
urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# until <what> <command...>: runs the command every $POLL s until it succeeds or $TIMEOUT s pass
until_ok() {
    local what="$1" deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${TIMEOUT}s waiting for $what"
        sleep "$POLL"
    done
}

# search <spl>: prints the first result's fields as JSON (nothing when there is none)
search() {
    splunkd "$SPLUNKD/servicesNS/admin/$APP/search/jobs/export" --data-urlencode "search=$1" \
        -d output_mode=json -d earliest_time=-1h -d latest_time=now \
        | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line:
        doc = json.loads(line)
        if doc.get("result"):
            print(json.dumps(doc["result"]))
            break'
}

# --- 1. health
step "waiting for every service to be healthy"
all_healthy() {
    local states
    states="$("${compose[@]}" ps 2>/dev/null)" || return 1
    echo "$states" | grep -q healthy && ! echo "$states" | grep -Eq 'starting|unhealthy'
}
until_ok "healthy compose services" all_healthy
until_ok "Splunk HEC" curl --silent --fail --max-time 10 -o /dev/null "$HEC/services/collector/health"
until_ok "splunkd" splunkd --fail -o /dev/null "$SPLUNKD/services/server/info"

receiver_url="$(splunkd "$SPLUNKD/servicesNS/nobody/$APP/configs/conf-alert_actions/opsmesh?output_mode=json" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["entry"][0]["content"].get("param.receiver_url", ""))')"
[ -n "$receiver_url" ] || fail "the opsmesh alert action has no receiver URL: splunk-init did not configure it"
disabled="$(splunkd "$SPLUNKD/servicesNS/nobody/$APP/saved/searches/$(urlencode "$DETECTION")?output_mode=json" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["entry"][0]["content"].get("disabled"))')"
case "$disabled" in
    False | false | 0) ;;
    *) fail "the detection \"$DETECTION\" is disabled: splunk-init did not enable the detections" ;;
esac

# --- 2. a synthetic OOMKilled event through HEC
step "indexing a synthetic OOMKilled event through HEC"
cluster="$(sed -n 's/^OPSMESH_CLUSTER=//p' .env)"
event="$(python3 - "$SAMPLE" "${cluster:-compose-sim}" <<'PY'
import json, sys, time, uuid
from datetime import datetime, timezone
sample = json.load(open(sys.argv[1]))
event = sample["hec_events"][0]
# The stack's cluster: the remediator acts only on its own (the sample says prod-eu-1).
event["fields"]["cluster"] = event["event"]["cluster"] = sys.argv[2]
# A model of its own: the detection throttles per cluster, namespace and model for 30
# minutes, and the simulator's OOM-looping gpt-oss-120b may have alerted already.
record = event["event"]["payload"]["record"]
record["name"] = "smoke-" + uuid.uuid4().hex[:8]
event["event"]["payload"]["resource"] = "inferenceservice/%s/%s" % (record["namespace"], record["name"])
now = time.time() - 120  # inside -6m@m..-1m@m when the detection runs within the minute
stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
event_id = str(uuid.uuid4())
event["time"] = round(now, 3)
event["fields"]["event_id"] = event_id
event["event"].update(id=event_id, occurred_at=stamp)
event["event"]["payload"]["observed_at"] = stamp
print(json.dumps(event))
PY
)"
answer="$(curl --silent --show-error --max-time 30 -H "Authorization: Splunk $hec_token" \
    "$HEC/services/collector/event" -d "$event")"
echo "$answer" | grep -q '"code":0' || fail "HEC refused the event: $answer"

# --- 3. run the detection now, with its alert actions
step "running the detection \"$DETECTION\""
detection="$(urlencode "$DETECTION")"
event_searchable() {
    [ -n "$(search "search \`opsmesh_index\` sourcetype=\"opsmesh:models\" payload.record.oom_killed>0 earliest=-5m | head 1")" ]
}
until_ok "the synthetic event to be searchable" event_searchable
sid="$(splunkd "$SPLUNKD/servicesNS/nobody/$APP/saved/searches/$detection/dispatch" \
    -d trigger_actions=1 -d output_mode=json | python3 -c 'import json, sys; print(json.load(sys.stdin)["sid"])')"
[ -n "$sid" ] || fail "dispatching \"$DETECTION\" returned no sid"
echo "detection sid: $sid" >&2

# --- 4. the alert and the incident's remediation written back through HEC
step "waiting for opsmesh to write the alert back"
alert_spl="search \`opsmesh_index\` sourcetype=\"opsmesh:alert\" \"payload.sid\"=\"$sid\" | head 1 | table incident_id"
incident=""
alert_written() {
    incident="$(search "$alert_spl" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read() or "{}").get("incident_id", ""))')"
    [ -n "$incident" ]
}
until_ok "the opsmesh:alert event of sid $sid (is the alert action delivering? index=_internal sendmodalert action=opsmesh)" alert_written

step "waiting for the remediation events of incident $incident"
remediation_written() {
    [ -n "$(search "search \`opsmesh_index\` sourcetype=\"opsmesh:remediation\" incident_id=\"$incident\" | head 1")" ]
}
until_ok "opsmesh:remediation events of incident $incident" remediation_written

cat <<MSG

smoke: the loop closed. Incident $incident:
  \`opsmesh_index\` sourcetype="opsmesh:*" incident_id="$incident" | \`opsmesh_incident_normalize\`
  | table _time sourcetype state action target root_cause reason
(Splunk Web http://127.0.0.1:8000, app "opsmesh", or the opsmesh incidents dashboard.)
MSG
