#!/usr/bin/env python3
"""The monitoring component (deploy/k8s/components/monitoring) with promtool.

    validate_monitoring.py --deploy DIR --readme README.md --promtool PATH --work DIR

  * the PrometheusRule's rule groups (its spec, written to a rules file) pass
    `promtool check rules`, and its unit tests (rules.test.yaml) `promtool test rules`;
  * every alert has `for:`, a severity label, summary, description and a runbook_url
    into the README whose anchor is a heading there;
  * every query of the Grafana dashboard is valid PromQL (each becomes a recording rule
    for `promtool check rules`) and uses no Grafana variable promtool cannot parse;
  * the ServiceMonitor scrapes the port every opsmesh Service exposes as `admin`.
The /metrics text of the services is linted by tests/tests/metrics_exposition.rs
(`promtool check metrics` on the whole mesh after an incident), which needs the services
running. Prints one line per check and exits non-zero if any failed.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from validate_k8s import Report

REPO_README = "https://github.com/opsmesh/opsmesh/blob/main/README.md#"
SEVERITIES = {"critical", "warning", "info"}


def promtool(tool: str, *args: str) -> list[str]:
    run = subprocess.run([tool, *args], capture_output=True, text=True)
    if run.returncode == 0:
        return []
    return [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]


def anchors(readme: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in readme.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def alert_problems(groups: list[dict], readme_anchors: set[str]) -> list[str]:
    probs = []
    alerts = [r for g in groups for r in g.get("rules", []) if "alert" in r]
    if not alerts:
        probs.append("no alerting rule")
    for r in alerts:
        name = r["alert"]
        if not r.get("for"):
            probs.append(f"{name}: no `for:` (a single bad scrape would page)")
        if (r.get("labels") or {}).get("severity") not in SEVERITIES:
            probs.append(f"{name}: labels.severity must be one of {sorted(SEVERITIES)}")
        notes = r.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            if not notes.get(key):
                probs.append(f"{name}: no annotations.{key}")
        url = notes.get("runbook_url", "")
        if url and not url.startswith(REPO_README):
            probs.append(f"{name}: runbook_url must point into {REPO_README}…")
        elif url and url[len(REPO_README):] not in readme_anchors:
            probs.append(f"{name}: runbook_url anchor #{url[len(REPO_README):]} is no README heading")
    return probs


def dashboard_rules(dashboard: dict) -> tuple[dict, list[str]]:
    """Every panel query as a recording rule, and the queries promtool cannot check."""
    rules, probs = [], []

    def walk(panels: list[dict]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                if "$" in expr:
                    probs.append(f"panel {p.get('title')!r}: a Grafana variable in {expr!r}")
                    continue
                rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": expr})

    walk(dashboard.get("panels", []))
    if not rules:
        probs.append("the dashboard has no query")
    return {"groups": [{"name": "dashboard", "rules": rules}]}, probs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploy", required=True, type=Path)
    ap.add_argument("--readme", required=True, type=Path)
    ap.add_argument("--promtool", required=True)
    ap.add_argument("--work", required=True, type=Path)
    a = ap.parse_args()
    rep = Report()
    mon = a.deploy / "k8s/components/monitoring"

    rule = yaml.safe_load((mon / "prometheusrule.yaml").read_text())
    rules_file = a.work / "opsmesh-rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    rep.check("promtool check rules: the PrometheusRule's rule groups",
              promtool(a.promtool, "check", "rules", str(rules_file)))
    shutil.copy(mon / "rules.test.yaml", a.work / "rules.test.yaml")
    rep.check("promtool test rules: rules.test.yaml (each alert fires on its synthetic series)",
              promtool(a.promtool, "test", "rules", str(a.work / "rules.test.yaml")))
    rep.check("alerts: for, severity, summary, description, runbook_url into the README",
              alert_problems(rule["spec"]["groups"], anchors(a.readme.read_text())))

    groups, probs = dashboard_rules(json.loads((mon / "opsmesh-dashboard.json").read_text()))
    dash_file = a.work / "dashboard-queries.yaml"
    dash_file.write_text(yaml.safe_dump(groups, sort_keys=False))
    rep.check("Grafana dashboard: every query is valid PromQL (promtool check rules)",
              probs + promtool(a.promtool, "check", "rules", str(dash_file)))

    monitor = yaml.safe_load((mon / "servicemonitor.yaml").read_text())
    services = [s for s in yaml.safe_load_all((a.deploy / "k8s/base/services.yaml").read_text()) if s]
    ports = {e.get("port") for e in monitor["spec"]["endpoints"]}
    selected = set(monitor["spec"]["selector"]["matchExpressions"][0]["values"])
    wanted = set(selected)
    probs = []
    for s in services:
        name = s["metadata"]["labels"]["app.kubernetes.io/name"]
        wanted.discard(name)
        if name not in selected:
            probs.append(f"{s['metadata']['name']} is not selected by the ServiceMonitor")
        admin = [p for p in s["spec"]["ports"] if p.get("name") in ports]
        if not admin or admin[0].get("port") != 9090:
            probs.append(f"{s['metadata']['name']}: no port {sorted(ports)} on 9090 (http.admin_listen)")
    probs += [f"the ServiceMonitor selects {n}, which has no Service" for n in sorted(wanted)]
    rep.check("ServiceMonitor: every Service's admin port (9090) is scraped", probs)
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
