#!/usr/bin/env python3
"""Validates every runbooks/*.md (except README.md) against schema.json and the rules of
README.md that JSON Schema cannot express. Exit 0 when all pass, 1 otherwise.

    ~/.cache/opsmesh/venv/bin/python runbooks/check.py [FILE.md ...]

Needs pyyaml and jsonschema.
"""

import hashlib
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
FENCE = re.compile(r"^\s*(```|~~~)")


def split_front_matter(text):
    lines = text.split("\n")
    if not lines or lines[0].rstrip("\r") != "---":
        raise ValueError("the file must start with a '---' line")
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r") == "---":
            return "\n".join(lines[1:i]), lines[i + 1 :]
    raise ValueError("no closing '---' line for the front matter")


def sections(body_lines):
    """[(heading, text)] split as services/runbooks/src/lib.rs does: at every line that
    starts with '## '; the text is the following lines, each followed by a newline."""
    found = []
    for line in body_lines:
        line = line.rstrip("\r")
        if line.startswith("## "):
            found.append([line[3:].strip(), ""])
        elif found:
            found[-1][1] += line + "\n"
    return [(h, t) for h, t in found]


def headings_in_fences(body_lines):
    in_fence, bad = False, []
    for line in body_lines:
        if FENCE.match(line):
            in_fence = not in_fence
        elif in_fence and line.startswith("## "):
            bad.append(line)
    return bad


def check(path, validator, seen_ids):
    errors = []
    fm_text, body = split_front_matter(path.read_text(encoding="utf-8"))
    fm = yaml.safe_load(fm_text)
    if not isinstance(fm, dict):
        return [f"{path.name}: front matter is not a mapping"], []
    for err in sorted(validator.iter_errors(fm), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{path.name}: {where}: {err.message}")
    if fm.get("id") != path.stem:
        errors.append(f"{path.name}: id {fm.get('id')!r} is not the file stem {path.stem!r}")
    if fm.get("id") in seen_ids:
        errors.append(f"{path.name}: duplicate id {fm.get('id')!r}")
    seen_ids.add(fm.get("id"))
    for line in headings_in_fences(body):
        errors.append(f"{path.name}: '## ' line inside a code block: {line!r}")
    body_sections = sections(body)
    headings = [h for h, _ in body_sections]
    listed = [s.get("heading") for s in fm.get("sections", []) if isinstance(s, dict)]
    report = []
    for h in listed:
        if listed.count(h) > 1:
            errors.append(f"{path.name}: section {h!r} listed more than once")
        n = headings.count(h)
        if n != 1:
            errors.append(f"{path.name}: section {h!r} appears {n} times as a '## ' heading (must be 1)")
        else:
            text = dict(body_sections)[h]
            kinds = [a.get("kind") for s in fm["sections"] if s.get("heading") == h for a in s.get("actions", [])]
            report.append((h, kinds, hashlib.sha256(text.encode()).hexdigest()[:12]))
    for s in fm.get("sections", []):
        if not isinstance(s, dict) or not isinstance(s.get("ladder"), dict):
            continue
        allowed = [(a.get("kind"), a.get("target")) for a in s.get("actions", []) if isinstance(a, dict)]
        for i, step in enumerate(s["ladder"].get("steps", [])):
            if isinstance(step, dict) and (step.get("kind"), step.get("target")) not in allowed:
                errors.append(
                    f"{path.name}: section {s.get('heading')!r}: ladder.steps[{i}]: "
                    f"{step.get('kind')} on a {step.get('target')} is not among the section's actions"
                )
    return errors, report


def main(argv):
    schema = json.loads((HERE / "schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    files = [Path(a) for a in argv] or sorted(p for p in HERE.glob("*.md") if p.name != "README.md")
    all_errors, seen = [], set()
    for path in files:
        try:
            errors, report = check(path, validator, seen)
        except (ValueError, yaml.YAMLError) as e:
            errors, report = [f"{path.name}: {e}"], []
        all_errors += errors
        status = "FAIL" if errors else "ok"
        print(f"{status:4} {path.name}")
        for h, kinds, digest in report:
            print(f"       ## {h}  [{', '.join(map(str, kinds))}]  sha256:{digest}…")
    for e in all_errors:
        print("error:", e, file=sys.stderr)
    return 1 if all_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
