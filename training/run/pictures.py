"""Pictures of predictions: image | points | prediction | ground truth, in the class colours,
above a legend naming the classes (:func:`with_legend`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from handler.encode import legend_strip
from model.class_table import IGNORE_INDEX, ClassTable
from training.points.files import Points

PANEL_TITLES = ("image", "points", "prediction", "ground truth")


def draw_points(image: np.ndarray, points: Points, table: ClassTable) -> np.ndarray:
    """The image, dimmed, with each point (y, x, class) as a dot in its class colour.

    ``image`` (H, W, 3) uint8 -> (H, W, 3) uint8. Dots scale with the image (radius >= 2 px).
    """
    canvas = Image.fromarray((image.astype(np.float32) * 0.55).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    radius = max(2, round(min(image.shape[:2]) / 120))
    for y, x, c in points.tolist():
        draw.ellipse((x - radius, y - radius, x + radius, y + radius),
                     fill=tuple(table.colors[c]), outline=(255, 255, 255))
    return np.asarray(canvas)


def comparison_picture(image: np.ndarray, points: Points, prediction: np.ndarray,
                       truth: np.ndarray | None, table: ClassTable) -> np.ndarray:
    """Four panels side by side with titles, above the class legend: (H + 16 + L, 4 W + 12, 3)
    uint8 (L: the legend's height, :func:`with_legend`).

    ``prediction`` and ``truth`` are (H, W) class ids; 255 shows black (see ClassTable.palette).
    ``truth`` None (no mask exists) leaves the last panel grey, titled "no mask".
    """
    h, w = prediction.shape
    last = table.colorize(truth) if truth is not None else np.full((h, w, 3), 200, np.uint8)
    panels = [image, draw_points(image, points, table), table.colorize(prediction), last]
    titles = PANEL_TITLES if truth is not None else (*PANEL_TITLES[:3], "no mask")
    return with_legend(titled_panels(panels, titles), table)


def with_legend(picture: np.ndarray, table: ClassTable) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 above a white strip naming each class beside a swatch of its
    colour (handler.encode.legend_strip, wrapped to W): (H + L, W, 3) uint8, L >= 18."""
    return np.concatenate([picture, legend_strip(table, picture.shape[1])], axis=0)


class RasterCanvas:
    """A raster of (height, width) pixels shrunk to at most ``side`` px on its longest side, on
    which predicted cells (and their mask cells) are pasted one by one: a picture of a whole
    validation raster in bounded memory. Pixels of cells never pasted stay 255 (black)."""

    def __init__(self, height: int, width: int, side: int = 512) -> None:
        self.scale = min(1.0, side / max(height, width))
        self.height, self.width = height, width
        self.shape = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
        self.prediction = np.full(self.shape, IGNORE_INDEX, np.uint8)
        self.truth: Optional[np.ndarray] = None

    def _rows_cols(self, y0: int, x0: int, h: int, w: int
                   ) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """Canvas slices covering the cell and, for each canvas pixel, the cell pixel nearest
        its centre."""
        r0, r1 = round(y0 * self.scale), round((y0 + h) * self.scale)
        c0, c1 = round(x0 * self.scale), round((x0 + w) * self.scale)
        rows = np.clip(((np.arange(r0, r1) + 0.5) / self.scale).astype(int) - y0, 0, h - 1)
        cols = np.clip(((np.arange(c0, c1) + 0.5) / self.scale).astype(int) - x0, 0, w - 1)
        return slice(r0, r1), slice(c0, c1), rows, cols

    def paste(self, y0: int, x0: int, prediction: np.ndarray,
              truth: Optional[np.ndarray] = None) -> None:
        """Paste a cell's (h, w) predicted ids (and mask ids) whose top left is (y0, x0)."""
        rs, cs, rows, cols = self._rows_cols(y0, x0, *prediction.shape)
        self.prediction[rs, cs] = prediction[np.ix_(rows, cols)]
        if truth is not None:
            if self.truth is None:
                self.truth = np.full(self.shape, IGNORE_INDEX, np.uint8)
            self.truth[rs, cs] = truth[np.ix_(rows, cols)]

    def points(self, points: Points) -> Points:
        """(K, 3) (row, col, class) of the raster moved onto the canvas."""
        out = points.copy()
        out[:, 0] = np.clip((points[:, 0] * self.scale).astype(np.int64), 0, self.shape[0] - 1)
        out[:, 1] = np.clip((points[:, 1] * self.scale).astype(np.int64), 0, self.shape[1] - 1)
        return out

    def picture(self, image: np.ndarray, points: Points, table: ClassTable) -> np.ndarray:
        """:func:`comparison_picture` of the whole raster: ``image`` is the raster read at
        :attr:`shape` ((h, w, 3) uint8), ``points`` all its held-out points in raster pixels."""
        return comparison_picture(image, self.points(points), self.prediction, self.truth, table)


def titled_panels(panels: Sequence[np.ndarray], titles: Sequence[str], title_h: int = 16,
                  gap: int = 4) -> np.ndarray:
    """Equal-sized (H, W, 3) uint8 panels side by side on white, each under its title:
    (H + title_h, n W + (n - 1) gap, 3) uint8."""
    h, w = panels[0].shape[:2]
    out = np.full((h + title_h, len(panels) * w + (len(panels) - 1) * gap, 3), 255, dtype=np.uint8)
    for k, panel in enumerate(panels):
        out[title_h:, k * (w + gap):k * (w + gap) + w] = panel
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    for k, title in enumerate(titles):
        draw.text((k * (w + gap) + 2, 2), title, fill=(0, 0, 0))
    return np.asarray(canvas)


def save_picture(path: str | Path, picture: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
