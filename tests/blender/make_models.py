"""Write tiny random models of every kind into a folder: ``python make_models.py FOLDER``.

Run as a separate process by the Blender tests, so that torch never loads into the test process
that holds Blender. The models come from the engine tests' ``write_model``: real model files,
just small and untrained, which is all the add-on's plumbing needs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(folder: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "occ_engine_fixtures", HERE.parent / "backend" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    folder.mkdir(parents=True, exist_ok=True)
    fixtures.write_model(folder, "pointcloud", 0, kind="pointcloud")
    fixtures.write_model(folder, "pointcloud-sparse", 4, kind="pointcloud", automatic_points=[0, 400])
    fixtures.write_model(folder, "voxels", 1, kind="voxels")
    fixtures.write_model(folder, "image", 2, kind="image")
    fixtures.write_model(folder, "views", 5, kind="views", local_features=True)
    fixtures.write_model(folder, "unconditional", 3, kind="unconditional", decoder="simple", c_dim=0, z_dim=8)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
