"""Per-stage progress from the backend as one bar and one line of text."""

from __future__ import annotations

from occupancy_addon.progress import STAGES, describe, overall_fraction


def test_fraction_grows_through_the_stages() -> None:
    steps = [overall_fraction(stage, f) for stage in STAGES for f in (0.0, 0.5, 1.0)]
    assert steps == sorted(steps) and steps[0] == 0.0 and steps[-1] == 1.0
    assert overall_fraction("evaluate", 2.0) == overall_fraction("evaluate", 1.0)  # clamped
    assert overall_fraction("unknown stage", 0.4) == 0.4


def test_text() -> None:
    assert describe(None, 0.0) == "Starting the backend"
    assert describe("evaluate", 0.421) == "Evaluating the network (42%)"
    assert describe("new_stage", 1.0) == "New stage (100%)"
