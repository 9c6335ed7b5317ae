#!/usr/bin/env bash
# Check the GPU paths end to end against the CPU and print one table (scripts/gpu_check.py).
# Needs the environment set up (./scripts/bootstrap.sh, with a CUDA build of torch on a GPU
# machine); extra arguments go to the check, e.g. ./scripts/gpu_check.sh --device cuda:1
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$OCC_PY" "$REPO_ROOT/scripts/gpu_check.py" "$@"
