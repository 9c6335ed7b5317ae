"""Build the unfamiliar test set: shapes the procedural training generator cannot make.

    python scripts/make_unfamiliar_set.py                       # 100 shapes into .data/unfamiliar/
    python -m backend evaluate pointcloud --source .data/unfamiliar/prepared --split test --n 100

Scores on held-out procedural shapes say how well a model fits its own training distribution.
This set (vases, swept tubes, thin bowls, organic blobs, extruded stars, gyroid balls; see
``backend/data/unfamiliar.py``) measures how it carries over to shapes unlike any it has seen.
The meshes go to OUT/meshes and are prepared as a test-only dataset in OUT/prepared (no train
or validation split), so no training run or threshold selection can use them by accident.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.data.meshes import (  # noqa: E402
    MeshDataError,
    MeshSettings,
    find_meshes,
    load_mesh,
    prepare_meshes,
)
from backend.data.unfamiliar import (  # noqa: E402
    FAMILIES,
    RESOLUTION,
    check_families,
    shape_name,
    write_unfamiliar_meshes,
)


def clear_stale(folder: Path, keep: list[Path]) -> None:
    """Remove set meshes of an earlier, larger build, which would otherwise be prepared too.

    Only files named like this set's meshes are removed; any other mesh file stops the build.
    """
    if not folder.is_dir():
        return
    keep_names = {p.name for p in keep}
    for path in find_meshes(folder):
        if path.name in keep_names:
            continue
        family, _, index = path.stem.rpartition("-")
        if path.suffix == ".ply" and family in FAMILIES and index.isdigit():
            path.unlink()
        else:
            raise MeshDataError(f"{folder} holds a mesh that is not part of the set: {path.name}")


def family_stats(paths: list[Path]) -> dict[str, list[tuple[int, bool]]]:
    """(vertex count, watertight) of each written mesh, by family."""
    import trimesh

    stats: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for path in paths:
        vertices, faces = load_mesh(path)
        closed = bool(trimesh.Trimesh(vertices, faces, process=False).is_watertight)
        stats[path.stem.rpartition("-")[0]].append((len(vertices), closed))
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100, help="shapes, families in turn (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="shape i comes from (seed, i) (default 0)")
    parser.add_argument(
        "--out", type=Path, default=Path(".data/unfamiliar"), help="output folder (default .data/unfamiliar)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "--resolution", type=int, default=RESOLUTION, help=f"grid cells per shape (default {RESOLUTION})"
    )
    parser.add_argument(
        "--surface-points", type=int, default=100_000, help="surface samples per shape (default 100000)"
    )
    parser.add_argument(
        "--families",
        nargs="+",
        default=list(FAMILIES),
        help=f"families in turn (default all: {' '.join(FAMILIES)}); the first five alone give the set as "
        "it was before gyroids were added",
    )
    args = parser.parse_args()
    if args.n < 1 or args.workers < 1 or args.resolution < 16:
        parser.error("--n and --workers must be at least 1, --resolution at least 16")
    try:
        check_families(args.families)
    except ValueError as e:
        parser.error(str(e))

    start = time.perf_counter()
    meshes, prepared = args.out / "meshes", args.out / "prepared"
    try:
        clear_stale(meshes, [meshes / f"{shape_name(i, args.families)}.ply" for i in range(args.n)])
        paths = write_unfamiliar_meshes(
            meshes, args.n, args.seed, args.resolution, args.workers, args.families
        )
        print(f"wrote {len(paths)} meshes to {meshes} in {time.perf_counter() - start:.0f} s")
        settings = MeshSettings(
            surface_points=args.surface_points, val_fraction=0.0, test_fraction=1.0, seed=args.seed
        )
        manifest = prepare_meshes(meshes, prepared, settings, workers=args.workers)
    except MeshDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped = manifest["skipped"]
    assert isinstance(skipped, dict)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)

    print(f"{'family':10s} {'shapes':>6s} {'vertices (min-max)':>20s} {'watertight':>10s}")
    for family, rows in family_stats(paths).items():
        counts = [v for v, _ in rows]
        closed = sum(w for _, w in rows)
        print(f"{family:10s} {len(rows):6d} {f'{min(counts)}-{max(counts)}':>20s} {closed:6d}/{len(rows)}")
    print(f"prepared {len(paths) - len(skipped)} test shapes in {prepared} ({len(skipped)} skipped)")
    print(f"total {time.perf_counter() - start:.0f} s; evaluate a model on it with")
    print(f"  python -m backend evaluate MODEL --source {prepared} --split test --n {args.n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
