#!/usr/bin/env bash
# Rerunnable benchmarks; prints figures, asserts nothing.
#
#   scripts/bench.sh              everything
#   scripts/bench.sh bus          bus throughput / latency (tansu Kafka and in-memory, 1 KiB)
#   scripts/bench.sh rss          idle resident memory of each service
#   scripts/bench.sh e2e          alert 202 -> its events accepted by HEC, p50/p99 (both buses)
#   scripts/bench.sh incidents    distinct incidents/s through the whole mesh, 202 -> terminal
#                                 ledger record in HEC, p50/p99 (both buses)
#   scripts/bench.sh chaos        the chaos suite's harness at scale: five service processes on
#                                 tansu (SQLite), BENCH_CHAOS_ALERTS alerts (10000) over
#                                 BENCH_CHAOS_MODELS OOM-looping models (100), each service
#                                 SIGKILLed and restarted, the broker restarted, HEC down 60 s
#   scripts/bench.sh receiver     receiver requests/s and p50/p99 (in-memory bus, tansu) vs
#                                 Prometheus Alertmanager 0.25, and p99 at half the max rate
#
# Knobs: BENCH_SECONDS (default 10), BENCH_CONCURRENCY (default 32), BENCH_MESSAGES (20000),
# BENCH_WARMUP (receiver comparison: seconds each fresh server is driven before a slice, 5),
# BENCH_ROUNDS (receiver comparison, 10), BENCH_SLICE (seconds per server per round, 5),
# BENCH_HALF_SLICES (receiver slices at half the median rate, per bus, 3), BENCH_INCIDENTS /
# BENCH_INCIDENTS_KAFKA (alerts of the incidents benchmark, 20000 in memory / 5000 on tansu).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
CACHE="${OPSMESH_CACHE:-$HOME/.cache/opsmesh}"
TANSU="${OPSMESH_TANSU:-$CACHE/tools/bin/tansu}"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
WARMUP="${BENCH_WARMUP:-5}"
ROUNDS="${BENCH_ROUNDS:-10}"
SLICE="${BENCH_SLICE:-5}"
HALF_SLICES="${BENCH_HALF_SLICES:-3}"
MESSAGES="${BENCH_MESSAGES:-20000}"
work="$(mktemp -d)"
pids=()
# Background processes are tracked in a file too: several are started inside $(…) subshells.
track() { pids+=("$1"); echo "$1" >>"$work/pids"; }
cleanup() {
  [[ -f "$work/pids" ]] && mapfile -t -O "${#pids[@]}" pids <"$work/pids"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT

[[ -x "$TANSU" ]] || { echo "tansu missing: run scripts/test.sh once (it installs it)"; exit 1; }
echo "== building release binaries"
cargo build --release --locked -p opsmesh -p opsmesh-collector -p opsmesh-alert-receiver \
  -p opsmesh-diagnoser -p opsmesh-remediator -p opsmesh-reporter -p opsmesh-tests --bins 2>&1 | tail -1
target="${CARGO_TARGET_DIR:-target}/release"
bench="$target/opsmesh-bench"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1"; return 1; }

broker_cpu=()
start_tansu() {
  local port; port=$(free_port)
  "${broker_cpu[@]}" "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  echo $! >"$work/tansu.pid"; track $!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  echo "127.0.0.1:$port"
}

machine() { echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"; }
machine

brokers=""
need_broker() { [[ -n "$brokers" ]] || { brokers=$(start_tansu); rm -f "$work/tansu.pid"; }; }

if [[ "$what" == all || "$what" == bus ]]; then
  echo "== bus: publish -> consume, $MESSAGES x 1 KiB"
  need_broker
  "$bench" bus --memory --messages "$MESSAGES"
  "$bench" bus --kafka "$brokers" --messages "$MESSAGES"
  echo "   unloaded latency (one message in flight):"
  "$bench" bus --memory --messages 2000 --in-flight 1
  "$bench" bus --kafka "$brokers" --messages 2000 --in-flight 1
fi

if [[ "$what" == all || "$what" == e2e ]]; then
  echo "== end to end: receiver 202 -> events accepted by a HEC test server (all services in one process)"
  need_broker
  "$bench" e2e --memory --alerts "${BENCH_ALERTS:-200}" --rate "${BENCH_RATE:-20}"
  "$bench" e2e --kafka "$brokers" --alerts "${BENCH_ALERTS:-200}" --rate "${BENCH_RATE:-20}"
fi

if [[ "$what" == all || "$what" == incidents ]]; then
  echo "== incidents: distinct incidents/s through the whole mesh (all services in one process), 202 -> terminal ledger record accepted by HEC"
  "$bench" incidents --memory --alerts "${BENCH_INCIDENTS:-20000}" --concurrency "$CONCURRENCY"
  # A broker of its own: the mesh's groups start from an empty log.
  incidents_broker=$(start_tansu); rm -f "$work/tansu.pid"
  "$bench" incidents --kafka "$incidents_broker" \
    --alerts "${BENCH_INCIDENTS_KAFKA:-5000}" --concurrency "$CONCURRENCY"
  # Another fresh broker: tansu may hand a restarted group's partitions to the stale member.
  e2e_broker=$(start_tansu); rm -f "$work/tansu.pid"
  echo "   alert 202 -> alert, diagnosis and decision in HEC at a moderate rate (50/s), default settings:"
  "$bench" e2e --kafka "$e2e_broker" --alerts 500 --rate 50
fi

if [[ "$what" == all || "$what" == chaos ]]; then
  echo "== chaos: the mesh as processes on tansu (SQLite) through kills, a broker restart and a HEC outage"
  # The harness starts its own broker and the release service binaries next to the bench.
  OPSMESH_TANSU="$TANSU" "$bench" chaos --alerts "${BENCH_CHAOS_ALERTS:-10000}" \
    --models "${BENCH_CHAOS_MODELS:-100}" --storm "${BENCH_CHAOS_STORM:-120}" \
    ${OPSMESH_CHAOS_SEED:+--seed "$OPSMESH_CHAOS_SEED"}
fi

if [[ "$what" == all || "$what" == rss ]]; then
  echo "== idle resident memory (Kafka bus on tansu, after /readyz + 3 s)"
  need_broker
  for svc in collector alert-receiver diagnoser remediator reporter; do
    port=$(free_port); admin=$(free_port)
    env OPSMESH__BUS__KAFKA__BROKERS="$brokers" OPSMESH__HTTP__LISTEN="127.0.0.1:$port" \
      OPSMESH__HTTP__ADMIN_LISTEN="127.0.0.1:$admin" \
      OPSMESH__RECEIVER__SOURCES__BENCH__SECRETS_ENV=BENCH_SECRET BENCH_SECRET=bench \
      OPSMESH__REPORTER__HEC__FILE="$work/hec.jsonl" OPSMESH__LOG__LEVEL=warn \
      "$target/opsmesh-$svc" >"$work/$svc.log" 2>&1 &
    pid=$!; pids+=($pid)
    wait_http "http://127.0.0.1:$admin/readyz"; sleep 3
    printf '  %-15s %6s MiB\n' "$svc" "$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$pid/status)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
fi

if [[ "$what" == all || "$what" == receiver ]]; then
  if ! command -v prometheus-alertmanager >/dev/null; then
    echo "== installing prometheus-alertmanager (Debian) for the comparison"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq prometheus-alertmanager >/dev/null; else sudo -n apt-get install -y -qq prometheus-alertmanager >/dev/null; fi
  fi
  # The server under test gets core 1 to itself; the load generator and the test broker
  # share core 0. Neither steals the server's CPU, so the rates compare the servers (one
  # core each), not the harness.
  server_cpu=(); load_cpu=(); workers=2
  if [[ "$(nproc)" -ge 2 ]] && command -v taskset >/dev/null; then
    server_cpu=(taskset -c 1); load_cpu=(taskset -c 0); broker_cpu=(taskset -c 0); workers=1
    echo "   server pinned to cpu 1, load generator and tansu to cpu 0; ${WARMUP}s warm-up not counted"
  fi
  start_receiver() { # $1 = bus kind; prints the port
    local port admin; port=$(free_port); admin=$(free_port)
    [[ "$1" == kafka ]] && brokers=$(start_tansu)
    # The load generator is one source sending as fast as it can: no rate limit for it.
    env OPSMESH__BUS__KIND="$1" OPSMESH__BUS__KAFKA__BROKERS="$brokers" OPSMESH__HTTP__LISTEN="127.0.0.1:$port" \
      OPSMESH__HTTP__ADMIN_LISTEN="127.0.0.1:$admin" OPSMESH__RECEIVER__SOURCES__BENCH__RATE_LIMIT_PER_SECOND=0 \
      OPSMESH__HTTP__WORKERS=$workers OPSMESH__RECEIVER__SOURCES__BENCH__SECRETS_ENV=BENCH_SECRET BENCH_SECRET=bench \
      OPSMESH__LOG__LEVEL=warn "${server_cpu[@]}" "$target/opsmesh" run alert-receiver >"$work/receiver-$1.log" 2>&1 &
    echo $! >"$work/server.pid"; track $!; wait_http "http://127.0.0.1:$admin/readyz"; echo "http://127.0.0.1:$port/v1/alerts/splunk"
  }
  start_alertmanager() { # prints the URL
    local port; port=$(free_port)
    "${server_cpu[@]}" prometheus-alertmanager --config.file="$work/am.yml" --web.listen-address="127.0.0.1:$port" \
      --storage.path="$work/am-$port" --cluster.listen-address= >"$work/am.log" 2>&1 &
    echo $! >"$work/server.pid"; track $!; wait_http "http://127.0.0.1:$port/-/ready"; echo "http://127.0.0.1:$port/api/v2/alerts"
  }
  stop() { local pid; pid=$(cat "$1"); kill "$pid" 2>/dev/null || true; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; }
  stop_server() { stop "$work/server.pid"; [[ -f "$work/tansu.pid" ]] && stop "$work/tansu.pid"; rm -f "$work/tansu.pid"; }
  rate_of() { sed -n 's/.* = \([0-9]*\) req\/s.*/\1/p'; }
  p99_of() { sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p'; }
  median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
  range() { tr ' ' '\n' | grep . | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }'; }
  # CPU time the hypervisor gave to other guests (steal), over all cores: a run with high
  # steal measured a slower machine, whichever server it was.
  cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat; }
  drive() { # $1 = url, $2 = kind, then extra opsmesh-bench flags
    local url="$1" kind="$2" before after; shift 2
    before=$(cpu_ticks)
    "${load_cpu[@]}" "$bench" http --kind "$kind" --secret bench --url "$url" --concurrency "$CONCURRENCY" "$@" | tr -d '\n'
    after=$(cpu_ticks)
    echo "$before $after" | awk '{ printf "; cpu steal %.0f%%\n", 100 * ($4 - $2) / ($3 - $1) }'
  }
  am_version=$(prometheus-alertmanager --version 2>&1 | head -1 | awk '{print $3}')
  printf 'route:\n  receiver: none\nreceivers:\n  - name: none\n' >"$work/am.yml"
  exec 3>&1
  # One slice: the server (and, for tansu, the broker) started afresh, driven for the warm-up
  # (not counted, while it fills its bounded state) and the slice, then stopped. Shows its
  # line; prints it again for the caller to read figures from. Extra arguments go to the load
  # generator.
  slice() { # $1 = alertmanager | memory | kafka
    local server="$1" url kind=splunk out; shift
    if [[ "$server" == alertmanager ]]; then url=$(start_alertmanager); kind=alertmanager; else url=$(start_receiver "$server"); fi
    out=$(drive "$url" "$kind" --warmup "$WARMUP" --seconds "$SLICE" "$@"); echo "  $server: $out" >&3
    stop_server
    echo "$out"
  }

  # A shared VM's speed drifts by ±30 % within a minute (steal, and SMT siblings busy with
  # other guests, which no counter shows). So the servers take turns in short slices:
  # Alertmanager, the receiver on the in-memory bus, then on tansu, round after round, and once
  # more Alertmanager at the end. Each receiver slice is compared with the mean of the
  # Alertmanager slices just before and just after it, and the headline ratio is the median of
  # those. Only one server runs at a time, on core 1: an idle server still does background
  # work (Alertmanager's, over every alert it holds), which would be charged to the others.
  echo "== Alertmanager $am_version (POST /api/v2/alerts, one alert per request) and the receiver with signed Splunk alerts (in-memory bus; tansu, every 202 acknowledged by the bus): $ROUNDS rounds of ${SLICE}s slices, each after ${WARMUP}s of warm-up"
  declare -A rates=([alertmanager]="" [memory]="" [kafka]="") ratios=([memory]="" [kafka]="")
  am_before=$(slice alertmanager | rate_of); rates[alertmanager]+=" $am_before"
  for round in $(seq 1 "$ROUNDS"); do
    echo "  -- round $round/$ROUNDS"
    memory=$(slice memory | rate_of); kafka=$(slice kafka | rate_of); am_after=$(slice alertmanager | rate_of)
    rates[memory]+=" $memory"; rates[kafka]+=" $kafka"; rates[alertmanager]+=" $am_after"
    for server in memory kafka; do
      ratios[$server]+=" $(awk -v r="${!server}" -v a="$am_before" -v b="$am_after" 'BEGIN { printf "%.2f", 2 * r / (a + b) }')"
    done
    am_before=$am_after
  done

  echo "== medians of $ROUNDS rounds"
  echo "  alertmanager: $(echo "${rates[alertmanager]}" | median) req/s (range $(echo "${rates[alertmanager]}" | range))"
  for server in memory kafka; do
    rate=$(echo "${rates[$server]}" | median)
    echo "  receiver ($server bus): $rate req/s (range $(echo "${rates[$server]}" | range)); ratio to alertmanager = $(echo "${ratios[$server]}" | median)x (rounds:${ratios[$server]})"
  done
  # One slice's p99 turns on a few milliseconds of steal, so each bus gets several.
  echo "== the receiver at half its median rate ($HALF_SLICES slices per bus)"
  for server in memory kafka; do
    rate=$(echo "${rates[$server]}" | median); p99s=""
    for _ in $(seq 1 "$HALF_SLICES"); do p99s+=" $(slice "$server" --rate $((rate / 2)) | p99_of)"; done
    echo "  receiver ($server bus) at $((rate / 2)) req/s: p99 median $(echo "$p99s" | median) ms (slices:$p99s)"
  done
fi
