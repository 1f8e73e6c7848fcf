#!/usr/bin/env python3
"""Offline checks of the rendered opsmesh Kubernetes manifests.

    validate_k8s.py --deploy DIR --render NAME=FILE [--render ...] \
        [--k8s-versions 1.30,1.34] [--dump-objects OUT.json]

For every rendered kustomization (base and overlays):
  * schema: every object against the Kubernetes OpenAPI-derived JSON schemas
    shipped in the PyPI package kubernetes-validate (strict: unknown fields
    are errors), for each Kubernetes version asked; KEDA ScaledObjects
    against deploy/k8s/schemas/scaledobject-keda.sh-v1alpha1.json (strict),
    KafkaUsers, ServiceMonitors and PrometheusRules against their schema
    there (strict);
    any other kind is an error (no silent skip);
  * policy: the opsmesh deployment rules (probes, resources, drain, security
    context, secrets never inlined, autoscaling, PDBs, NetworkPolicies,
    least-privilege RBAC, topic Job) - see the check names below.
Also: deploy/k8s/base/remediator-rbac.yaml and every rendered remediator role
equal deploy/k8s/remediator-rbac.expected.json; the collector's role equals
deploy/k8s/collector-rbac.expected.json; the diagnoser's (components/
diagnoser-investigator) deploy/k8s/diagnoser-rbac.expected.json.

Prints one line per check and exits non-zero if any failed.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

SERVICES = ["alert-receiver", "collector", "diagnoser", "remediator", "reporter"]
CONSUMERS = ["diagnoser", "remediator", "reporter"]
API_CLIENTS = {"collector", "remediator"}  # the only pods with an API token...
INVESTIGATOR_ROLE = "opsmesh-diagnoser"  # ...and the diagnoser where this role is bound
READ_VERBS = {"get", "list", "watch"}
SECRETISH = re.compile(r"(TOKEN|SECRET|SECRETS|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIALS?)$")
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PriorityClass", "StorageClass", "IngressClass", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration", "PersistentVolume",
}
# Top-level configuration sections the runtime accepts (services/runtime/src/config.rs:
# shared + SERVICE_SECTIONS); the service reading each section.
SHARED_SECTIONS = {"cluster", "http", "log", "shutdown", "bus"}
SECTION_OWNER = {"receiver": "alert-receiver", "collector": "collector", "diagnoser": "diagnoser",
                 "remediator": "remediator", "reporter": "reporter"}
# Shared-section settings whose value differs per service by design.
PER_SERVICE_SHARED = {"OPSMESH__BUS__KAFKA__SECURITY__SASL__USERNAME"}
CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
               ("kafka.strimzi.io/v1beta2", "KafkaUser"): "kafkauser-kafka.strimzi.io-v1beta2.json",
               ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
               ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json"}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems[:40]:
                print(f"       - {p}")
            if len(problems) > 40:
                print(f"       ... and {len(problems) - 40} more")
        else:
            self.passed += 1
            print(f"ok   {name}")


def ident(o: dict) -> str:
    md = o.get("metadata") or {}
    ns = md.get("namespace")
    return f"{o.get('kind')}/{ns + '/' if ns else ''}{md.get('name')}"


def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def parse_duration(s: str) -> float:
    """humantime-style '20s', '1m30s', '500ms' -> seconds."""
    total, pos = 0.0, 0
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)", s):
        if m.start() != pos:
            raise ValueError(s)
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"not a duration: {s!r}")
    return total


def normalize_rules(rules: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v))
    return out


def expected_rules(path: Path, scope: str | None = None) -> set[tuple[str, str, str]]:
    """The rules of an *-rbac.expected.json; with `scope`, only its entries of that scope
    (`cluster` or `namespaced`)."""
    out = set()
    for e in json.loads(path.read_text()):
        if scope is not None and e.get("scope") != scope:
            continue
        for v in e["verbs"]:
            out.add((e["apiGroup"], e["resource"], v))
    return out


def remediator_owned_names(cluster_rs: Path) -> dict[str, str]:
    """The one object of each kind the remediator applies, from its code."""
    text = cluster_rs.read_text()
    names = {}
    for resource, const in (("resourcequotas", "QUOTA_NAME"), ("limitranges", "LIMIT_RANGE_NAME")):
        m = re.search(rf'pub const {const}: &str = "([^"]+)";', text)
        names[resource] = m.group(1) if m else f"<{const} not found in {cluster_rs}>"
    return names


def resource_name_problems(rules: list[dict], owned: dict[str, str]) -> list[str]:
    """get/patch on quotas and limit ranges only on the object the remediator owns."""
    probs = []
    for rule in rules:
        for res in rule.get("resources", []):
            if res not in owned:
                continue
            for verb in set(rule.get("verbs", [])) - {"create"}:
                if rule.get("resourceNames") != [owned[res]]:
                    probs.append(f"{res}:{verb} must carry resourceNames: [{owned[res]}], has {rule.get('resourceNames')}")
    return probs


def fmt_rules(s: set[tuple[str, str, str]]) -> str:
    return ", ".join(f"{g or 'core'}/{r}:{v}" for g, r, v in sorted(s))


def rbac_diff(actual: set, expected: set) -> list[str]:
    probs = []
    if actual - expected:
        probs.append("grants more than expected: " + fmt_rules(actual - expected))
    if expected - actual:
        probs.append("grants less than expected: " + fmt_rules(expected - actual))
    return probs


def collector_binding_problems(objs: list[dict], roles: list[dict], cms: dict, deploy: Path) -> list[str]:
    """The collector is bound either cluster-wide (ClusterRoleBinding; every read of
    collector-rbac.expected.json) or per namespace (components/collector-namespaced: RoleBindings
    only, the namespaced reads only, `collector.scope = namespaces` and
    `collector.namespaces` equal to the RoleBindings' namespaces)."""
    expected = deploy / "k8s/collector-rbac.expected.json"
    crbs = [b for b in by_kind(objs, "ClusterRoleBinding") if b["roleRef"]["name"] == "opsmesh-collector"]
    rbs = [b for b in by_kind(objs, "RoleBinding") if b["roleRef"]["name"] == "opsmesh-collector"]
    config = next((c.get("data") or {} for n, c in cms.items() if n.startswith("opsmesh-collector")), {})
    scope = config.get("OPSMESH__COLLECTOR__SCOPE", "cluster")
    namespaces = {n.strip() for n in config.get("OPSMESH__COLLECTOR__NAMESPACES", "").split(",") if n.strip()}
    probs = []
    if crbs and rbs:
        probs.append("the collector is bound both cluster-wide and per namespace")
    if not crbs and not rbs:
        probs.append("nothing binds the collector's role")
    want = expected_rules(expected) if crbs else expected_rules(expected, "namespaced")
    for r in roles:
        got = normalize_rules(r.get("rules", []))
        probs += [f"{ident(r)}: {p}" for p in rbac_diff(got, want)]
        if {v for _, _, v in got} - READ_VERBS:
            probs.append(f"{ident(r)}: collector must be read-only")
    if crbs and scope != "cluster":
        probs.append(f"bound cluster-wide but OPSMESH__COLLECTOR__SCOPE={scope}")
    if rbs:
        if scope != "namespaces":
            probs.append("bound per namespace: OPSMESH__COLLECTOR__SCOPE must be namespaces "
                         "(else its cluster-scoped reads fail every interval)")
        bound = {b["metadata"]["namespace"] for b in rbs}
        if namespaces != bound:
            probs.append(f"OPSMESH__COLLECTOR__NAMESPACES {sorted(namespaces)} differs from the "
                         f"collector's RoleBindings {sorted(bound)}")
    return probs


def diagnoser_binding_problems(objs: list[dict], roles: list[dict], cms: dict, deploy: Path) -> list[str]:
    """The investigator's role (components/diagnoser-investigator): exactly
    diagnoser-rbac.expected.json, read-only, never Secrets, granted only by RoleBindings whose
    namespaces equal OPSMESH__DIAGNOSER__INVESTIGATOR__NAMESPACES, with the investigator on."""
    crbs = [b for b in by_kind(objs, "ClusterRoleBinding") if b["roleRef"]["name"] == INVESTIGATOR_ROLE]
    rbs = [b for b in by_kind(objs, "RoleBinding") if b["roleRef"]["name"] == INVESTIGATOR_ROLE]
    config = next((c.get("data") or {} for n, c in cms.items() if n.startswith("opsmesh-diagnoser")), {})
    enabled = config.get("OPSMESH__DIAGNOSER__INVESTIGATOR__ENABLED", "false").lower() == "true"
    namespaces = {n.strip() for n in config.get("OPSMESH__DIAGNOSER__INVESTIGATOR__NAMESPACES", "").split(",")
                  if n.strip()}
    probs = []
    want = expected_rules(deploy / "k8s/diagnoser-rbac.expected.json")
    for r in roles:
        got = normalize_rules(r.get("rules", []))
        probs += [f"{ident(r)}: {p}" for p in rbac_diff(got, want)]
        if {v for _, _, v in got} - READ_VERBS:
            probs.append(f"{ident(r)}: the diagnoser must be read-only")
        if any(res == "secrets" for _, res, _ in got):
            probs.append(f"{ident(r)}: the diagnoser must never read Secrets")
    probs += [f"{ident(b)}: the diagnoser must be bound per namespace (RoleBinding), never cluster-wide"
              for b in crbs]
    if roles and not rbs:
        probs.append("nothing binds the diagnoser's role (a RoleBinding per investigated namespace)")
    if rbs and not roles:
        probs.append(f"RoleBindings to {INVESTIGATOR_ROLE} but no such role is rendered")
    if rbs:
        if not enabled:
            probs.append("the diagnoser is bound but OPSMESH__DIAGNOSER__INVESTIGATOR__ENABLED is not true")
        bound = {b["metadata"]["namespace"] for b in rbs}
        if namespaces != bound:
            probs.append(f"OPSMESH__DIAGNOSER__INVESTIGATOR__NAMESPACES {sorted(namespaces)} differs from the "
                         f"diagnoser's RoleBindings {sorted(bound)} (an unbound namespace answers 403)")
    elif enabled:
        probs.append("OPSMESH__DIAGNOSER__INVESTIGATOR__ENABLED=true but no RoleBinding grants the diagnoser "
                     "its reads (components/diagnoser-investigator): every Kubernetes tool answers 403")
    return probs


def api_clients(objs: list[dict]) -> set[str]:
    """The services that talk to the API server in this render."""
    investigating = any(b["roleRef"]["name"] == INVESTIGATOR_ROLE for b in by_kind(objs, "RoleBinding"))
    return API_CLIENTS | ({"diagnoser"} if investigating else set())


# ---------------------------------------------------------------- schema ----

def schema_problems(objs: list[dict], versions: list[str], crd_dir: Path) -> list[str]:
    probs = []
    crd_validators = {}
    for key, fname in CRD_SCHEMAS.items():
        schema = json.loads((crd_dir / fname).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        crd_validators[key] = jsonschema.Draft202012Validator(schema)
    for o in objs:
        key = (o.get("apiVersion"), o.get("kind"))
        if key in crd_validators:
            for e in sorted(crd_validators[key].iter_errors(o), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in e.path)
                probs.append(f"{ident(o)}: {path}: {e.message}")
            continue
        for v in versions:
            try:
                kubernetes_validate.validate(o, v, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                probs.append(f"{ident(o)} (k8s {v}): {path}: {e.message}")
            except SchemaNotFoundError as e:
                probs.append(f"{ident(o)}: no schema: {e.message}")
    return probs


# ---------------------------------------------------------------- policy ----

def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def selects(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels only) that is non-empty and matches labels."""
    ml = (selector or {}).get("matchLabels") or {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def svc_of(dep: dict) -> str:
    return dep["metadata"]["name"].removeprefix("opsmesh-")


def policy(objs: list[dict], name: str, rep: Report, deploy: Path, overlay: bool) -> None:
    deps = {svc_of(d): d for d in by_kind(objs, "Deployment")
            if (d["spec"]["template"]["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == "opsmesh"}
    # Service configuration; Grafana dashboards (components/monitoring) are for Grafana.
    cms = {c["metadata"]["name"]: c for c in by_kind(objs, "ConfigMap")
           if "grafana_dashboard" not in (c["metadata"].get("labels") or {})}
    common = next((c for n, c in cms.items() if n.startswith("opsmesh-common")), None)

    # namespaces explicit everywhere (the base sets no kustomize namespace)
    rep.check(f"{name}: every namespaced object names its namespace",
              [ident(o) for o in objs if o["kind"] not in CLUSTER_SCOPED and not o["metadata"].get("namespace")])

    rep.check(f"{name}: a Deployment for each of the five services",
              [f"missing opsmesh-{s}" for s in SERVICES if s not in deps])

    # ---- config
    probs = []
    if common is None:
        probs.append("no opsmesh-common ConfigMap")
        grace = 20.0
        partitions = 6
    else:
        data = common.get("data", {})
        for k in ["OPSMESH__BUS__KIND", "OPSMESH__BUS__KAFKA__BROKERS", "OPSMESH__SHUTDOWN__GRACE",
                  "OPSMESH__HTTP__LISTEN", "OPSMESH__LOG__FORMAT", "OPSMESH__CLUSTER"]:
            if k not in data:
                probs.append(f"opsmesh-common lacks {k}")
        try:
            grace = parse_duration(data.get("OPSMESH__SHUTDOWN__GRACE", "20s"))
        except ValueError as e:
            probs.append(str(e))
            grace = 20.0
        partitions = int(data.get("OPSMESH__BUS__KAFKA__PARTITIONS", "6"))
        if data.get("OPSMESH__LOG__FORMAT") not in ("human", "json"):
            probs.append("OPSMESH__LOG__FORMAT must be human or json")
        if data.get("OPSMESH__BUS__KIND") != "kafka":
            probs.append("deployed services must use the kafka bus")
    for c in cms.values():
        for k, v in (c.get("data") or {}).items():
            if k.startswith("OPSMESH__") and SECRETISH.search(k):
                probs.append(f"{ident(c)}: {k} looks like an inlined secret (use a *_FILE key and a Secret volume)")
            if k.endswith("_FILE") and not str(v).startswith("/var/run/secrets/opsmesh/"):
                probs.append(f"{ident(c)}: {k}={v} should point into a mounted Secret under /var/run/secrets/opsmesh/")
    for c in cms.values():
        cname = c["metadata"]["name"]
        for k in (c.get("data") or {}):
            parts = k.split("__")
            if parts[0] != "OPSMESH" or len(parts) < 2 or any(not p for p in parts) or k != k.upper():
                probs.append(f"{ident(c)}: {k} is not an OPSMESH__SECTION__KEY name")
                continue
            section = parts[1].lower()
            if section in SHARED_SECTIONS:
                # Each service is its own Kafka principal (components/kafka-auth).
                if not cname.startswith("opsmesh-common") and k not in PER_SERVICE_SHARED:
                    probs.append(f"{ident(c)}: shared setting {k} belongs in opsmesh-common")
            elif section in SECTION_OWNER:
                if not cname.startswith(f"opsmesh-{SECTION_OWNER[section]}-") and cname != f"opsmesh-{SECTION_OWNER[section]}":
                    probs.append(f"{ident(c)}: {k} is read by {SECTION_OWNER[section]} only")
            else:
                probs.append(f"{ident(c)}: {k}: unknown section {section!r} (the services reject unknown keys)")
    rep.check(f"{name}: configuration in ConfigMaps, no secret values in them", probs)

    # ---- secrets never inlined
    probs = [f"{ident(o)}: a Secret object is rendered; Secrets are created out of band and only referenced"
             for o in by_kind(objs, "Secret")]
    for o in objs:
        spec = (o.get("spec") or {})
        tmpl = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get("template")
        if not tmpl:
            continue
        for c in tmpl["spec"].get("containers", []) + tmpl["spec"].get("initContainers", []):
            for e in c.get("env", []) or []:
                if "value" in e and SECRETISH.search(e["name"]) and not e["name"].endswith("_FILE"):
                    probs.append(f"{ident(o)}/{c['name']}: env {e['name']} has a literal value")
    rep.check(f"{name}: Secrets referenced, never inlined", probs)

    # ---- per-Deployment rules
    sas = {s["metadata"]["name"] for s in by_kind(objs, "ServiceAccount")}
    clients = api_clients(objs)
    probs = []
    for svc, d in deps.items():
        where = ident(d)
        pod = d["spec"]["template"]["spec"]
        sc = pod.get("securityContext") or {}
        if not sc.get("runAsNonRoot"):
            probs.append(f"{where}: pod securityContext.runAsNonRoot is not true")
        if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            probs.append(f"{where}: seccompProfile RuntimeDefault missing")
        sa = pod.get("serviceAccountName")
        if sa != f"opsmesh-{svc}" or sa not in sas:
            probs.append(f"{where}: serviceAccountName {sa!r} (want its own opsmesh-{svc}, rendered)")
        automount = pod.get("automountServiceAccountToken")
        if svc in clients and automount is not True:
            probs.append(f"{where}: needs the API token (automountServiceAccountToken: true)")
        if svc not in clients and automount is not False:
            probs.append(f"{where}: must not mount an API token (automountServiceAccountToken: false)")
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod.get("containers", []):
            cw = f"{where}/{c['name']}"
            img = c.get("image", "")
            if ":" not in img.rsplit("/", 1)[-1] and "@" not in img or img.endswith(":latest"):
                probs.append(f"{cw}: image {img!r} is not pinned to a tag or digest")
            res = c.get("resources") or {}
            for k in ("cpu", "memory"):
                if k not in (res.get("requests") or {}):
                    probs.append(f"{cw}: no {k} request")
            if "memory" not in (res.get("limits") or {}):
                probs.append(f"{cw}: no memory limit")
            lp = ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
            rp = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
            if lp != "/healthz":
                probs.append(f"{cw}: liveness probe is {lp!r}, want GET /healthz")
            if rp != "/readyz":
                probs.append(f"{cw}: readiness probe is {rp!r}, want GET /readyz")
            probe_ports = {((c.get(p) or {}).get("httpGet") or {}).get("port")
                           for p in ("startupProbe", "livenessProbe", "readinessProbe") if c.get(p)}
            if probe_ports - {"admin", 9090}:
                probs.append(f"{cw}: probes on {sorted(map(str, probe_ports))}, want the admin port (9090)")
            ports = {p.get("containerPort") for p in c.get("ports", [])}
            if not {8080, 9090} <= ports:
                probs.append(f"{cw}: does not expose 8080 (service) and 9090 (admin)")
            args = c.get("args") or []
            if args[:2] != ["run", svc]:
                probs.append(f"{cw}: args {args} (want [run, {svc}])")
            pre = ((c.get("lifecycle") or {}).get("preStop") or {})
            pre_s = 0.0
            if "exec" in pre:
                cmd = pre["exec"].get("command", [])
                if len(cmd) == 2 and cmd[0] == "sleep":
                    pre_s = float(cmd[1])
            elif "sleep" in pre:
                pre_s = float(pre["sleep"].get("seconds", 0))
            else:
                probs.append(f"{cw}: no preStop hook")
            if not tgps > pre_s + grace:
                probs.append(f"{cw}: terminationGracePeriodSeconds {tgps} <= preStop {pre_s}s + drain grace {grace}s")
            csc = c.get("securityContext") or {}
            if csc.get("allowPrivilegeEscalation") is not False:
                probs.append(f"{cw}: allowPrivilegeEscalation is not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                probs.append(f"{cw}: readOnlyRootFilesystem is not true")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                probs.append(f"{cw}: capabilities not dropped")
            for ef in c.get("envFrom", []):
                ref = (ef.get("configMapRef") or {}).get("name")
                if ref and ref not in cms:
                    probs.append(f"{cw}: envFrom ConfigMap {ref} is not rendered")
    rep.check(f"{name}: Deployments: probes /healthz /readyz, resources, drain > grace, non-root, own ServiceAccount", probs)

    # ---- Services, PDBs
    probs = []
    for svc, d in deps.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not any(selects({"matchLabels": s["spec"].get("selector", {})}, labels) for s in by_kind(objs, "Service")):
            probs.append(f"{ident(d)}: no Service selects it")
        pdbs = [p for p in by_kind(objs, "PodDisruptionBudget") if selects(p["spec"].get("selector"), labels)]
        if len(pdbs) != 1:
            probs.append(f"{ident(d)}: {len(pdbs)} PodDisruptionBudgets select it (want 1)")
    for s in by_kind(objs, "Service"):
        sel = s["spec"].get("selector") or {}
        pods = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")
                and all((o["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())]
        if not pods:
            probs.append(f"{ident(s)}: selects no pods")
    rep.check(f"{name}: a Service and a PodDisruptionBudget per service", probs)

    # ---- autoscaling
    probs = []
    hpas = by_kind(objs, "HorizontalPodAutoscaler")
    sos = by_kind(objs, "ScaledObject")
    targets: dict[str, list[str]] = {}
    for h in hpas:
        targets.setdefault(h["spec"]["scaleTargetRef"]["name"], []).append(ident(h))
        if h["spec"]["scaleTargetRef"]["name"].removeprefix("opsmesh-") in CONSUMERS and \
                h["spec"]["maxReplicas"] > partitions:
            probs.append(f"{ident(h)}: maxReplicas {h['spec']['maxReplicas']} > partitions {partitions}")
    for so in sos:
        targets.setdefault(so["spec"]["scaleTargetRef"]["name"], []).append(ident(so))
        if so["spec"].get("maxReplicaCount", 100) > partitions:
            probs.append(f"{ident(so)}: maxReplicaCount > partitions {partitions}")
        for t in so["spec"]["triggers"]:
            if t["type"] == "kafka":
                group = t["metadata"].get("consumerGroup")
                want = so["spec"]["scaleTargetRef"]["name"]
                # A service's groups all start with its name (opsmesh-diagnoser-investigator).
                if group != want and not (group or "").startswith(f"{want}-"):
                    probs.append(f"{ident(so)}: consumerGroup {group} is not {want}(-…)")
    for tgt, who in targets.items():
        if tgt not in {d["metadata"]["name"] for d in deps.values()}:
            probs.append(f"{', '.join(who)}: target {tgt} is not a rendered Deployment")
        if len(who) > 1:
            probs.append(f"{tgt} has more than one autoscaler: {', '.join(who)}")
    rh = [h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == "opsmesh-alert-receiver"]
    if not rh or not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in rh[0]["spec"].get("metrics", [])):
        probs.append("alert-receiver has no CPU HorizontalPodAutoscaler")
    if overlay:
        for c in CONSUMERS:
            if f"opsmesh-{c}" not in targets:
                probs.append(f"consumer {c} has no autoscaler (KEDA ScaledObject or HPA)")
    for svc, d in deps.items():
        if f"opsmesh-{svc}" in targets and "replicas" in d["spec"]:
            probs.append(f"{ident(d)}: sets spec.replicas although autoscaled (apply would fight the autoscaler)")
    rep.check(f"{name}: autoscaling (receiver CPU HPA; consumers on lag or CPU; <= partitions)", probs)

    # ---- NetworkPolicies
    probs = []
    nps = by_kind(objs, "NetworkPolicy")
    if not any(n["spec"].get("podSelector") == {} and set(n["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not n["spec"].get("ingress") and not n["spec"].get("egress") for n in nps):
        probs.append("no default-deny (ingress and egress) NetworkPolicy")
    for svc, d in deps.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        eg = [n for n in nps if (n["spec"].get("podSelector") == {} or selects(n["spec"]["podSelector"], labels))
              and n["spec"].get("egress")]
        if not eg:
            probs.append(f"{ident(d)}: no egress allowed at all")
        if svc in ("alert-receiver", "reporter"):
            ing = [n for n in nps if selects(n["spec"].get("podSelector"), labels) and n["spec"].get("ingress")]
            if not ing:
                probs.append(f"{ident(d)}: serves traffic but no NetworkPolicy admits it")
    rep.check(f"{name}: NetworkPolicies (default deny + explicit flows)", probs)

    # ---- the public door: an Ingress to the alert-receiver routes only the alert endpoints
    probs = []
    for ing in by_kind(objs, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                backend = ((path.get("backend") or {}).get("service") or {})
                if backend.get("name") == "opsmesh-alert-receiver" and path.get("path") != "/v1/alerts":
                    probs.append(f"{ident(ing)}: routes {path.get('path')!r} to the alert-receiver; want only /v1/alerts")
                if (backend.get("port") or {}).get("name") == "admin" or (backend.get("port") or {}).get("number") == 9090:
                    probs.append(f"{ident(ing)}: routes to the admin port (health, metrics)")
    rep.check(f"{name}: Ingress exposes only /v1/alerts of the alert-receiver, never the admin port", probs)

    # ---- RBAC
    probs = []
    roles = by_kind(objs, "ClusterRole") + by_kind(objs, "Role")
    for r in roles:
        for rule in r.get("rules", []):
            for f in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(f, []):
                    probs.append(f"{ident(r)}: wildcard in {f}")
    names = {r["metadata"]["name"] for r in roles}
    if not {"opsmesh-collector", "opsmesh-remediator"} <= names <= {"opsmesh-collector", "opsmesh-remediator",
                                                                   INVESTIGATOR_ROLE}:
        probs.append(f"unexpected roles: {sorted(names)} (want opsmesh-collector, opsmesh-remediator, "
                     f"and {INVESTIGATOR_ROLE} with components/diagnoser-investigator)")
    rem = [r for r in roles if r["metadata"]["name"] == "opsmesh-remediator"]
    col = [r for r in roles if r["metadata"]["name"] == "opsmesh-collector"]
    dia = [r for r in roles if r["metadata"]["name"] == INVESTIGATOR_ROLE]
    exp_rem = expected_rules(deploy / "k8s/remediator-rbac.expected.json")
    owned = remediator_owned_names(deploy.parent / "services/remediator/src/cluster.rs")
    for r in rem:
        probs += [f"{ident(r)}: {p}" for p in rbac_diff(normalize_rules(r.get("rules", [])), exp_rem)]
        probs += [f"{ident(r)}: {p}" for p in resource_name_problems(r.get("rules", []), owned)]
    probs += collector_binding_problems(objs, col, cms, deploy)
    probs += diagnoser_binding_problems(objs, dia, cms, deploy)
    crbs = by_kind(objs, "ClusterRoleBinding")
    rbs = by_kind(objs, "RoleBinding")
    for b in crbs:
        if b["roleRef"]["name"] == "opsmesh-remediator":
            probs.append(f"{ident(b)}: the remediator must be bound per namespace (RoleBinding), never cluster-wide")
    rem_rbs = [b for b in rbs if b["roleRef"]["name"] == "opsmesh-remediator"]
    if overlay and not rem_rbs:
        probs.append("no RoleBinding grants the remediator any namespace")
    for b in rem_rbs:
        if b["metadata"]["namespace"] in ("kube-system", "kube-public", "opsmesh"):
            probs.append(f"{ident(b)}: the remediator must not act on {b['metadata']['namespace']}")
    for b in crbs + rbs:
        sub = {(s.get("kind"), s.get("name"), s.get("namespace")) for s in b.get("subjects", [])}
        want = {("ServiceAccount", b["roleRef"]["name"], "opsmesh")}
        if sub != want:
            probs.append(f"{ident(b)}: subjects {sorted(sub)} (want only the {b['roleRef']['name']} ServiceAccount)")
    rep.check(f"{name}: RBAC least privilege (collector read-only = collector-rbac.expected.json, cluster-wide or per namespace; remediator = remediator-rbac.expected.json; diagnoser, if bound, read-only = diagnoser-rbac.expected.json per namespace)", probs)

    # ---- topic provisioning Job
    probs = []
    jobs = [j for j in by_kind(objs, "Job") if j["metadata"]["name"] == "opsmesh-topics"]
    if len(jobs) != 1:
        probs.append("no opsmesh-topics Job")
    else:
        c = jobs[0]["spec"]["template"]["spec"]["containers"][0]
        if c.get("args") != ["topics", "create"]:
            probs.append(f"topics Job args {c.get('args')} (want [topics, create])")
    rep.check(f"{name}: topic provisioning Job", probs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploy", required=True, type=Path)
    ap.add_argument("--render", action="append", required=True, help="NAME=FILE")
    ap.add_argument("--k8s-versions", default="1.30,1.34")
    ap.add_argument("--dump-objects", type=Path)
    ap.add_argument("--readme", type=Path, help="every referenced Secret must be documented here")
    a = ap.parse_args()
    rep = Report()
    versions = [v.strip() for v in a.k8s_versions.split(",") if v.strip()]
    all_objs = []

    # the file the Rust test and the RBAC review read
    f = a.deploy / "k8s/base/remediator-rbac.yaml"
    docs = load_docs(f)
    probs = []
    if len(docs) != 1 or docs[0].get("kind") not in ("ClusterRole", "Role"):
        probs.append(f"{f} must hold exactly one Role/ClusterRole document")
    else:
        probs += rbac_diff(normalize_rules(docs[0].get("rules", [])),
                           expected_rules(a.deploy / "k8s/remediator-rbac.expected.json"))
    rep.check("base/remediator-rbac.yaml equals k8s/remediator-rbac.expected.json", probs)

    for spec in a.render:
        name, _, path = spec.partition("=")
        objs = load_docs(Path(path))
        all_objs += objs
        rep.check(f"{name}: schema-valid (kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''} "
                  f"strict, k8s {', '.join(versions)}; KEDA schema) [{len(objs)} objects]",
                  schema_problems(objs, versions, a.deploy / "k8s/schemas"))
        policy(objs, name, rep, a.deploy, overlay=(name != "base"))

    if a.readme:
        text = a.readme.read_text()
        refs = set()
        for o in all_objs:
            spec = o.get("spec") or {}
            pod = (spec.get("template") or {}).get("spec") or {}
            for v in pod.get("volumes", []) or []:
                if "secret" in v:
                    refs.add(v["secret"]["secretName"])
            for t in spec.get("tls", []) or []:
                refs.add(t["secretName"])
        rep.check(f"every referenced Secret ({len(refs)}) is documented in {a.readme.name}",
                  [f"{r} is not in {a.readme}" for r in sorted(refs) if r not in text])

    if a.dump_objects:
        a.dump_objects.write_text(json.dumps(all_objs))
    print(f"k8s: {rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
