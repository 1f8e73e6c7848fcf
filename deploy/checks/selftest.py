#!/usr/bin/env python3
"""Self-test of the deploy validators: broken inputs must be rejected.

    selftest.py --deploy DIR --render FILE --compose-schema SCHEMA.json

Mutates a rendered overlay and the compose file in known ways and checks that
validate_k8s.py / validate_compose.py fail and name each problem, and that
validate_monitoring.py names alerts without for/severity/runbook. Guards
against a validator (or a schema package update) that silently accepts
everything.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import validate_monitoring

HERE = Path(__file__).resolve().parent


def mutate_k8s(docs: list[dict], deploy: Path) -> tuple[list[dict], list[str]]:
    docs = copy.deepcopy(docs)
    expect = []
    for d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        if kind == "Deployment" and name == "opsmesh-reporter":
            c = d["spec"]["template"]["spec"]["containers"][0]
            c["bogusField"] = 1
            c["readinessProbe"]["httpGet"]["path"] = "/healthz"
            d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
            expect += ["'bogusField' was unexpected", "readiness probe is '/healthz'",
                       "terminationGracePeriodSeconds 10"]
        if kind == "ClusterRole" and name == "opsmesh-remediator":
            d["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]})
            expect.append("grants more than expected: core/pods:delete")
        if kind == "ClusterRole" and name == "opsmesh-collector":
            d["rules"].append({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]})
            expect.append("collector must be read-only")
        if kind == "ScaledObject" and name == "opsmesh-diagnoser":
            d["spec"]["maxReplicaCount"] = 60
            d["spec"]["bogus"] = True
            expect += ["maxReplicaCount > partitions", "('bogus' was unexpected)"]
        if kind == "PrometheusRule":
            d["spec"]["groups"][0]["rules"][0]["severity"] = "warning"
            expect.append("('severity' was unexpected)")
    # The investigator's role reading Secrets and deleting pods, bound cluster-wide and in a
    # namespace, with the investigator off and the diagnoser without its API token.
    role = yaml.safe_load((deploy / "k8s/components/diagnoser-investigator/diagnoser-rbac.yaml").read_text())
    role["rules"] += [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]
    binding = {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "opsmesh-diagnoser"},
               "subjects": [{"kind": "ServiceAccount", "name": "opsmesh-diagnoser", "namespace": "opsmesh"}]}
    docs += [role,
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
              "metadata": {"name": "opsmesh-diagnoser"}, **binding},
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "opsmesh-diagnoser", "namespace": "ml-serving"}, **binding}]
    expect += ["grants more than expected: core/pods:delete, core/secrets:get",
               "the diagnoser must never read Secrets", "the diagnoser must be read-only",
               "the diagnoser must be bound per namespace (RoleBinding), never cluster-wide",
               "the diagnoser is bound but OPSMESH__DIAGNOSER__INVESTIGATOR__ENABLED is not true",
               "OPSMESH__DIAGNOSER__INVESTIGATOR__NAMESPACES [] differs from the diagnoser's RoleBindings ['ml-serving']",
               "Deployment/opsmesh/opsmesh-diagnoser: needs the API token"]
    docs.append({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "inlined", "namespace": "opsmesh"}, "stringData": {"k": "v"}})
    expect.append("a Secret object is rendered")
    docs.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                 "metadata": {"name": "no-endpoints", "namespace": "opsmesh"},
                 "spec": {"selector": {}}})
    expect.append("'endpoints' is a required property")
    docs.append({"apiVersion": "example.com/v1", "kind": "Widget",
                 "metadata": {"name": "w", "namespace": "opsmesh"}})
    expect.append("Couldn't find schema for kind Widget")
    return docs, expect


def mutate_egress(docs: list[dict]) -> tuple[list[dict], list[str]]:
    """A pinned render (prod) with an unpinned rule, an undeclared peer and a peer cut off."""
    docs = copy.deepcopy(docs)
    expect = []
    for d in docs:
        name = d.get("metadata", {}).get("name")
        if d.get("kind") != "NetworkPolicy":
            continue
        if name == "diagnoser-egress":
            d["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 22}]})
            expect += ["ports [22] to any address (name the peer)", "ports [22] to any address, not a peer's port"]
        if name == "collector-egress":
            d["spec"]["egress"].append({"to": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "kube-system"}}}], "ports": [{"protocol": "TCP", "port": 10250}]})
            expect.append("allows namespace kube-system:10250, which is not a declared peer")
        if name == "remediator-egress":
            d["spec"]["egress"] = d["spec"]["egress"][:1]
            expect.append("declared peer argocd (namespace argocd, port 8080) has no egress rule")
    for d in docs:
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"].startswith("opsmesh-diagnoser"):
            # The investigator on without its egress: the API server and the LLM endpoint.
            d["data"]["OPSMESH__DIAGNOSER__INVESTIGATOR__ENABLED"] = "true"
            expect += ["diagnoser: declared peer kubernetes-api (outside the pod network, port 6443) has no egress rule",
                       "diagnoser: declared peer llm (outside the pod network, port 443) has no egress rule"]
    expect.append("no placeholder CIDR left (--release)")
    return docs, expect


def mutate_compose(text: str) -> tuple[str, list[str]]:
    subs = [
        ("  kafka:\n    image:", "  kafka:\n    imagee: x\n    image:", "'imagee' does not match"),
        ("      sim:\n        condition: service_healthy", "      sim:\n        condition: service_started",
         "condition service_started"),
        ("127.0.0.1:8090:8080", "8090:8080", "published on all interfaces"),
        ("RECEIVER_URL: https://receiver-tls:8443/v1/alerts/splunk", "RECEIVER_URL: http://alert-receiver:8080",
         "splunk-init: RECEIVER_URL http://alert-receiver:8080"),
    ]
    expect = []
    for old, new, msg in subs:
        if old not in text:
            raise SystemExit(f"selftest: compose mutation anchor not found: {old!r}")
        text = text.replace(old, new, 1)
        expect.append(msg)
    return text, expect


def run(cmd: list[str]) -> tuple[int, str]:
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploy", required=True, type=Path)
    ap.add_argument("--render", required=True, type=Path)
    ap.add_argument("--compose-schema", required=True, type=Path)
    a = ap.parse_args()
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = [d for d in yaml.safe_load_all(a.render.read_text()) if d]
        bad, expect = mutate_k8s(docs, a.deploy)
        f = tmp / "bad.yaml"
        f.write_text(yaml.safe_dump_all(bad))
        rc, out = run([sys.executable, str(HERE / "validate_k8s.py"), "--deploy", str(a.deploy),
                       "--render", f"mutated={f}"])
        if rc == 0:
            problems.append("validate_k8s.py accepted a broken render")
        problems += [f"validate_k8s.py did not report: {m}" for m in expect if m not in out]

        bad, expect = mutate_egress(docs)
        f = tmp / "bad-egress.yaml"
        f.write_text(yaml.safe_dump_all(bad))
        rc, out = run([sys.executable, str(HERE / "validate_egress.py"), "--render", f"mutated={f}",
                       "--pinned", "mutated", "--release"])
        if rc == 0:
            problems.append("validate_egress.py accepted a broken render")
        problems += [f"validate_egress.py did not report: {m}" for m in expect if m not in out]

        compose = a.deploy / "compose/compose.yaml"
        text, expect = mutate_compose(compose.read_text())
        # same folder, so relative paths (mounts, secrets, up.sh) still resolve
        bad_compose = compose.parent / ".selftest-compose.yaml"
        try:
            bad_compose.write_text(text)
            rc, out = run([sys.executable, str(HERE / "validate_compose.py"), "--compose", str(bad_compose),
                           "--env-file", str(compose.parent / ".env.example"),
                           "--schema", str(a.compose_schema)])
        finally:
            bad_compose.unlink(missing_ok=True)
        if rc == 0:
            problems.append("validate_compose.py accepted a broken compose file")
        problems += [f"validate_compose.py did not report: {m}" for m in expect if m not in out]

    # Alerts that would page without a runbook or on a single scrape.
    alerts = [{"name": "g", "rules": [
        {"alert": "NoFor", "expr": "up == 0", "labels": {"severity": "warning"},
         "annotations": {"summary": "s", "description": "d", "runbook_url": validate_monitoring.REPO_README + "nofor"}},
        {"alert": "Elsewhere", "expr": "up == 0", "for": "5m", "labels": {"severity": "page"},
         "annotations": {"summary": "s", "runbook_url": "https://example.com/runbook"}}]}]
    found = validate_monitoring.alert_problems(alerts, {"nofor"})
    problems += [f"validate_monitoring.py did not report: {m}" for m in
                 ["NoFor: no `for:`", "Elsewhere: labels.severity", "Elsewhere: no annotations.description",
                  "Elsewhere: runbook_url must point into"] if not any(p.startswith(m) for p in found)]

    if problems:
        print("FAIL validators reject broken manifests and compose files")
        for p in problems:
            print(f"       - {p}")
        return 1
    print("ok   validators reject broken manifests and compose files (self-test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
