#!/usr/bin/env bash
# Set up the environment, then run the headless Blender demo (scripts/demo_blender.py).
# Extra arguments go to the demo, e.g. ./scripts/demo.sh --output-dir /tmp/demo
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
"$REPO_ROOT/scripts/bootstrap.sh"
exec "$OCC_PY" "$REPO_ROOT/scripts/demo_blender.py" "$@"
