#!/usr/bin/env bash
# Create or update the virtual environment that every other script uses.
#
# Safe to run again: when the environment is complete and neither pyproject.toml nor this script
# changed since its last run for this checkout, it returns at once. Set OCC_VENV to use another
# location and OCC_BASE_PYTHON to pick the interpreter that creates it (default: python3.11; the
# bpy module needs 3.11).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

TORCH_PIN="torch==2.13.0"  # exact: an unpinned torch pulls a newer multi-GB CUDA build
BPY_PIN="bpy==5.0.1"       # real Blender as a Python module, for the Blender tests and the demo

stamp_file="$OCC_VENV/.occ-bootstrap-stamp"
wanted_stamp="$( (echo "$REPO_ROOT"; cat "$REPO_ROOT/pyproject.toml" "${BASH_SOURCE[0]}") | sha256sum | cut -d' ' -f1)"
if [[ -x "$OCC_PY" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$wanted_stamp" ]]; then
    exit 0
fi

if [[ ! -x "$OCC_PY" ]]; then
    base_python="${OCC_BASE_PYTHON:-python3.11}"
    if ! command -v "$base_python" >/dev/null; then
        echo "bootstrap: $base_python not found; install Python 3.11 or set OCC_BASE_PYTHON" >&2
        exit 1
    fi
    echo "bootstrap: creating $OCC_VENV with $base_python"
    "$base_python" -m venv "$OCC_VENV"
fi
if ! "$OCC_PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "bootstrap: $OCC_PY is not Python 3.11, which bpy $BPY_PIN requires" >&2
    exit 1
fi

# Installing the torch pin first, and keeping it as a constraint afterwards, means the project's
# "torch>=2.2" is already satisfied and pip never swaps in a newer (CUDA) release.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "$TORCH_PIN" >"$constraints"
pip_install=("$OCC_PY" -m pip install --quiet --disable-pip-version-check --progress-bar off)

echo "bootstrap: installing $TORCH_PIN"
"${pip_install[@]}" "$TORCH_PIN"
echo "bootstrap: installing the project with its dev and bench dependencies and $BPY_PIN"
"${pip_install[@]}" --constraint "$constraints" --editable "$REPO_ROOT[dev,bench]" "$BPY_PIN"

# Open3D (bench only) loads the system's libusb-1.0; install it where this machine can, else its
# benchmarks and their test are skipped with a message.
if ! "$OCC_PY" -c 'import open3d' 2>/dev/null; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing libusb-1.0-0 for Open3D"
        apt-get install -y -qq libusb-1.0-0 >/dev/null \
            || { apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null; } \
            || echo "bootstrap: could not install libusb-1.0-0; the classical baselines are skipped"
    else
        echo "bootstrap: Open3D does not load (it needs libusb-1.0); the classical baselines are skipped"
    fi
fi

# Run from / so the check sees what is installed, not the repository's folders.
(cd / && "$OCC_PY" - <<'PY'
import importlib.util, sys
names = ["torch", "numpy", "scipy", "pykdtree", "trimesh", "mcubes", "tqdm", "safetensors", "PIL",
         "fast_simplification", "pytest", "ruff", "mypy", "hypothesis", "bpy", "backend", "occupancy_addon"]
missing = [name for name in names if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"bootstrap: still missing after install: {', '.join(missing)}")
PY
)
echo "$wanted_stamp" >"$stamp_file"
echo "bootstrap: $OCC_VENV is ready"
