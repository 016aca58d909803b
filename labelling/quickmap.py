"""The page's quick map: the pixel-feature forest fitted on the clicks so far, within seconds.

It is not the GeoSeg network: it is the forest peer's recipe (``training.labels.forest``) on an
overview of each raster (at most :data:`OVERVIEW_SIDE` px a side), so that a click shows its
effect in seconds on a CPU. The page says so. Suggestions for the next clicks come from the same
forest and a second opinion (``training.points.suggest``): the GeoSeg network's map where the
page has one, else a logistic regression on the same features.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from labelling.raster import Overview, RasterView
from labelling.store import Click
from model.class_table import ClassTable
from training.labels.forest import ForestSettings, class_probabilities, fit_forest, pixel_features
from training.points.suggest import second_opinion, suggest_clicks

OVERVIEW_SIDE = 1024
QUICK_TREES = 100


class QuickMapError(ValueError):
    """Too few clicks for a map."""


@dataclass(frozen=True)
class QuickMap:
    """The forest's map of one raster's overview: ``classes`` (h, w) uint8 (255 = nodata),
    ``probs`` (K, h, w) float32, ``step`` (overview pixel = ``step`` raster pixels) and the
    seconds it took."""

    classes: np.ndarray
    probs: np.ndarray
    step: int
    seconds: float

    def png(self, table: ClassTable) -> bytes:
        """The map as RGBA PNG in the table's colours, transparent on nodata."""
        return class_map_png(self.classes, table)


def class_map_png(classes: np.ndarray, table: ClassTable) -> bytes:
    """``classes`` (h, w) uint8 class ids as RGBA PNG in the table's colours; ids outside the
    table (255 = no data) transparent."""
    colours = np.zeros((256, 4), np.uint8)
    colours[:table.num_classes, :3] = np.asarray(table.colors, np.uint8)
    colours[:table.num_classes, 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(colours[classes], "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


class QuickMapper:
    """Overviews and their features, computed once per raster, and the forest of the latest
    clicks."""

    def __init__(self, views: dict[str, RasterView], table: ClassTable,
                 side: int = OVERVIEW_SIDE, trees: int = QUICK_TREES) -> None:
        self.views, self.table, self.side = views, table, side
        self.settings = ForestSettings(n_estimators=trees)
        self._cache: dict[str, tuple[Overview, np.ndarray]] = {}

    def _overview(self, name: str) -> tuple[Overview, np.ndarray]:
        """The overview of raster ``name`` and its (h, w, F) features."""
        if name not in self._cache:
            overview = self.views[name].overview(self.side)
            self._cache[name] = (overview, pixel_features(overview.rgb))
        return self._cache[name]

    def _samples(self, clicks: list[Click]) -> tuple[np.ndarray, np.ndarray]:
        """Features (N, F) and class ids (N,) of the clicks, each at its overview pixel."""
        xs, ys = [], []
        for name in sorted({c.image for c in clicks if c.image in self.views}):
            overview, features = self._overview(name)
            view = self.views[name]
            h, w = overview.valid.shape
            for click in (c for c in clicks if c.image == name):
                row, col = view.pixel(click.x, click.y)
                r = min(max(int(row // overview.step), 0), h - 1)
                c = min(max(int(col // overview.step), 0), w - 1)
                xs.append(features[r, c])
                ys.append(click.class_id)
        return np.asarray(xs, np.float32), np.asarray(ys, np.int64)

    def _fit(self, clicks: list[Click]) -> tuple[Any, np.ndarray, np.ndarray]:
        x, y = self._samples(clicks)
        if np.unique(y).size < 2:
            raise QuickMapError("click at least two classes for a map")
        return fit_forest(x, y, self.settings), x, y

    def map(self, name: str, clicks: list[Click]) -> QuickMap:
        """The forest of ``clicks`` (all rasters') mapping raster ``name``."""
        t0 = time.perf_counter()
        forest, _, _ = self._fit(clicks)
        overview, features = self._overview(name)
        probs = class_probabilities(forest, features, self.table.num_classes)
        classes = np.where(overview.valid, probs.argmax(0), 255).astype(np.uint8)
        return QuickMap(classes, probs, overview.step, time.perf_counter() - t0)

    def overview_shape(self, name: str) -> tuple[int, int]:
        """(h, w) of raster ``name``'s overview."""
        return self._overview(name)[0].valid.shape

    def suggestions(self, name: str, clicks: list[Click], count: int, seed: int = 0,
                    network: np.ndarray | None = None) -> list[dict[str, float]]:
        """The next ``count`` clicks on raster ``name``: [{row, col, class_id}] in raster pixels
        (pixel centres). The second opinion is ``network`` (h, w) uint8, the GeoSeg model's
        classes on the overview (255 = none), where the page has such a map, else a logistic
        regression on the forest's features."""
        forest, x, y = self._fit(clicks)
        overview, features = self._overview(name)
        probs = class_probabilities(forest, features, self.table.num_classes)
        if network is not None:
            other = np.eye(self.table.num_classes + 1, dtype=np.float32)[
                np.minimum(network, self.table.num_classes)].transpose(2, 0, 1)[:-1]
        else:
            other = class_probabilities(second_opinion(x, y, seed), features,
                                        self.table.num_classes)
        view = self.views[name]
        done = []
        for click in (c for c in clicks if c.image == name):
            row, col = view.pixel(click.x, click.y)
            done.append((int(row // overview.step), int(col // overview.step), click.class_id))
        h, w = overview.valid.shape
        have = np.clip(np.asarray(done, np.int64).reshape(-1, 3), 0, [h - 1, w - 1, 255])
        picks = suggest_clicks(probs, other, have, count, np.random.default_rng(seed),
                               overview.valid)
        return [{"row": (int(r) + 0.5) * overview.step, "col": (int(c) + 0.5) * overview.step,
                 "class_id": int(k)} for r, c, k in picks]
