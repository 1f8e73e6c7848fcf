#!/usr/bin/env bash
# Runs the entire opsmesh test suite. Installs what it needs when missing (the tansu
# Kafka-compatible broker, the Python tools for the Splunk app and the deploy checks) into
# ~/.cache/opsmesh and reuses them afterwards.
#
#   scripts/test.sh            everything
#   scripts/test.sh --rust     only fmt, clippy and the Rust tests
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${OPSMESH_CACHE:-$HOME/.cache/opsmesh}"
TOOLS="$CACHE/tools"
export OPSMESH_TANSU="${OPSMESH_TANSU:-$TOOLS/bin/tansu}"
only_rust=false
[[ "${1:-}" == "--rust" ]] && only_rust=true

step() { printf '\n==> %s\n' "$*"; }

if [[ ! -x "$OPSMESH_TANSU" ]]; then
  step "installing tansu 0.6.0 (Kafka-compatible test broker; ~13 min on 2 cores, once)"
  CARGO_TARGET_DIR="$CACHE/tansu-target" cargo install tansu --version 0.6.0 --locked \
    --features dynostore,libsql --root "$TOOLS"
  rm -rf "$CACHE/tansu-target"
fi
"$OPSMESH_TANSU" --version >/dev/null

step "promtool (the metrics test lints /metrics with it; deploy/check.sh checks the rules)"
OPSMESH_PROMTOOL="$(deploy/checks/install-promtool.sh "$CACHE")"
export OPSMESH_PROMTOOL

step "tools for the console and MCP-client tests (Chromium, playwright-core, Python mcp)"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
if ! command -v chromium >/dev/null 2>&1; then
  as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null
fi
(cd services/reporter/tests/console && { [ -d node_modules ] || npm ci --no-audit --no-fund --silent; })
[ -x "$CACHE/venv/bin/python" ] || python3 -m venv "$CACHE/venv"
"$CACHE/venv/bin/python" -c "import mcp" 2>/dev/null || "$CACHE/venv/bin/pip" install --quiet mcp==2.3.0

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building the binaries the end-to-end tests run as processes"
cargo build --workspace --bins --locked

step "cargo test (unit, contract, and end-to-end over tansu; each e2e test starts its own broker)"
# The scenario evaluation runs as its own step below (its table goes to the log); skipping
# its test here plays every scenario once, not twice.
cargo test --workspace --locked -- --skip eval_over_every_scenario_has_no_miss

step "opsmesh eval tests/scenarios (every scenario through the simulator and the mesh, scored; fails on any miss)"
OPSMESH__LOG__LEVEL=error cargo run --locked --quiet -p opsmesh -- eval tests/scenarios

step "fuzzing the receiver's parsers (cargo fuzz, ${OPSMESH_FUZZ_SECONDS:-30}s)"
if [[ ! -x "$TOOLS/bin/cargo-fuzz" ]]; then
  CARGO_TARGET_DIR="$CACHE/cargo-fuzz-build" cargo install cargo-fuzz --version 0.13.2 --locked --root "$TOOLS"
  rm -rf "$CACHE/cargo-fuzz-build"
fi
# cargo fuzz needs nightly-only flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
(cd services/alert-receiver/fuzz && mkdir -p corpus/parsers && CARGO_TARGET_DIR="$CACHE/fuzz-target" RUSTC_BOOTSTRAP=1 \
  "$TOOLS/bin/cargo-fuzz" run parsers --sanitizer none -- \
  -max_total_time="${OPSMESH_FUZZ_SECONDS:-30}" -rss_limit_mb=2048 corpus/parsers seeds/parsers)

if ! $only_rust; then
  step "Splunk app: package, AppInspect, action script tests"
  splunk-app/check.sh

  step "deploy: kustomize render, schema validation, RBAC, compose"
  deploy/check.sh
fi

step "all tests passed"
