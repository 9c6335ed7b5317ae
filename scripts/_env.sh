# Shared settings for the scripts in this folder; sourced, not run.
# OCC_VENV picks the virtual environment (default: .venv in the repository).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OCC_VENV="${OCC_VENV:-$REPO_ROOT/.venv}"
OCC_PY="$OCC_VENV/bin/python"
export REPO_ROOT OCC_VENV OCC_PY

# glibc's allocator returns large blocks to the OS eagerly, which makes big torch and Blender
# allocations slow; these keep freed memory in the process instead.
export MALLOC_MMAP_THRESHOLD_=4294967296
export MALLOC_TRIM_THRESHOLD_=68719476736
export MALLOC_TOP_PAD_=1073741824
