"""How visible the tiling is in a class map: the seam index.

Along each axis, a map gets a *change rate* per line between neighbouring pixels: the share of
pixel pairs across that line whose classes differ (pairs with no data, 255, left out). A map
whose tiles disagree shows it on the lines where one tile's share ends and the next begins
(the middles of the overlap strips, :func:`strip_lines`), so

    seam index = worst strip line's change rate / median change rate of all lines

per axis. About 1 means the tiling cannot be seen; a hard split between tiles that disagree gave
about 27 on real photographs (docs/predict.md). The *strip ratio* catches a transition spread
over the strip instead of one line: the mean rate over every line inside the overlap strips
divided by the mean over lines outside them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from handler.tiling import axis_spans

NODATA = 255


def change_rates(classes: np.ndarray, axis: int) -> np.ndarray:
    """Per line, the share of differing neighbour pairs across it.

    ``classes``: (H, W) uint8 class ids, 255 no data. ``axis`` 1: lines between columns,
    (W - 1,) rates where entry ``x - 1`` is the line between columns ``x - 1`` and ``x``;
    ``axis`` 0: the same between rows, (H - 1,). A line with no valid pair gets NaN.
    """
    a = np.moveaxis(classes, axis, 0)
    before, after = a[:-1], a[1:]
    valid = (before != NODATA) & (after != NODATA)
    differ = (before != after) & valid
    pairs = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, differ.sum(axis=1) / np.maximum(pairs, 1), np.nan)


def strip_lines(length: int, tile: int, overlap: int, margin: Optional[int] = None
                ) -> tuple[list[int], list[int]]:
    """The tiling's lines along an axis of ``length`` pixels, as indices into
    :func:`change_rates` (line ``i`` lies between pixels ``i`` and ``i + 1``): the strip
    middles (where a hard split puts its seams) and every line inside an overlap strip."""
    spans = axis_spans(length, tile, overlap, margin)
    middles = [keep[0] - 1 for _, keep in spans[1:]]
    inside: list[int] = []
    for (start, _), (next_start, _) in zip(spans, spans[1:]):
        inside += list(range(max(0, next_start), min(length - 1, start + tile - 1)))
    return middles, sorted(set(inside))


@dataclass(frozen=True)
class SeamReport:
    """Seam indices (worst strip-middle line / median line) and strip ratios (mean over strip
    lines / mean over the other lines) of columns and rows; ``worst``: the larger index."""

    columns: float
    rows: float
    strip_columns: float
    strip_rows: float
    median_change: float

    @property
    def worst(self) -> float:
        return max(self.columns, self.rows)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "worst": self.worst}


def _axis_scores(classes: np.ndarray, axis: int, tile: int, overlap: int,
                 margin: Optional[int]) -> tuple[float, float, float]:
    rates = change_rates(classes, axis)
    middles, inside = strip_lines(classes.shape[axis], tile, overlap, margin)
    if not middles:
        return 1.0, 1.0, float(np.nanmedian(rates)) if rates.size else 0.0
    floor = 1.0 / classes.shape[1 - axis]   # one differing pair per line: no division by zero
    median = max(float(np.nanmedian(rates)), floor)
    worst = float(np.nanmax(rates[middles]))
    outside = np.ones(rates.size, dtype=bool)
    outside[inside] = False
    strip = float(np.nanmean(rates[inside])) / max(float(np.nanmean(rates[outside])), floor)
    return worst / median, strip, median


def seam_index(classes: np.ndarray, tile: int, overlap: int,
               margin: Optional[int] = None) -> SeamReport:
    """The :class:`SeamReport` of a (H, W) uint8 class map tiled with ``tile`` / ``overlap``
    (``margin``: the reflected context, as in :func:`handler.tiling.axis_spans`)."""
    cols, strip_cols, median = _axis_scores(classes, 1, tile, overlap, margin)
    rows, strip_rows, _ = _axis_scores(classes, 0, tile, overlap, margin)
    return SeamReport(cols, rows, strip_cols, strip_rows, median)
