"""What carving open cavities costs (engine/cavities.py): the warm engine with and without it.

On the unfamiliar set's bowls (``scripts/make_unfamiliar_set.py``) and the procedural test
shapes, at the given density, it times a warm ``Reconstructor`` on the same points with
``open_cavities`` on and off, in the same run, and reports the ratio: for the shapes it carves
(a second extraction) and for those it only checks (the buried-point test).

    python bench/bench_cavities.py                   # 30,000 points, 6 bowls and 6 procedural shapes
    python bench/bench_cavities.py --points 3000 --shapes 17
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=30_000)
    parser.add_argument("--shapes", type=int, default=6, help="bowls, and as many procedural shapes")
    parser.add_argument("--unfamiliar", type=Path, default=REPO / ".data" / "unfamiliar" / "prepared")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from backend.allocator import ensure_fast_allocator

    ensure_fast_allocator(sys.argv)
    from backend.engine.reconstructor import Reconstructor
    from backend.evaluation import EvalSettings, test_cases

    engine = Reconstructor("cpu")
    _, meta = engine.load("pointcloud")
    sets = {
        "bowls": EvalSettings(n=100, points=args.points, noise=0.005, source=str(args.unfamiliar)),
        "procedural": EvalSettings(n=args.shapes, points=args.points, noise=0.005),
    }
    rows: dict[str, list[tuple[float, float]]] = {"carved": [], "checked": []}
    for name, settings in sets.items():
        all_cases = test_cases(meta.kind, meta, settings, progress=False)
        cases = [c for c in all_cases if name != "bowls" or c.name.startswith("shell")]
        for case in cases[: args.shapes]:
            on = replace(settings.reconstruct_options(), keep_field=False)
            off = replace(on, open_cavities=False)
            carved = "carved_cells" in engine.reconstruct("pointcloud", case.observation, on).stats
            times = {}
            for label, options in (("on", on), ("off", off)):
                runs = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    engine.reconstruct("pointcloud", case.observation, options)
                    runs.append(time.perf_counter() - t0)
                times[label] = statistics.median(runs)
            rows["carved" if carved else "checked"].append((times["on"], times["off"]))
            what = "carved" if carved else "checked"
            print(f"{name} {case.name}: {what} {times['on']:.2f} s, without {times['off']:.2f} s")
    for label, pairs in rows.items():
        if pairs:
            on_s = statistics.median(p[0] for p in pairs)
            off_s = statistics.median(p[1] for p in pairs)
            ratio = on_s / off_s
            print(f"{label}: {len(pairs)} shapes, median {on_s:.2f} s, {off_s:.2f} s without (x{ratio:.2f})")


if __name__ == "__main__":
    main()
