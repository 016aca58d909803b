"""Forest labels of rasters of any size (``geoseg train --images ... --points ... --expand
forest``): the forest of :mod:`training.labels.forest` fitted on a point layer's training points
and run over each raster block by block. Apart from that module because it reads rasters (the GIS
stack), which a run on a dataset with masks never loads."""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from model.class_table import IGNORE_INDEX
from scene.source import Window
from training.labels.forest import (
    FEATURE_BLOCK,
    FEATURE_MARGIN,
    FOREST_THRESHOLD,
    FeatureStack,
    ForestLabelStats,
    ForestSamples,
    ForestSettings,
    Timings,
    class_probabilities,
    feature_blocks,
    features_at,
    progress_over,
    sure_classes,
    timed_features,
)
from training.points.files import Points

RASTER_BLOCK = FEATURE_BLOCK
"""Side in pixels of the blocks a raster is read in for its forest labels (every raster, large
or small, costs the same memory: see :data:`~training.labels.forest.FEATURE_BLOCK`)."""


def raster_blocks(height: int, width: int, block: int = RASTER_BLOCK,
                  margin: int = FEATURE_MARGIN) -> list[tuple[Window, Window]]:
    """(kept, read) windows covering a ``height`` x ``width`` raster: each kept block of at most
    ``block`` x ``block`` pixels, read with up to ``margin`` pixels of context (within the
    raster): :func:`~training.labels.forest.feature_blocks` as windows."""
    return [(Window(*keep), Window(*read)) for keep, read in
            feature_blocks(height, width, block, margin)]


class BlockLabels:
    """The forest labels of one raster, kept for the blocks that were labelled: ``blocks`` maps a
    block's (row, column) origin, a multiple of ``block``, to its (h, w) uint8 labels (a class,
    or 255)."""

    def __init__(self, height: int, width: int, block: int) -> None:
        self.height, self.width, self.block = height, width, block
        self.blocks: dict[tuple[int, int], np.ndarray] = {}

    def window(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        """(height, width) uint8 labels of the window at (``y0``, ``x0``): 255 outside the
        labelled blocks and the raster. Looks up only the blocks the window meets (it runs for
        every training crop)."""
        out = np.full((height, width), IGNORE_INDEX, np.uint8)
        b = self.block
        for by in range(max(0, y0) // b * b, y0 + height, b):
            for bx in range(max(0, x0) // b * b, x0 + width, b):
                labels = self.blocks.get((by, bx))
                if labels is not None:
                    self._paste(out, y0, x0, by, bx, labels)
        return out

    @staticmethod
    def _paste(out: np.ndarray, y0: int, x0: int, by: int, bx: int, labels: np.ndarray) -> None:
        """Copy the part of block (``by``, ``bx``) inside the window at (``y0``, ``x0``)."""
        height, width = out.shape
        top, left = max(y0, by), max(x0, bx)
        bottom, right = min(y0 + height, by + labels.shape[0]), min(x0 + width, bx + labels.shape[1])
        if top < bottom and left < right:
            out[top - y0:bottom - y0, left - x0:right - x0] = labels[top - by:bottom - by,
                                                                     left - bx:right - bx]

    def counts(self) -> tuple[int, int]:
        """(pixels labelled, pixels of the labelled blocks)."""
        return (sum(int((b != IGNORE_INDEX).sum()) for b in self.blocks.values()),
                sum(b.size for b in self.blocks.values()))


class RasterForestLabels:
    """Forest labels of rasters of any size: ``sources[j]`` (a :class:`scene.source.SceneSource`,
    read as training reads it) with its training points ``points[j]`` (K_j, 3) (row, col, class
    id). The forest is fitted on every point, then labels, block by block
    (:func:`raster_blocks`), the blocks within ``reach`` pixels of a point (the training crops
    hold a point; pass the crop side), so a large raster with a few clicks costs a few blocks, not
    its whole area. ``labels[j]`` (:class:`BlockLabels`): the class where the forest is sure
    (largest probability at least ``threshold``) and the pixel is valid, 255 elsewhere. Memory:
    one byte per pixel of the labelled blocks, and the features of one block (with its context)
    at a time."""

    def __init__(self, sources: Sequence[Any], points: Sequence[Points], num_classes: int,
                 threshold: float = FOREST_THRESHOLD, stack: FeatureStack = FeatureStack(),
                 settings: ForestSettings = ForestSettings(), progress: Any = None,
                 block: int = RASTER_BLOCK, reach: int = 256) -> None:
        self.stack, self.timings, self.block = stack, Timings(), block
        xs, ys = [], []
        for source, raster_points in progress_over(list(zip(sources, points)), progress,
                                                   "forest features"):
            rows: np.ndarray | None = None
            for keep, features, _ in self._blocks(source, with_points=raster_points):
                if rows is None:
                    rows = np.zeros((len(raster_points), features.shape[-1]), np.float32)
                order, inside = points_in_block(raster_points, keep)
                rows[order] = features_at(features, inside)[0]
            if rows is None:
                continue
            xs.append(rows)   # in the points' own order, whatever the blocks: the same forest
            ys.append(raster_points[:, 2].astype(np.int64))
        y_all = np.concatenate(ys) if ys else np.zeros(0, np.int64)
        if y_all.size == 0:
            raise ValueError("the forest needs at least one clicked point")
        self.samples = ForestSamples(np.concatenate(xs), y_all, stack, settings)
        self.forest = self.samples.fit(self.timings)
        self.clicks = int(y_all.size)
        self.labels: list[BlockLabels] = []
        for source, raster_points in progress_over(list(zip(sources, points)), progress,
                                                   "forest labels"):
            out = BlockLabels(source.height, source.width, block)
            for keep, features, valid in self._blocks(source, near=(raster_points, reach)):
                t0 = time.perf_counter()
                probs = class_probabilities(self.forest, features, num_classes)
                self.timings.predict += time.perf_counter() - t0
                classes = sure_classes(probs, threshold)
                if valid is not None:
                    classes[~valid] = IGNORE_INDEX
                out.blocks[(keep.y0, keep.x0)] = classes
            self.labels.append(out)

    def _blocks(self, source: Any, with_points: Points | None = None,
                near: tuple[Points, int] | None = None
                ) -> Iterable[tuple[Window, np.ndarray, np.ndarray | None]]:
        """(kept window, (h, w, F) features of the kept block, (h, w) valid mask or None) of the
        blocks holding one of ``with_points``, or within ``near = (points, reach)`` of a point."""
        for keep, read in raster_blocks(source.height, source.width, self.block):
            if with_points is not None and not len(points_in_block(with_points, keep)[0]):
                continue
            if near is not None and not len(points_in_block(near[0], grown(keep, near[1]))[0]):
                continue
            bands, valid = source.read(read)
            features = timed_features(source.rgb(bands), self.stack, self.timings)
            inner = (slice(keep.y0 - read.y0, keep.y1 - read.y0),
                     slice(keep.x0 - read.x0, keep.x1 - read.x0))
            yield keep, features[inner], None if valid is None else valid[inner]

    def stats(self) -> ForestLabelStats:
        """Share of the labelled blocks' pixels given a class, and seconds spent."""
        counts = [label.counts() for label in self.labels]
        return ForestLabelStats.of(len(self.labels), self.clicks, sum(c[0] for c in counts),
                                   sum(c[1] for c in counts), self.timings)


def points_in_block(points: Points, keep: Window) -> tuple[np.ndarray, Points]:
    """The indices (M,) of the points (K, 3) inside ``keep``, and those points (M, 3) in the
    block's own coordinates."""
    rows, cols = points[:, 0] - keep.y0, points[:, 1] - keep.x0
    inside = (rows >= 0) & (rows < keep.y1 - keep.y0) & (cols >= 0) & (cols < keep.x1 - keep.x0)
    moved = np.stack([rows[inside], cols[inside], points[inside, 2]], axis=1).astype(np.int64)
    return np.flatnonzero(inside), moved


def grown(window: Window, by: int) -> Window:
    """``window`` grown by ``by`` pixels on every side."""
    return Window(window.y0 - by, window.y1 + by, window.x0 - by, window.x1 + by)
