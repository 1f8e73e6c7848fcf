#!/usr/bin/env python3
"""Each service's egress allows its declared peers and nothing else.

    validate_egress.py --render NAME=FILE [--render ...] [--pinned NAME ...] [--release]

The peers come from what each service's code calls (PEERS below: the configuration
keys it reads an endpoint from, in services/*/src/config.rs and friends) and where the
rendered configuration points them (the ConfigMaps: OPSMESH__BUS__KAFKA__BROKERS,
OPSMESH__COLLECTOR__OPENCOST__URL, ...). A peer whose key is unset is not called, so not
declared. For every Deployment, the egress rules of the NetworkPolicies selecting its pods
must:
  * only reach declared peers: a namespace selector the namespace of an in-cluster peer
    (on its pod port), an ipBlock an outside peer (on its port), a port-only rule (any
    address; base and dev) only ports of its peers;
  * reach every declared peer;
  * in a --pinned render (components/egress-pinned), name a destination in every rule
    (no port-only rule) and use 0.0.0.0/0 only for peers with no stable address;
  * with --release, hold no placeholder CIDR (the documentation ranges 192.0.2.0/24,
    198.51.100.0/24, 203.0.113.0/24 that overlays/prod/egress-cidrs.yaml ships).
Prints one line per check and exits non-zero if any failed.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from validate_k8s import Report

PLACEHOLDERS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
# In-cluster Services whose pods listen on another port than the Service's (a
# NetworkPolicy sees the pod port): argocd-server serves 80/443 from 8080.
TARGET_PORTS = {"argocd-server": {80: 8080, 443: 8080}}


@dataclass(frozen=True)
class Peer:
    name: str
    namespace: str | None  # in-cluster: its namespace; None: outside the pod network
    ports: frozenset[int]
    anywhere: bool = False  # no stable address (webhooks): 0.0.0.0/0 is acceptable


@dataclass(frozen=True)
class Endpoint:
    """A peer the code calls: from a URL setting, or fixed."""
    name: str
    key: str | None = None  # the setting holding its URL; unset = not called
    fixed: Peer | None = None
    default_port: int | None = None  # an optional peer's port when its key is unset (port-only rules)
    # Called only when one of these settings is `true` (then at `key`, else `default_url`).
    switches: tuple[str, ...] = ()
    default_url: str | None = None

    def switched_on(self, config: dict[str, str]) -> bool:
        return any(config.get(s, "false").lower() == "true" for s in self.switches)


DNS = Peer("dns", "kube-system", frozenset({53}))
KUBERNETES_API = Peer("kubernetes-api", None, frozenset({443, 6443}))
LLM_ON = "OPSMESH__DIAGNOSER__LLM__ENABLED"
INVESTIGATOR_ON = "OPSMESH__DIAGNOSER__INVESTIGATOR__ENABLED"
# services/<name>/src: the endpoints each one calls besides DNS and Kafka (all do).
PEERS: dict[str, list[Endpoint]] = {
    "alert-receiver": [],
    # kube client (lib.rs kube_client), sources.rs Costs and GitOps
    "collector": [Endpoint("kubernetes-api", fixed=KUBERNETES_API),
                  Endpoint("opencost", "OPSMESH__COLLECTOR__OPENCOST__URL"),
                  Endpoint("argocd", "OPSMESH__COLLECTOR__ARGOCD__URL")],
    # splunk.rs, splunk_mcp.rs, llm.rs (the advisor, OPSMESH__DIAGNOSER__LLM__ENABLED, and the
    # investigator use it), investigator/ (kube_reads.rs in-cluster client, tools.rs OpenCost)
    "diagnoser": [Endpoint("splunk-search", "OPSMESH__DIAGNOSER__SPLUNK__URL"),
                  Endpoint("splunk-mcp", "OPSMESH__DIAGNOSER__SPLUNK_MCP__URL", default_port=443),
                  Endpoint("llm", "OPSMESH__DIAGNOSER__LLM__BASE_URL", default_port=443,
                           switches=(LLM_ON, INVESTIGATOR_ON), default_url="https://api.openai.com/v1"),
                  Endpoint("kubernetes-api", fixed=KUBERNETES_API, switches=(INVESTIGATOR_ON,)),
                  Endpoint("opencost", "OPSMESH__DIAGNOSER__INVESTIGATOR__OPENCOST_URL",
                           switches=(INVESTIGATOR_ON,))],
    # cluster.rs (kube client), argocd.rs
    "remediator": [Endpoint("kubernetes-api", fixed=KUBERNETES_API),
                   Endpoint("argocd", "OPSMESH__REMEDIATOR__ARGOCD__URL")],
    # hec/, notify/ (route URLs are secrets, read from files: always declared)
    "reporter": [Endpoint("splunk-hec", "OPSMESH__REPORTER__HEC__URL"),
                 Endpoint("notifications", fixed=Peer("notifications", None, frozenset({443}), anywhere=True))],
}


def host_peer(name: str, host: str, port: int) -> Peer:
    """`svc.ns.svc[.cluster.local]` is in-cluster (pod port), anything else outside."""
    labels = host.split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        return Peer(name, labels[1], frozenset({TARGET_PORTS.get(labels[0], {}).get(port, port)}))
    return Peer(name, None, frozenset({port}))


def url_peer(name: str, url: str) -> Peer:
    u = urlsplit(url)
    return host_peer(name, u.hostname or "", u.port or (443 if u.scheme == "https" else 80))


def declared(service: str, config: dict[str, str]) -> tuple[list[Peer], set[int]]:
    """The peers `service` calls with this configuration, and the ports of the optional
    ones it may be configured to call (acceptable in port-only rules)."""
    peers = [DNS]
    for broker in filter(None, (b.strip() for b in config.get("OPSMESH__BUS__KAFKA__BROKERS", "").split(","))):
        host, _, port = broker.rpartition(":")
        peers.append(host_peer("kafka", host, int(port)))
    optional = set()
    for e in PEERS[service]:
        if e.switches and not e.switched_on(config):
            if e.default_port:
                optional.add(e.default_port)
        elif e.fixed:
            peers.append(e.fixed)
        elif e.key in config:
            peers.append(url_peer(e.name, config[e.key]))
        elif e.default_url:
            peers.append(url_peer(e.name, e.default_url))
        elif e.default_port:
            optional.add(e.default_port)
    return peers, optional


def selects(selector: dict, labels: dict) -> bool:
    ml = (selector or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in ml.items())


def rule_ports(rule: dict) -> set[int]:
    out = set()
    for p in rule.get("ports") or []:
        out.update(range(p["port"], p.get("endPort", p["port"]) + 1))
    return out


def check_service(svc: str, labels: dict, nps: list[dict], config: dict, pinned: bool) -> list[str]:
    peers, optional = declared(svc, config)
    reached: set[tuple[str, int]] = set()
    probs = []
    for n in nps:
        if not selects(n["spec"].get("podSelector"), labels):
            continue
        for rule in n["spec"].get("egress") or []:
            ports = rule_ports(rule)
            where = f"NetworkPolicy/{n['metadata']['name']}"
            if not rule.get("to"):
                if pinned:
                    probs.append(f"{where}: ports {sorted(ports)} to any address (name the peer)")
                known = {p for peer in peers for p in peer.ports} | optional
                if ports - known:
                    probs.append(f"{where}: ports {sorted(ports - known)} to any address, not a peer's port")
                reached |= {(peer.name, p) for peer in peers for p in peer.ports & ports}
                continue
            for to in rule["to"]:
                ns = ((to.get("namespaceSelector") or {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name")
                block = to.get("ipBlock")
                for port in sorted(ports):
                    if block:
                        whole = ipaddress.ip_network(block["cidr"]).prefixlen == 0
                        match = [p for p in peers if p.namespace is None and port in p.ports
                                 and (p.anywhere or not whole)]
                        what = f"{block['cidr']}:{port}"
                    else:
                        match = [p for p in peers if p.namespace == ns and port in p.ports]
                        what = f"namespace {ns}:{port}"
                    if not match:
                        probs.append(f"{where}: allows {what}, which is not a declared peer")
                    reached |= {(p.name, port) for p in match}
    for peer in peers:
        for port in peer.ports:
            if (peer.name, port) not in reached:
                where = f"namespace {peer.namespace}" if peer.namespace else "outside the pod network"
                probs.append(f"declared peer {peer.name} ({where}, port {port}) has no egress rule")
    return [f"{svc}: {p}" for p in probs]


def placeholders(objs: list[dict]) -> list[str]:
    found = []
    for n in objs:
        if n.get("kind") != "NetworkPolicy":
            continue
        for rule in n["spec"].get("egress") or []:
            for to in rule.get("to") or []:
                cidr = (to.get("ipBlock") or {}).get("cidr")
                if cidr and any(ipaddress.ip_network(cidr).subnet_of(p) for p in PLACEHOLDERS):
                    found.append(f"NetworkPolicy/{n['metadata']['name']}: {cidr}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", action="append", required=True, help="NAME=FILE")
    ap.add_argument("--pinned", action="append", default=[], help="a render whose egress must be pinned")
    ap.add_argument("--release", action="store_true", help="placeholder CIDRs are errors")
    a = ap.parse_args()
    rep = Report()
    for spec in a.render:
        name, _, path = spec.partition("=")
        objs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        nps = [o for o in objs if o.get("kind") == "NetworkPolicy"]
        config: dict[str, str] = {}
        for c in objs:
            if c.get("kind") == "ConfigMap" and c["metadata"]["name"].startswith("opsmesh-"):
                config.update(c.get("data") or {})
        probs = []
        for d in objs:
            if d.get("kind") != "Deployment" or not d["metadata"]["name"].startswith("opsmesh-"):
                continue
            svc = d["metadata"]["name"].removeprefix("opsmesh-")
            if svc in PEERS:
                probs += check_service(svc, d["spec"]["template"]["metadata"]["labels"], nps, config,
                                       name in a.pinned)
        pinned = " (pinned: every rule names its peer)" if name in a.pinned else ""
        checks = [(f"{name}: egress reaches each service's declared peers and nothing else{pinned}", probs)]
        left = placeholders(objs)
        if a.release:
            checks.append((f"{name}: no placeholder CIDR left (--release)", left))
        elif left:
            checks.append((f"{name}: {len(left)} egress CIDR(s) are placeholders; replace them "
                           f"(overlays/prod/egress-cidrs.yaml) - `deploy/check.sh --release` refuses them",
                           []))
        for title, problems in checks:
            rep.check(title, problems)
    print(f"egress: {rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
