#!/usr/bin/env python3
"""Kafka authentication and per-service ACLs in the rendered manifests.

    validate_kafka_acls.py --expected deploy/k8s/kafka-acls.expected.json \
        --render NAME=FILE [--render ...]

For every render that contains KafkaUsers (the kafka-auth component):
  * the KafkaUsers' ACLs equal kafka-acls.expected.json exactly (which
    tests/tests/kafka_acls.rs derives from proto's topic table and each
    service's declared publishes and subscriptions);
  * every principal authenticates with SCRAM-SHA-512;
  * each service's Deployment (and the topics Job) mounts the Secret of its
    own KafkaUser and no other, connects with sasl_ssl as that user, verifies
    the brokers against the mounted CA, and does not create topics.
A render without KafkaUsers must not configure Kafka authentication half-way.
Prints one line per check and exits non-zero if any failed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from validate_k8s import Report

PRINCIPAL_OF = {"alert-receiver": "opsmesh-alert-receiver", "collector": "opsmesh-collector",
                "diagnoser": "opsmesh-diagnoser", "remediator": "opsmesh-remediator",
                "reporter": "opsmesh-reporter", "topics": "opsmesh-admin"}
ENV = "OPSMESH__BUS__KAFKA__SECURITY__"


def acl_rows(users: list[dict]) -> list[str]:
    rows = []
    for u in users:
        for a in u["spec"]["authorization"]["acls"]:
            r = a["resource"]
            rows.append(json.dumps({"principal": u["metadata"]["name"], "type": r["type"], "name": r["name"],
                                    "patternType": r["patternType"], "operations": sorted(a["operations"])},
                                   sort_keys=True))
    return sorted(rows)


def env_of(pod: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    """The container's environment from its envFrom ConfigMaps, later ones winning."""
    env: dict[str, str] = {}
    for source in pod["containers"][0].get("envFrom", []) or []:
        name = (source.get("configMapRef") or {}).get("name")
        env.update(configmaps.get(name, {}))
    return env


def check_render(name: str, objs: list[dict], expected: list[str]) -> list[tuple[str, list[str]]]:
    users = [o for o in objs if o.get("kind") == "KafkaUser"]
    configmaps = {o["metadata"]["name"]: o.get("data") or {} for o in objs if o.get("kind") == "ConfigMap"}
    workloads = [o for o in objs if o.get("kind") in ("Deployment", "Job")
                 and (o["metadata"].get("labels") or {}).get("app.kubernetes.io/name") in PRINCIPAL_OF]
    results = []
    if not users:
        probs = []
        for w in workloads:
            env = env_of(w["spec"]["template"]["spec"], configmaps)
            if any(k.startswith(ENV) for k in env):
                probs.append(f"{w['metadata']['name']}: Kafka security settings without the kafka-auth component's KafkaUsers")
        results.append((f"{name}: no KafkaUsers, and no half-configured Kafka authentication", probs))
        return results

    actual = acl_rows(users)
    probs = [f"not expected: {r}" for r in actual if r not in expected]
    probs += [f"missing: {r}" for r in expected if r not in actual]
    results.append((f"{name}: KafkaUser ACLs equal k8s/kafka-acls.expected.json ({len(actual)} ACLs)", probs))

    probs = [f"{u['metadata']['name']}: authentication {u['spec']['authentication']['type']}"
             for u in users if u["spec"]["authentication"]["type"] != "scram-sha-512"]
    results.append((f"{name}: every Kafka principal uses SCRAM-SHA-512", probs))

    probs = []
    names = {u["metadata"]["name"] for u in users}
    for w in workloads:
        svc = w["metadata"]["labels"]["app.kubernetes.io/name"]
        principal = PRINCIPAL_OF[svc]
        pod = w["spec"]["template"]["spec"]
        ident = f"{w['kind']}/{w['metadata']['name']}"
        if principal not in names:
            probs.append(f"{ident}: no KafkaUser {principal}")
        env = env_of(pod, configmaps)
        want = {ENV + "PROTOCOL": "sasl_ssl", ENV + "SASL__MECHANISM": "SCRAM-SHA-512",
                ENV + "SASL__USERNAME": principal}
        for k, v in want.items():
            if env.get(k) != v:
                probs.append(f"{ident}: {k}={env.get(k)!r}, want {v!r}")
        if env.get("OPSMESH__BUS__CREATE_TOPICS") != "false":
            probs.append(f"{ident}: OPSMESH__BUS__CREATE_TOPICS must be false (no service holds a Create ACL)")
        if env.get(ENV + "TLS__ENDPOINT_IDENTIFICATION", "true") != "true":
            probs.append(f"{ident}: broker host name verification turned off")
        kafka_secrets = {v["secret"]["secretName"] for v in pod.get("volumes", []) or []
                         if "secret" in v and v["secret"]["secretName"] in names}
        if kafka_secrets != {principal}:
            probs.append(f"{ident}: mounts Kafka user Secrets {sorted(kafka_secrets)}, want only {principal}")
        mounts = {m["mountPath"] for m in pod["containers"][0].get("volumeMounts", []) or []}
        for key in ("SASL__PASSWORD_FILE", "TLS__CA_FILE"):
            path = env.get(ENV + key, "")
            if not any(path.startswith(m.rstrip("/") + "/") for m in mounts):
                probs.append(f"{ident}: {ENV + key}={path!r} is not under a mounted volume")
    results.append((f"{name}: each workload connects as its own Kafka principal (sasl_ssl, own Secret, CA mounted, no topic creation)", probs))
    return results


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--expected", required=True, type=Path)
    ap.add_argument("--render", action="append", required=True, help="NAME=FILE")
    a = ap.parse_args()
    expected = sorted(json.dumps(r, sort_keys=True) for r in json.loads(a.expected.read_text()))
    rep = Report()
    for spec in a.render:
        name, _, path = spec.partition("=")
        with open(path) as f:
            objs = [d for d in yaml.safe_load_all(f) if d]
        for check, probs in check_render(name, objs, expected):
            rep.check(check, probs)
    print(f"kafka acls: {rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
