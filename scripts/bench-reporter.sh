#!/usr/bin/env bash
# Throughput of the reporter's HEC writer: a backlog of opsmesh envelopes on the in-memory
# bus drained into a local HEC test server (gzip, batches, optional indexer ack).
#
#   scripts/bench-reporter.sh [EVENTS]        # default 60000
#   PROFILE=dev scripts/bench-reporter.sh     # unoptimised build, quicker to compile
#
# Figures are measured, not asserted; the HEC server runs on the same machine and competes
# for the CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
exec cargo run --quiet --profile "$profile" -p opsmesh-reporter --example bench_hec -- "$@"
