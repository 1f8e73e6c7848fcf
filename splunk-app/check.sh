#!/usr/bin/env bash
# splunk-app check: package the Splunk app, run AppInspect (precert with the cloud,
# private_victoria and future tags) and the tests.
#
#   bash splunk-app/check.sh
#
# Idempotent. The first run creates a virtualenv ($OPSMESH_VENV, default
# ~/.cache/opsmesh/venv) and installs splunk-appinspect (and, through apt-get, libmagic
# and python3-venv when they are missing); later runs reuse it and take ~30 s.
# Exits non-zero on any AppInspect failure or error, on a warning that is not in the
# documented list (README.md, "AppInspect"), or on any failing test.
# When OPSMESH_RECEIVER_URL / OPSMESH_RECEIVER_SECRET are set, the interop tests against
# the real alert-receiver run too (tests/test_interop_receiver.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

APPINSPECT_VERSION="${OPSMESH_APPINSPECT_VERSION:-4.3.1}"
VENV="${OPSMESH_VENV:-$HOME/.cache/opsmesh/venv}"
PYTHON="${PYTHON:-python3}"
# Warnings that stay, each explained in README.md. Anything else fails the check.
KNOWN_WARNINGS="check_for_splunk_js check_for_python_script_existence check_for_updates_disabled"

log() { printf '== %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# --- virtualenv with splunk-appinspect -------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || { echo "check.sh: $PYTHON must be Python 3.9 or later" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating virtualenv $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        apt_install python3-venv "python${pyver}-venv" || apt_install python3-venv || true
        "$PYTHON" -m venv "$VENV"
    fi
fi

if ! "$VENV/bin/python" - "$APPINSPECT_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib import metadata
sys.exit(0 if metadata.version("splunk-appinspect") == sys.argv[1] else 1)
PY
then
    log "installing splunk-appinspect==$APPINSPECT_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "splunk-appinspect==$APPINSPECT_VERSION"
fi

# python-magic needs the libmagic shared library
if ! "$VENV/bin/python" -c 'import magic; magic.from_buffer(b"x")' >/dev/null 2>&1; then
    apt_install libmagic1 || { echo "check.sh: libmagic is missing (install libmagic1)" >&2; exit 1; }
fi

status=0

# --- package ------------------------------------------------------------------------
log "packaging"
package="$(PYTHON="$VENV/bin/python" ./package.sh)"
log "built $package"

# --- static checks of the web files ---------------------------------------------------
if command -v node >/dev/null 2>&1; then
    for js in opsmesh_app/appserver/static/*.js; do
        node --check "$js" || { echo "check.sh: JavaScript syntax error in $js" >&2; status=1; }
    done
fi

# deploy/compose/smoke.sh needs Docker to run; here only its syntax (and shellcheck, when
# installed) is checked.
smoke="$here/../deploy/compose/smoke.sh"
bash -n "$smoke" || { echo "check.sh: syntax error in $smoke" >&2; status=1; }
if command -v shellcheck >/dev/null 2>&1; then
    shellcheck "$smoke" || { echo "check.sh: shellcheck findings in $smoke" >&2; status=1; }
fi

# --- AppInspect -----------------------------------------------------------------------
APPINSPECT_TAGS=(--included-tags cloud --included-tags private_victoria --included-tags future)
log "splunk-appinspect inspect $(basename "$package") --mode precert ${APPINSPECT_TAGS[*]}"
report="$here/dist/appinspect-report.json"
rm -f "$report"
set +e
"$VENV/bin/splunk-appinspect" inspect "$package" --mode precert "${APPINSPECT_TAGS[@]}" \
    --data-format json --output-file "$report" >"$here/dist/appinspect-output.txt" 2>&1
ai_rc=$?
set -e
if [ ! -s "$report" ]; then
    cat "$here/dist/appinspect-output.txt" >&2
    echo "check.sh: AppInspect produced no report (exit $ai_rc)" >&2
    exit 1
fi
"$VENV/bin/python" - "$report" "$KNOWN_WARNINGS" <<'PY' || status=1
import json
import sys

report = json.load(open(sys.argv[1]))
known = set(sys.argv[2].split())
summary = report["summary"]
print("AppInspect: %(failure)d failures, %(error)d errors, %(warning)d warnings, "
      "%(future_failure)d future failures, %(skipped)d skipped, %(success)d passed" % summary)
bad = False
for rep in report["reports"]:
    for group in rep["groups"]:
        for check in group["checks"]:
            result = check["result"]
            if result in ("success", "not_applicable"):
                continue
            for msg in check["messages"] or [{"message": ""}]:
                where = msg.get("message_filename") or ""
                where = "" if where == "None" else where
                if msg.get("message_line") not in (None, "None", ""):
                    where += ":%s" % msg["message_line"]
                print("  %s %s %s %s" % (result.upper(), check["name"], where, " ".join(msg["message"].split())[:300]))
            if result in ("failure", "error"):
                bad = True
            elif result == "warning" and check["name"] not in known:
                print("  ^ new warning: fix it, or explain it in README.md and add it to KNOWN_WARNINGS in check.sh")
                bad = True
sys.exit(1 if bad or summary["failure"] or summary["error"] else 0)
PY

# --- tests --------------------------------------------------------------------------
log "tests"
"$VENV/bin/python" tests/run.py || status=1

exit "$status"
