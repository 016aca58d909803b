"""The page's quick map: the pixel-feature forest fitted on the clicks so far, within seconds.

It is not the GeoSeg network: it is the forest peer's recipe (``training.labels.forest``) on an
overview of each raster (at most :data:`OVERVIEW_SIDE` px a side), so that a click shows its
effect in seconds on a CPU. The page says so. The map blends the forest's class probabilities
with their mean within the regions of a Felzenszwalb segmentation of the overview
(``training.labels.segments``: regions of similar colour, the photo's own edges kept), at
:data:`REGION_WEIGHT`: a pixel the forest is unsure of follows its region.
Suggestions for the next clicks come from the forest's own per-pixel probabilities and a second
opinion (``training.points.suggest``): the GeoSeg network's map where the page has one, else a
logistic regression on the same features.
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
from training.labels.segments import image_segments, region_blend
from training.points.suggest import second_opinion, suggest_clicks

OVERVIEW_SIDE = 1024
QUICK_TREES = 100
REGION_WEIGHT = 0.75
"""Weight of the region mean in the map, (1 - w) x the pixel's probabilities + w x its region's.
Chosen on dubai-aerial tiles 3-4 (18 photos, simulated clicks from the masks, 2-10 per class and
photo, random and suggested, 2 seeds): 0.25 / 0.5 / 0.75 / 1 raised the forest's mIoU by 1.5 /
2.9 / 3.6 / 2.8 points on average (python -m training.experiments.click_suggestions
--segments 100 --region-weights ...; docs/labelling.md)."""


class QuickMapError(ValueError):
    """Too few clicks for a map."""


@dataclass(frozen=True)
class QuickMap:
    """The forest's map of one raster's overview: ``classes`` (h, w) uint8 (255 = nodata), the
    argmax of ``probs`` (K, h, w) float32, the forest's probabilities blended with their region
    means (:data:`REGION_WEIGHT`); ``step`` (overview pixel = ``step`` raster pixels) and the
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
    alpha = np.where(classes < table.num_classes, 255, 0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([table.colorize(classes), alpha]), "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


class QuickMapper:
    """Overviews, their features and regions, computed once per raster, and the forest of the
    latest clicks."""

    def __init__(self, views: dict[str, RasterView], table: ClassTable,
                 side: int = OVERVIEW_SIDE, trees: int = QUICK_TREES) -> None:
        self.views, self.table, self.side = views, table, side
        self.settings = ForestSettings(n_estimators=trees)
        self._cache: dict[str, tuple[Overview, np.ndarray]] = {}
        self._regions: dict[str, np.ndarray] = {}
        self._last: tuple[Any, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _overview(self, name: str) -> tuple[Overview, np.ndarray]:
        """The overview of raster ``name`` and its (h, w, F) features."""
        if name not in self._cache:
            overview = self.views[name].overview(self.side)
            self._cache[name] = (overview, pixel_features(overview.rgb))
        return self._cache[name]

    def _overview_regions(self, name: str) -> np.ndarray:
        """(h, w) int64 region ids of raster ``name``'s overview (its no-data pixels apart)."""
        if name not in self._regions:
            overview = self._overview(name)[0]
            regions = image_segments(overview.rgb)
            self._regions[name] = np.where(overview.valid, regions + 1, 0)
        return self._regions[name]

    def _overview_pixel(self, name: str, click: Click) -> tuple[int, int]:
        """(row, col) of ``click`` on raster ``name``'s overview, clamped to it."""
        overview = self._overview(name)[0]
        row, col = self.views[name].pixel(click.x, click.y)
        h, w = overview.valid.shape
        return (min(max(int(row // overview.step), 0), h - 1),
                min(max(int(col // overview.step), 0), w - 1))

    def _samples(self, clicks: list[Click]) -> tuple[np.ndarray, np.ndarray]:
        """Features (N, F) and class ids (N,) of the clicks, each at its overview pixel."""
        xs, ys = [], []
        for click in sorted((c for c in clicks if c.image in self.views), key=lambda c: c.image):
            features = self._overview(click.image)[1]
            xs.append(features[self._overview_pixel(click.image, click)])
            ys.append(click.class_id)
        return np.asarray(xs, np.float32), np.asarray(ys, np.int64)

    def _forest_map(self, name: str, clicks: list[Click]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The training samples x (N, F), y (N,) of ``clicks`` and the (K, h, w) probabilities of
        their forest on raster ``name``'s overview; the last result is kept, so that "Suggest"
        after "Quick map" with the same clicks neither refits nor predicts again."""
        key = (name, tuple(clicks))
        if self._last is None or self._last[0] != key:
            x, y = self._samples(clicks)
            if np.unique(y).size < 2:
                raise QuickMapError("click at least two classes for a map")
            forest = fit_forest(x, y, self.settings)
            probs = class_probabilities(forest, self._overview(name)[1], self.table.num_classes)
            self._last = (key, x, y, probs)
        return self._last[1], self._last[2], self._last[3]

    def map(self, name: str, clicks: list[Click]) -> QuickMap:
        """The forest of ``clicks`` (all rasters') mapping raster ``name``."""
        t0 = time.perf_counter()
        probs = region_blend(self._forest_map(name, clicks)[2], self._overview_regions(name),
                             REGION_WEIGHT)
        overview = self._overview(name)[0]
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
        x, y, probs = self._forest_map(name, clicks)
        overview, features = self._overview(name)
        if network is not None:
            other = np.eye(self.table.num_classes + 1, dtype=np.float32)[
                np.minimum(network, self.table.num_classes)].transpose(2, 0, 1)[:-1]
        else:
            other = class_probabilities(second_opinion(x, y, seed), features,
                                        self.table.num_classes)
        have = np.asarray([(*self._overview_pixel(name, c), c.class_id) for c in clicks
                           if c.image == name], np.int64).reshape(-1, 3)
        picks = suggest_clicks(probs, other, have, count, np.random.default_rng(seed),
                               overview.valid)
        return [{"row": (int(r) + 0.5) * overview.step, "col": (int(c) + 0.5) * overview.step,
                 "class_id": int(k)} for r, c, k in picks]
