#!/usr/bin/env bash
# Set up the environment, then run the whole check: pytest, ruff and mypy.
# Extra arguments go to pytest (e.g. ./scripts/test.sh tests/addon -x).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
"$REPO_ROOT/scripts/bootstrap.sh" || exit 1
cd "$REPO_ROOT"

report="$(mktemp -d)"
trap 'rm -rf "$report"' EXIT
failed=()

echo "== pytest"
# Two worker processes (OCC_TEST_WORKERS; 0 runs in this process): most tests wait on a
# subprocess, Blender or one torch thread, so two share the cores well.
"$OCC_PY" -m pytest -n "${OCC_TEST_WORKERS:-2}" --junitxml="$report/junit.xml" "$@" || failed+=(pytest)
echo "== ruff check"
"$OCC_PY" -m ruff check . || failed+=("ruff check")
echo "== ruff format --check"
"$OCC_PY" -m ruff format --check . || failed+=("ruff format")
echo "== mypy"
"$OCC_PY" -m mypy || failed+=(mypy)

echo
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
fi
# The last line counts the tests that ran, in the form CI reads.
"$OCC_PY" - "$report/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

try:
    suites = ET.parse(sys.argv[1]).getroot().iter("testsuite")
except (OSError, ET.ParseError):
    sys.exit("tests: no pytest report was written")
total = failed = skipped = 0
for suite in suites:
    total += int(suite.get("tests", 0))
    failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped += int(suite.get("skipped", 0))
print(f"tests: {total - failed - skipped} passed, {failed} failed, {skipped} skipped")
PY
((${#failed[@]} == 0))
