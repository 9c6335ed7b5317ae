"""Turning the backend's per-stage progress into one fraction and a short text."""

from __future__ import annotations

# The engine's stages in order (backend/engine/types.py) with their rough share of the time.
STAGES: dict[str, tuple[str, float]] = {
    "encode": ("Encoding the input", 0.05),
    "evaluate": ("Evaluating the network", 0.7),
    "marching_cubes": ("Extracting the surface", 0.1),
    "simplify": ("Simplifying", 0.05),
    "refine": ("Refining", 0.07),
    "fit": ("Fitting to the points", 0.03),
    "normals": ("Computing normals", 0.03),
}
_TOTAL = sum(share for _, share in STAGES.values())


def overall_fraction(stage: str, fraction: float) -> float:
    """Progress of the whole request in [0, 1] when ``stage`` is ``fraction`` done.

    Stages that are switched off never report, so the bar may jump; it never goes backwards
    within one request because the stages run in this order.
    """
    if stage not in STAGES:
        return min(max(fraction, 0.0), 1.0)
    before = 0.0
    for name, (_, share) in STAGES.items():
        if name == stage:
            return min(max((before + share * min(max(fraction, 0.0), 1.0)) / _TOTAL, 0.0), 1.0)
        before += share
    raise AssertionError(stage)  # unreachable: stage is a key of STAGES


def describe(stage: str | None, fraction: float) -> str:
    """A status text such as "Evaluating the network (42%)"."""
    if stage is None:
        return "Starting the backend"
    label = STAGES.get(stage, (stage.replace("_", " ").capitalize(), 0.0))[0]
    return f"{label} ({round(100 * min(max(fraction, 0.0), 1.0))}%)"
