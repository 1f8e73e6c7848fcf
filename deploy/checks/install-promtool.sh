#!/usr/bin/env bash
# deploy/checks/install-promtool.sh CACHE - prints the path of promtool,
# installing it first into CACHE/tools/bin when missing: the promtool of
# Debian's `prometheus` package (apt-get download and unpack; needs no root and
# installs nothing else of the package). OPSMESH_PROMTOOL names another
# promtool instead. Used by scripts/test.sh and deploy/check.sh; the metrics
# test (tests/tests/metrics_exposition.rs) looks in ~/.cache/opsmesh/tools/bin.
set -euo pipefail

if [ -n "${OPSMESH_PROMTOOL:-}" ]; then
    printf '%s\n' "$OPSMESH_PROMTOOL"
    exit 0
fi
BIN="${1:?usage: install-promtool.sh CACHE}/tools/bin"

download() {
    # Refresh the package lists once if the first try fails.
    apt-get download prometheus >apt.log 2>&1 && return 0
    apt-get update -q >>apt.log 2>&1
    apt-get download prometheus >>apt.log 2>&1
}

if [ ! -x "$BIN/promtool" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && download); then
        cat "$work/apt.log" >&2
        echo "cannot download Debian's prometheus package (for promtool)" >&2
        exit 1
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/unpacked"
    mkdir -p "$BIN"
    install -m 0755 "$work/unpacked/usr/bin/promtool" "$BIN/promtool"
fi
"$BIN/promtool" --version >/dev/null
printf '%s\n' "$BIN/promtool"
