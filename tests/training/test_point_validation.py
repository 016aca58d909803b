"""Spatially blocked hold-out of points, and scores computed at points."""
from __future__ import annotations

import numpy as np
import pytest

from training.points.validation import block_ids, default_block_size, point_metrics, spatial_block_split


def _uniform(n: int = 3000, extent: float = 10000.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, extent, (n, 2)) + np.array([300000.0, 2770000.0])


def _clustered(seed: int = 1) -> np.ndarray:
    """Points in tight clusters (as people click them), many clusters across block borders."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.0, 5000.0, (60, 2))
    return np.concatenate([c + rng.normal(0.0, 40.0, (25, 2)) for c in centres])


def _straddling_blocks(xy: np.ndarray, block: float, val: np.ndarray) -> int:
    """Blocks (computed here, independently) holding both train and validation points."""
    cells: dict[tuple[int, ...], set[bool]] = {}
    for cell, v in zip(map(tuple, np.floor(xy / block).astype(int)), val):
        cells.setdefault(cell, set()).add(bool(v))
    return len([sides for sides in cells.values() if len(sides) == 2])


@pytest.mark.parametrize("xy", [_uniform(), _clustered()], ids=["uniform", "clustered"])
def test_no_block_holds_both_train_and_validation_points(xy: np.ndarray) -> None:
    val = spatial_block_split(xy, 500.0, val_fraction=0.2, seed=3)
    assert val.dtype == bool and val.shape == (len(xy),)
    assert _straddling_blocks(xy, 500.0, val) == 0
    assert 0.0 < val.mean() < 1.0


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_validation_share_is_about_val_fraction(fraction: float) -> None:
    xy = _uniform()
    for seed in range(3):
        share = spatial_block_split(xy, 500.0, val_fraction=fraction, seed=seed).mean()
        assert abs(share - fraction) < 0.01, (seed, share)


def test_split_is_deterministic_per_seed() -> None:
    xy = _uniform()
    a = spatial_block_split(xy, 500.0, seed=7)
    np.testing.assert_array_equal(a, spatial_block_split(xy, 500.0, seed=7))
    assert not np.array_equal(a, spatial_block_split(xy, 500.0, seed=8))


def test_groups_keep_rasters_apart() -> None:
    xy = np.tile(_uniform(400, 2000.0), (2, 1))  # two rasters with the same pixel coordinates
    groups = np.repeat([0, 1], 400)
    blocks = block_ids(xy, 500.0, groups)
    assert len(np.unique(blocks)) == 2 * len(np.unique(block_ids(xy[:400], 500.0)))
    val = spatial_block_split(xy, 500.0, 0.5, seed=0, groups=groups)
    for b in np.unique(blocks):
        assert len(np.unique(val[blocks == b])) == 1
    assert not np.array_equal(val[:400], val[400:])  # same places, separate blocks


def test_edge_cases() -> None:
    xy = _uniform(50, 2000.0)
    assert spatial_block_split(np.zeros((0, 2)), 10.0).shape == (0,)
    assert not spatial_block_split(xy, 500.0, 0.0).any()
    assert spatial_block_split(xy, 500.0, 1.0).all()
    assert not spatial_block_split(xy, 1e6, 0.2).any()  # a single block: it trains
    two = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [900.0, 0.0]])
    val = spatial_block_split(two, 500.0, 0.01)  # closest would be none: still one block held out
    assert val.any() and not val.all()
    with pytest.raises(ValueError):
        spatial_block_split(xy, 0.0)
    with pytest.raises(ValueError):
        spatial_block_split(xy[:, :1], 10.0)
    with pytest.raises(ValueError):
        spatial_block_split(xy, 10.0, 1.5)


def test_default_block_size_is_two_default_crops() -> None:
    assert default_block_size(0.25) == 128.0
    assert default_block_size(0.5) == 256.0
    assert default_block_size(1.0) == 512.0
    assert default_block_size(0.5, crop_pixels=128, crops_per_block=3) == 192.0


def test_point_metrics_on_a_hand_made_confusion() -> None:
    # rows = true, columns = predicted:   class 3 is predicted once but never true
    #   0: [2, 1, 0, 0]    1: [0, 2, 0, 0]    2: [1, 0, 2, 1]    3: [0, 0, 0, 0]
    true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 0, 3])
    m = point_metrics(true, pred, num_classes=5)
    assert m["num_points"] == 9
    assert m["confusion"][:4] == [[2, 1, 0, 0, 0], [0, 2, 0, 0, 0], [1, 0, 2, 1, 0], [0, 0, 0, 0, 0]]
    assert m["accuracy"] == pytest.approx(6 / 9)
    c0, c1, c2, c3, c4 = m["per_class"]
    assert (c0["support"], c0["predicted"]) == (3, 3)
    assert (c0["precision"], c0["recall"], c0["f1"], c0["iou"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 0.5))
    assert (c1["precision"], c1["recall"], c1["f1"], c1["iou"]) == pytest.approx((2 / 3, 1.0, 0.8, 2 / 3))
    assert (c2["precision"], c2["recall"], c2["f1"], c2["iou"]) == pytest.approx((1.0, 0.5, 2 / 3, 0.5))
    assert c3 == {"class_id": 3, "support": 0, "predicted": 1, "precision": 0.0, "recall": None,
                  "f1": 0.0, "iou": 0.0}
    assert c4 == {"class_id": 4, "support": 0, "predicted": 0, "precision": None, "recall": None,
                  "f1": None, "iou": None}
    # mean over the classes present in `true` (0, 1, 2); class 3's IoU of 0 is left out
    assert m["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)


def test_point_metrics_perfect_empty_and_invalid() -> None:
    m = point_metrics(np.array([1, 1, 0]), np.array([1, 1, 0]), 3)
    assert m["accuracy"] == 1.0 and m["miou"] == 1.0
    empty = point_metrics(np.zeros(0, dtype=int), np.zeros(0, dtype=int), 3)
    assert empty["accuracy"] is None and empty["miou"] is None
    with pytest.raises(ValueError):
        point_metrics(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError):
        point_metrics(np.array([0, 1]), np.array([0]), 3)
