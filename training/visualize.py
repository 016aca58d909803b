"""Pictures of predictions: image | points | prediction | ground truth, in the class colours."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model.class_table import ClassTable
from training.points import Points

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
    """Four panels side by side with titles: (H + 16, 4 W + 12, 3) uint8.

    ``prediction`` and ``truth`` are (H, W) class ids; 255 shows black (see ClassTable.palette).
    ``truth`` None (no mask exists) leaves the last panel grey, titled "no mask".
    """
    h, w = prediction.shape
    last = table.colorize(truth) if truth is not None else np.full((h, w, 3), 200, np.uint8)
    panels = [image, draw_points(image, points, table), table.colorize(prediction), last]
    titles = PANEL_TITLES if truth is not None else (*PANEL_TITLES[:3], "no mask")
    return titled_panels(panels, titles)


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
