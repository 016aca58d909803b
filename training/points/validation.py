"""Validation from points alone: a spatially blocked hold-out and point-based scores.

Neighbouring clicked points are nearly duplicates (same field, same roof, same stretch of road),
so a random hold-out measures memory, not generalisation. :func:`spatial_block_split` holds out
whole square blocks of the map instead; :func:`point_metrics` scores predictions at the held-out
points.
"""
from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_CROP_PIXELS = 256
"""Training crop side in pixels (``--crop-size`` default of training/train.py)."""

CROPS_PER_BLOCK = 2
"""Block side in training crops (see :func:`default_block_size`)."""


def default_block_size(pixel_size: float, crop_pixels: int = DEFAULT_CROP_PIXELS,
                       crops_per_block: int = CROPS_PER_BLOCK) -> float:
    """Block side in map units: ``crops_per_block * crop_pixels`` pixels of ``pixel_size`` map units.

    The default, 2 x 256 = 512 pixels (128 m at LandCover.ai's 25 cm, 256 m at 50 cm), is two
    training crops wide. A crop centred on a training point reaches half a crop (128 pixels) into
    a neighbouring block, so each validation block keeps a 256 x 256 pixel core that no such crop
    covers (a crop merely containing its point reaches up to a full crop side); and points
    closer than the objects they sit on (a field, a roof, a stretch of road: tens of metres) mostly
    share a fold. Larger blocks separate more but make the validation share coarser and noisier;
    a 9000 x 9500 pixel orthophoto still has about 330 blocks of 512 pixels. Pass ``pixel_size=1``
    for pixel coordinates.
    """
    if not pixel_size > 0 or crop_pixels < 1 or crops_per_block < 1:
        raise ValueError("pixel_size, crop_pixels and crops_per_block must be positive")
    return float(pixel_size) * crop_pixels * crops_per_block


def block_ids(points_xy: np.ndarray, block_size: float, groups: np.ndarray | None = None) -> np.ndarray:
    """Block of each point: (N,) int64, equal for points in the same block (and group).

    ``points_xy`` (N, 2) float: x, y in map units (or pixels); blocks are the squares
    ``[i * block_size, (i + 1) * block_size)`` in x and y. ``groups`` (N,) int, e.g. the raster
    index, keeps blocks of different rasters apart when their coordinates are not comparable.
    """
    xy = _check_xy(points_xy)
    if not block_size > 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    cells = np.floor(xy / block_size).astype(np.int64)
    g = np.zeros(len(xy), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    if g.shape != (len(xy),):
        raise ValueError(f"groups must have shape ({len(xy)},), got {g.shape}")
    keys = np.stack([g, cells[:, 0], cells[:, 1]], axis=1)
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def spatial_block_split(points_xy_map: np.ndarray, block_size: float, val_fraction: float = 0.2,
                        seed: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """Hold out whole blocks: (N,) bool, True for validation points.

    ``points_xy_map`` (N, 2) float: x, y in map units or pixels, ``block_size`` in the same units
    (see :func:`default_block_size`); ``groups`` as in :func:`block_ids`. Blocks are visited in a
    random order drawn from ``seed``; each is taken for validation when that brings the number of
    validation points closer to ``val_fraction * N``. With two or more blocks and
    ``0 < val_fraction < 1``, at least one block goes to each side. Points of one block never
    straddle the split. Deterministic in ``seed``.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    blocks = block_ids(points_xy_map, block_size, groups)
    n = len(blocks)
    if n == 0:
        return np.zeros(0, dtype=bool)
    counts = np.bincount(blocks)
    order = np.random.default_rng(seed).permutation(len(counts))
    target = val_fraction * n
    chosen = np.zeros(len(counts), dtype=bool)
    total = 0
    for b in order:
        if abs(total + counts[b] - target) < abs(total - target):
            chosen[b] = True
            total += int(counts[b])
    if len(counts) >= 2 and 0.0 < val_fraction < 1.0:
        if not chosen.any():
            chosen[order[np.argmin(counts[order])]] = True
        elif chosen.all():
            chosen[order[np.argmin(counts[order])]] = False
    return chosen[blocks]


def _check_xy(points_xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(points_xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {xy.shape}")
    if not np.isfinite(xy).all():
        raise ValueError("point coordinates must be finite")
    return xy


def point_metrics(true: np.ndarray, pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Scores at labelled points: an *estimate* of the dense scores, from a few pixels.

    ``true`` and ``pred`` are (N,) integer class ids in 0..num_classes-1. Returns::

        {"num_points": N,
         "accuracy": correct / N,                      # None when N = 0
         "miou": mean IoU over classes present in true,  # None when N = 0
         "confusion": C x C nested list, row = true class, column = predicted,
         "per_class": [{"class_id", "support" (true points), "predicted" (predicted points),
                        "precision", "recall", "f1", "iou"}, ...]}

    Per class, with TP / FP / FN counted over points: precision = TP / (TP + FP) (None when the
    class is never predicted), recall = TP / (TP + FN) (None when it has no points),
    F1 = 2 TP / (2 TP + FP + FN) and IoU = TP / (TP + FP + FN) (None when the class is in neither).
    The point mIoU estimates the dense mIoU: points are a sample of pixels, not all of them,
    clicked where a person was sure (often far from class borders, where most errors are), so
    it is usually optimistic and noisy when classes have few points.
    """
    t = np.asarray(true).reshape(-1)
    p = np.asarray(pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"true and pred differ in length: {t.size} vs {p.size}")
    if num_classes < 1:
        raise ValueError("num_classes must be at least 1")
    for name, a in (("true", t), ("pred", p)):
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must hold integer class ids in 0..{num_classes - 1}")
    cm = np.bincount(t.astype(np.int64) * num_classes + p.astype(np.int64),
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    per_class = [_class_scores(c, int(tp[c]), int(support[c]), int(predicted[c])) for c in range(num_classes)]
    present = [s["iou"] for s in per_class if s["support"] > 0]
    return {
        "num_points": int(t.size),
        "accuracy": float(tp.sum() / t.size) if t.size else None,
        "miou": float(np.mean(present)) if present else None,
        "confusion": cm.astype(np.int64).tolist(),
        "per_class": per_class,
    }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _class_scores(class_id: int, tp: int, support: int, predicted: int) -> dict[str, Any]:
    fp, fn = predicted - tp, support - tp
    return {
        "class_id": class_id,
        "support": support,
        "predicted": predicted,
        "precision": _ratio(tp, predicted),
        "recall": _ratio(tp, support),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
    }
