"""The add-on stays light: importing and registering it loads neither torch nor the backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
import occupancy_addon
occupancy_addon.register()
occupancy_addon.unregister()
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "backend"))
print("loaded:", loaded)
"""


def test_register_loads_no_torch_and_no_backend(repo_root: Path, tmp_path: Path) -> None:
    # A fresh interpreter: this test process may already hold torch from backend tests.
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=repo_root, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout
