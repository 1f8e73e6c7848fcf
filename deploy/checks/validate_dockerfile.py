#!/usr/bin/env python3
"""Structural checks of deploy/Dockerfile (hadolint runs separately).

    validate_dockerfile.py --repo REPO_ROOT

Parses the Dockerfile with the official BuildKit parser (PyPI package
`dockerfile`) and checks: multi-stage; a slim/distroless runtime; numeric
non-root USER; `opsmesh` as the exec-form ENTRYPOINT; cargo cache mounts;
`cargo build --locked` of every binary; and that Dockerfile.dockerignore keeps
every workspace member (Cargo.toml) in the build context while dropping
target/ and .git.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import tomllib
from pathlib import Path

import dockerfile

BINARIES = ["opsmesh", "opsmesh-collector", "opsmesh-alert-receiver", "opsmesh-diagnoser",
            "opsmesh-remediator", "opsmesh-reporter"]


def ignored(path: str, patterns: list[str]) -> bool:
    """Good-enough .dockerignore semantics: last matching pattern wins, ! re-includes."""
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(pre, p) or fnmatch.fnmatch(pre, p.replace("**/", "")) for pre in prefixes):
            result = not neg
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True, type=Path)
    a = ap.parse_args()
    df = a.repo / "deploy/Dockerfile"
    probs: list[str] = []
    try:
        cmds = dockerfile.parse_file(str(df))
    except dockerfile.GoParseError as e:
        print(f"FAIL Dockerfile does not parse: {e}")
        return 1

    froms = [c for c in cmds if c.cmd == "FROM"]
    if len(froms) < 2:
        probs.append("not a multi-stage build")
    final_from = froms[-1].value[0] if froms else ""
    if not ("-slim" in final_from or "distroless" in final_from):
        probs.append(f"runtime base {final_from} is not a minimal (slim/distroless) image")
    last_stage = cmds[cmds.index(froms[-1]):] if froms else []
    users = [c for c in last_stage if c.cmd == "USER"]
    if not users:
        probs.append("runtime stage sets no USER")
    else:
        uid = users[-1].value[0].split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            probs.append(f"USER {users[-1].value[0]} must be a numeric non-root uid (runAsNonRoot)")
    eps = [c for c in last_stage if c.cmd == "ENTRYPOINT"]
    if not eps or not eps[-1].json or not eps[-1].value[0].endswith("/opsmesh"):
        probs.append("ENTRYPOINT must be the exec form of opsmesh")
    if not any(c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags) for c in last_stage):
        probs.append("runtime stage copies nothing from the build stage")
    runs = [c for c in cmds if c.cmd == "RUN"]
    build = [c for c in runs if "cargo build" in c.value[0]]
    if len(build) != 1:
        probs.append("want exactly one RUN with cargo build")
    else:
        b = build[0]
        mounts = " ".join(b.flags)
        for target in ("/usr/local/cargo/registry", "/src/target"):
            if f"type=cache" not in mounts or f"target={target}" not in mounts:
                probs.append(f"cargo build has no cache mount for {target}")
        if "--locked" not in b.value[0]:
            probs.append("cargo build without --locked")
    args = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1].strip('"')
            for c in cmds if c.cmd == "ARG" and "=" in c.value[0]}
    shipped = args.get("OPSMESH_BINARIES", "").split()
    for bname in BINARIES:
        if bname not in shipped:
            probs.append(f"binary {bname} is not built/shipped")

    ign_file = a.repo / "deploy/Dockerfile.dockerignore"
    patterns = [l.strip() for l in ign_file.read_text().splitlines() if l.strip() and not l.startswith("#")]
    for must_drop in ("target", ".git"):
        if not ignored(must_drop, patterns):
            probs.append(f"Dockerfile.dockerignore keeps {must_drop} in the build context")
    keep = ["Cargo.toml", "Cargo.lock"]
    cargo = a.repo / "Cargo.toml"
    if cargo.exists():
        ws = tomllib.loads(cargo.read_text()).get("workspace", {})
        keep += ws.get("members", [])
        keep += [v["path"] for v in ws.get("dependencies", {}).values() if isinstance(v, dict) and "path" in v]
    for k in keep:
        if "*" not in k and ignored(k, patterns):
            probs.append(f"Dockerfile.dockerignore drops {k}, which cargo needs")

    if probs:
        print("FAIL Dockerfile structure")
        for p in probs:
            print(f"       - {p}")
        return 1
    print(f"ok   Dockerfile structure ({len(froms)} stages, runtime {final_from}, USER {users[-1].value[0]}, "
          f"{len(shipped)} binaries, context keeps {len(keep)} workspace paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
