#!/usr/bin/env bash
# Build splunk-app/dist/<app id>-<version>.tgz from splunk-app/<app id>/.
#
# One top-level folder named like [package] id; directories 755, files 644 (Splunk runs
# bin/opsmesh.py through its interpreter, so nothing needs an execute bit); owner 0:0;
# no local/, local.meta, __pycache__, *.pyc or dot-files; reproducible (sorted entries,
# fixed mtimes, gzip header without a timestamp). The package also carries the admin
# documentation splunk-app/README.md as README.md and the repository's LICENSE (one source
# each, nothing copied into the app folder). Prints the package path on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

exec "$python" - "$here" <<'PY'
import configparser
import gzip
import io
import os
import re
import sys
import tarfile

here = sys.argv[1]
candidates = [d for d in sorted(os.listdir(here))
              if os.path.isfile(os.path.join(here, d, "default", "app.conf"))]
if len(candidates) != 1:
    sys.exit("package.sh: expected exactly one app folder with default/app.conf, found %r" % candidates)
folder = candidates[0]
app_dir = os.path.join(here, folder)

conf = configparser.ConfigParser(interpolation=None, strict=False)
conf.optionxform = str
with open(os.path.join(app_dir, "default", "app.conf"), encoding="utf-8") as fh:
    conf.read_file(fh)
app_id = conf.get("package", "id")
version = conf.get("id", "version")
if conf.get("launcher", "version") != version:
    sys.exit("package.sh: [launcher] version %s differs from [id] version %s" % (conf.get("launcher", "version"), version))
if conf.get("id", "name") != app_id or folder != app_id:
    sys.exit("package.sh: folder %s, [package] id %s and [id] name %s must be equal" % (folder, app_id, conf.get("id", "name")))
if not re.match(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$", version):
    sys.exit("package.sh: version %s is not semver" % version)
with open(os.path.join(app_dir, "bin", "opsmesh.py"), encoding="utf-8") as fh:
    m = re.search(r'^VERSION = "([^"]+)"', fh.read(), re.M)
if not m or m.group(1) != version:
    sys.exit("package.sh: bin/opsmesh.py VERSION %s differs from app.conf version %s" % (m and m.group(1), version))

import json
with open(os.path.join(app_dir, "app.manifest"), encoding="utf-8") as fh:
    manifest = json.load(fh)
if manifest["info"]["id"]["name"] != app_id or manifest["info"]["id"]["version"] != version:
    sys.exit("package.sh: app.manifest info.id (%s %s) differs from app.conf (%s %s)"
             % (manifest["info"]["id"]["name"], manifest["info"]["id"]["version"], app_id, version))

# Files from outside the app folder (inside the repository) placed at the package root.
EXTRA_FILES = [("README.md", os.path.join(here, "README.md")),
               ("LICENSE", os.path.join(os.path.dirname(here), "LICENSE"))]
for name, path in EXTRA_FILES:
    if os.path.exists(os.path.join(app_dir, name)):
        sys.exit("package.sh: %s/%s would shadow %s; remove it" % (folder, name, path))
    if not os.path.isfile(path):
        sys.exit("package.sh: %s is missing" % path)

SKIP_DIRS = {"local", "__pycache__"}
def wanted(rel):
    parts = rel.split(os.sep)
    if any(p.startswith(".") for p in parts):
        return False
    if parts[0] == "local" or any(p in SKIP_DIRS for p in parts):
        return False
    if rel == os.path.join("metadata", "local.meta"):
        return False
    name = parts[-1]
    return not (name.endswith((".pyc", ".pyo", "~", ".swp", ".bak", ".orig")))

entries = []
for root, dirs, files in os.walk(app_dir):
    dirs.sort()
    rel_root = os.path.relpath(root, app_dir)
    for d in dirs:
        rel = os.path.normpath(os.path.join(rel_root, d))
        if wanted(rel):
            entries.append((rel, True))
    for f in sorted(files):
        rel = os.path.normpath(os.path.join(rel_root, f))
        if wanted(rel):
            entries.append((rel, False))
# drop entries below skipped directories
kept_dirs = {""}
final = []
for rel, is_dir in sorted(entries):
    parent = os.path.dirname(rel)
    if parent not in kept_dirs and parent != "":
        continue
    if is_dir:
        kept_dirs.add(rel)
    final.append((rel, is_dir))

mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "1700000000"))
dist = os.path.join(here, "dist")
os.makedirs(dist, exist_ok=True)
out = os.path.join(dist, "%s-%s.tgz" % (app_id, version))
tmp = out + ".tmp"

def info(name, is_dir, size=0):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    ti.mode = 0o755 if is_dir else 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = mtime
    ti.size = size
    return ti

with open(tmp, "wb") as raw:
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info(app_id, True))
            files = sorted([(rel, is_dir, os.path.join(app_dir, rel)) for rel, is_dir in final]
                           + [(name, False, path) for name, path in EXTRA_FILES])
            for rel, is_dir, path in files:
                name = "%s/%s" % (app_id, rel.replace(os.sep, "/"))
                if is_dir:
                    tar.addfile(info(name, True))
                else:
                    with open(path, "rb") as fh:
                        data = fh.read()
                    tar.addfile(info(name, False, len(data)), io.BytesIO(data))
os.chmod(tmp, 0o644)
os.replace(tmp, out)
print(out)
PY
