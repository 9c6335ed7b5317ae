"""The shared k-d tree gives the nearest points that a brute-force search gives."""

from __future__ import annotations

import numpy as np
import pytest

from backend.point_tree import PointTree


@pytest.mark.parametrize(("n", "k", "within"), [(500, 16, None), (500, 4, 0.05), (5, 8, None), (5, 8, 0.3)])
def test_neighbours_match_brute_force(n: int, k: int, within: float | None) -> None:
    rng = np.random.default_rng(n + k)
    points = rng.random((n, 3)).astype(np.float32)
    queries = rng.random((200, 3)).astype(np.float32)
    distance, index = PointTree(points).query(queries, k=k, within=within)

    all_d = np.linalg.norm(queries[:, None] - points[None], axis=-1)
    order = np.argsort(all_d, axis=1)[:, :k]
    want = np.take_along_axis(all_d, order, 1)
    if k > n:  # past the cloud's size: inf and index n, as scipy's cKDTree gives
        want = np.concatenate([want, np.full((len(queries), k - n), np.inf)], 1)
        order = np.concatenate([order, np.full((len(queries), k - n), n)], 1)
    if within is not None:
        far = want > within
        want, order = np.where(far, np.inf, want), np.where(far, n, order)
    assert distance.shape == index.shape == (200, k) and index.dtype == np.int64
    np.testing.assert_allclose(distance, want, rtol=1e-5)
    found = want < np.inf
    np.testing.assert_array_equal(index[~found], n)
    # ties aside, the same points: compare the distances of the points the tree named
    named = np.take_along_axis(all_d, np.where(found, index, 0), 1)
    np.testing.assert_allclose(named[found], want[found], rtol=1e-5)


def test_no_queries_give_empty_answers() -> None:
    distance, index = PointTree(np.zeros((3, 3))).query(np.zeros((0, 3)), k=2)
    assert distance.shape == index.shape == (0, 2)
