"""How visible the tiling is in a class map: the seam index.

Along each axis, a map gets a *change rate* per line between neighbouring pixels: the share of
pixel pairs across that line whose classes differ (pairs with no data, 255, left out). Tiles
that disagree show it on the lines where one tile's share ends and the next begins (the middles
of the overlap strips, and the strips' edges: :func:`strip_lines`), so per axis

    seam index = mean change rate of the tiling's lines / median change rate of all lines,

taking the worst of three sets of tiling lines: the strip middles (where a hard split joins
tiles) and the strips' two edges (where a tile begins or ends).

About 1 means the tiling cannot be seen; a hard split between tiles that disagree gave about 40
on a mosaic of real photographs (docs/predict.md). The mean over the strip lines, not the
worst of them, is compared: on real photographs the lines' own rates spread widely (on the
dubai mosaic of docs/predict.md the 90th percentile line of the true mask changes 2.4 times as
often as the median one, and its worst strip line scores 2.2 against the median), so the worst
line measures where the roads run as much as the tiling. :class:`SeamReport` still gives the
worst line (``worst_columns`` / ``worst_rows``) and the *strip ratio*, which catches a
transition spread over the strip instead of one line: the mean rate over every line inside the
overlap strips divided by the mean over lines outside them.
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
                ) -> tuple[list[list[int]], list[int]]:
    """The tiling's lines along an axis of ``length`` pixels, as indices into
    :func:`change_rates` (line ``i`` lies between pixels ``i`` and ``i + 1``): the three sets of
    lines where a tiling can put a seam (the strip middles, where a hard split joins tiles, and
    the strips' two edges, where a tile begins and ends) and every line inside a strip."""
    spans = axis_spans(length, tile, overlap, margin)
    sets: list[list[int]] = [[], [], []]
    inside: list[int] = []
    for (start, _), (next_start, (keep_from, _)) in zip(spans, spans[1:]):
        end = start + tile
        for k, line in enumerate((keep_from - 1, next_start - 1, end - 1)):
            if 0 <= line < length - 1:
                sets[k].append(line)
        inside += list(range(max(0, next_start), min(length - 1, end - 1)))
    return [sorted(set(lines)) for lines in sets if lines], sorted(set(inside))


@dataclass(frozen=True)
class SeamReport:
    """Per axis (columns: vertical lines, rows: horizontal lines): the seam index (mean over a
    set of tiling lines / median line, the worst set), the worst single tiling line / median
    line, and the strip ratio (mean over strip lines / mean over the other lines); ``worst``:
    the larger seam index."""

    columns: float
    rows: float
    worst_columns: float
    worst_rows: float
    strip_columns: float
    strip_rows: float
    median_change: float

    @property
    def worst(self) -> float:
        return max(self.columns, self.rows)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "worst": self.worst}


def _axis_scores(classes: np.ndarray, axis: int, tile: int, overlap: int,
                 margin: Optional[int]) -> tuple[float, float, float, float]:
    """(seam index, worst line index, strip ratio, median rate) of one axis."""
    rates = change_rates(classes, axis)
    line_sets, inside = strip_lines(classes.shape[axis], tile, overlap, margin)
    median = float(np.nanmedian(rates)) if rates.size else 0.0
    if not line_sets:
        return 1.0, 1.0, 1.0, median
    floor = 1.0 / classes.shape[1 - axis]   # one differing pair per line: no division by zero
    typical = max(median, floor)
    index = max(float(np.nanmean(rates[lines])) for lines in line_sets) / typical
    worst = max(float(np.nanmax(rates[lines])) for lines in line_sets) / typical
    outside = np.ones(rates.size, dtype=bool)
    outside[inside] = False
    strip = float(np.nanmean(rates[inside])) / max(float(np.nanmean(rates[outside])), floor)
    return index, worst, strip, median


def seam_index(classes: np.ndarray, tile: int, overlap: int,
               margin: Optional[int] = None) -> SeamReport:
    """The :class:`SeamReport` of a (H, W) uint8 class map tiled with ``tile`` / ``overlap``
    (``margin``: the reflected context, as in :func:`handler.tiling.axis_spans`)."""
    cols, worst_cols, strip_cols, median = _axis_scores(classes, 1, tile, overlap, margin)
    rows, worst_rows, strip_rows, _ = _axis_scores(classes, 0, tile, overlap, margin)
    return SeamReport(cols, rows, worst_cols, worst_rows, strip_cols, strip_rows, median)
