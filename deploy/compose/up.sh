#!/usr/bin/env bash
# Bring up the opsmesh compose stack with one command:
#
#   deploy/compose/up.sh [extra `compose up` arguments]
#
# First run: generates the local secrets (.secrets/, git-ignored: HMAC secret,
# HEC token, signing keys, a local CA and the certificates it signs for the
# receiver's TLS door and splunkd) and .env (Splunk admin password, app
# package name), finds or packages the opsmesh Splunk app, builds the image and
# starts everything, waiting until every service is healthy. splunk-init then
# configures Splunk (index, HEC token, the app's settings and secret, the
# detections) through its REST API.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    echo "up.sh: needs Docker Compose (the 'docker compose' plugin or docker-compose)" >&2
    exit 1
fi

rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
uuid4() {
    if [ -r /proc/sys/kernel/random/uuid ]; then cat /proc/sys/kernel/random/uuid
    else h="$(rand_hex 16)"; printf '%s-%s-4%s-a%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"; fi
}

# --- secrets (files mounted as compose secrets; readable by the container user)
mkdir -p .secrets
chmod 0700 .secrets
[ -s .secrets/receiver-hmac ] || rand_hex 32 > .secrets/receiver-hmac
[ -s .secrets/hec-token ] || uuid4 | tr -d '\n' > .secrets/hec-token
[ -s .secrets/argocd-token ] || rand_hex 24 > .secrets/argocd-token
chmod 0644 .secrets/receiver-hmac .secrets/hec-token .secrets/argocd-token
# Ed25519 pairs: the reporter signs approvals (the remediator checks them), the
# remediator signs its audit ledger (opsmesh audit verify --keys ledger.pub.pem).
ed25519_pair() { # <private key file> <public key file>
    if [ ! -s "$1" ]; then
        openssl genpkey -algorithm ed25519 -out "$1"
        openssl pkey -in "$1" -pubout -out "$2"
    fi
    chmod 0644 "$1" "$2"
}
ed25519_pair .secrets/approvals.key.pem .secrets/approvals.pub.pem
ed25519_pair .secrets/ledger.key.pem .secrets/ledger.pub.pem
# The stack's CA and certificates: .secrets/ca.pem, receiver-tls.crt/.key, splunkd.pem.
"$here/tls.sh" .secrets

# --- the opsmesh Splunk app package
app_dir="$repo/splunk-app/dist"
pkg=""
for f in "$app_dir"/*.tgz; do
    [ -e "$f" ] || continue
    if [ -z "$pkg" ] || [ "$f" -nt "$pkg" ]; then pkg="$f"; fi
done
if [ -z "$pkg" ]; then
    # No package built yet: package the app directory the way Splunk expects
    # (a gzipped tar of the app folder), into a git-ignored local folder.
    src=""
    for f in "$repo"/splunk-app/*/default/app.conf; do
        if [ -e "$f" ]; then src="$f"; break; fi
    done
    if [ -z "$src" ]; then
        echo "up.sh: no splunk-app/dist/*.tgz and no app folder with default/app.conf under splunk-app/" >&2
        exit 1
    fi
    app_root="$(dirname "$(dirname "$src")")"
    app_id="$(basename "$app_root")"
    version="$(sed -n 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*//p' "$src" | head -n 1)"
    app_dir="$here/.build/apps"   # git-ignored
    mkdir -p "$app_dir"
    pkg="$app_dir/${app_id}-${version:-0.0.0}.tgz"
    tar --exclude='local' --exclude='*.pyc' --exclude='__pycache__' \
        --owner=0 --group=0 -C "$(dirname "$app_root")" -czf "$pkg" "$app_id"
    echo "up.sh: packaged $app_id into $pkg"
fi

# --- .env (compose interpolation); keeps an existing password and token
touch .env
chmod 0600 .env
set_env() {
    local key="$1" value="$2"
    if grep -q "^${key}=" .env; then
        sed -i.bak "s|^${key}=.*|${key}=${value}|" .env && rm -f .env.bak
    else
        printf '%s=%s\n' "$key" "$value" >> .env
    fi
}
grep -q '^COMPOSE_PROJECT_NAME=' .env || set_env COMPOSE_PROJECT_NAME opsmesh
grep -q '^SPLUNK_PASSWORD=' .env || set_env SPLUNK_PASSWORD "Om-$(rand_hex 12)"
set_env OPSMESH_SPLUNK_APP_DIR "$app_dir"
# The simulator's Argo CD API takes its token on the command line.
set_env OPSMESH_SIM_ARGOCD_TOKEN "$(cat .secrets/argocd-token)"
set_env OPSMESH_SPLUNK_APP_PACKAGE "$(basename "$pkg")"

# --- up
if [ "${compose[0]}" = "docker" ]; then
    "${compose[@]}" up -d --build --wait --wait-timeout 900 "$@"
else
    # docker-compose 1.x has no --wait; start and poll the health of each container.
    "${compose[@]}" up -d --build "$@"
    deadline=$((SECONDS + 900))
    while :; do
        pending="$("${compose[@]}" ps | grep -E 'starting|unhealthy' || true)"
        [ -z "$pending" ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then echo "$pending" >&2; exit 1; fi
        sleep 10
    done
fi

cat <<MSG

opsmesh is up (project $(sed -n 's/^COMPOSE_PROJECT_NAME=//p' .env)):
  alert receiver   https://127.0.0.1:8443/v1/alerts/splunk   (CA: deploy/compose/.secrets/ca.pem,
                   HMAC secret: deploy/compose/.secrets/receiver-hmac; plain http on 8080)
  operator console http://127.0.0.1:8090
  Splunk Web       http://127.0.0.1:8000   (admin / SPLUNK_PASSWORD in deploy/compose/.env)
  Splunk HEC       http://127.0.0.1:8088   (token: deploy/compose/.secrets/hec-token)
  splunkd REST     https://127.0.0.1:8089  (CA: deploy/compose/.secrets/ca.pem)
  simulator        http://127.0.0.1:8081
  Kafka            localhost:29092
Check the loop: deploy/compose/smoke.sh
Stop: docker compose -f deploy/compose/compose.yaml down   (add -v to drop data)
MSG
