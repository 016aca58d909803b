"""Validation of a point-trained model on rasters of any size, from held-out points (and masks).

Each validation raster is predicted where it is needed, the way ``geoseg predict`` maps a scene:
whole when it has at most :data:`WHOLE_RASTER_PIXELS` pixels (as one request to the server),
else in ``scene.windows`` windows of the handler's tiling (``HandlerConfig``: the same tiles,
overlap and blend), only the windows that hold validation points, or all of them when a dense
mask is given. The predictions at the held-out points give the point scores
(:func:`training.points.validation.point_metrics`); a mask gives the dense confusion matrix too.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from handler.inference import HandlerConfig
from handler.scaling import BandScaling
from model.class_table import IGNORE_INDEX, ClassTable
from scene.source import SceneSource, Window, open_raster
from scene.windows import SceneWindow, keep_in_read, plan_windows
from training.data.sources import to_tensors
from training.points.files import Points
from training.points.rasters import PointTrainingError, points_in_window
from training.points.validation import point_metrics
from training.run.evaluate import Predictor
from training.run.metrics import confusion_matrix, scores
from training.run.pictures import RasterCanvas, save_picture

WHOLE_RASTER_PIXELS = 1024 * 1024
"""Validation rasters up to this many pixels are predicted as one image."""

TILES_PER_WINDOW = 2
"""A larger raster is predicted in windows of 2 x 2 tiles (``geoseg predict --tiles-per-window``)."""

PICTURE_SIDE = 512
"""Longest side in pixels of each panel of a validation picture."""


@dataclass(frozen=True)
class ValidationRaster:
    """A raster with held-out points (K, 3) (row, col, class) and an optional dense mask file
    on the same pixel grid (one band of class ids, or colours of the class table)."""

    path: Path
    points: Points
    mask: Optional[Path] = None


@dataclass
class PointValidation:
    """What one validation pass found: the true and predicted class at every held-out point,
    and the dense confusion matrix (C, C) over the masks (None without masks)."""

    true: np.ndarray
    pred: np.ndarray
    dense: Optional[np.ndarray]

    def record(self, table: ClassTable) -> dict[str, Any]:
        """The epoch record's validation fields. ``val_miou`` / ``val_pixel_accuracy`` are the
        point estimates (the best checkpoint is chosen by them); ``val_dense_*`` sit beside."""
        found = point_metrics(self.true, self.pred, table.num_classes)
        per_class = {name: s for name, s in zip(table.names, found["per_class"])}
        out: dict[str, Any] = {
            "val_miou": found["miou"] if found["miou"] is not None else 0.0,
            "val_pixel_accuracy": found["accuracy"] if found["accuracy"] is not None else 0.0,
            "val_points": found["num_points"],
            "val_iou": {name: s["iou"] for name, s in per_class.items()},
            "val_point_scores": {name: {k: s[k] for k in ("support", "precision", "recall", "f1")}
                                 for name, s in per_class.items()},
            "val_confusion": found["confusion"],
        }
        if self.dense is not None:
            dense = scores(self.dense)
            out |= {"val_dense_miou": dense.miou,
                    "val_dense_pixel_accuracy": dense.pixel_accuracy,
                    "val_dense_iou": dense.as_dict(table.names)["iou"],
                    "val_dense_confusion": self.dense.tolist()}
        return out


def pair_masks(rasters: Sequence[Path], masks: Sequence[Path]) -> dict[Path, Path]:
    """``--val-masks``: the mask of each validation raster (one each): the mask with the
    raster's file stem when every raster has one, else the masks in the order given."""
    if len(masks) != len(rasters):
        raise PointTrainingError(f"--val-masks gives {len(masks)} masks for {len(rasters)} "
                                 f"validation rasters: give one per --val-images raster")
    by_stem = {Path(m).stem: Path(m) for m in masks}
    if len(by_stem) == len(masks) and all(Path(r).stem in by_stem for r in rasters):
        masks = [by_stem[Path(r).stem] for r in rasters]
    for raster, mask in zip(rasters, masks):
        with open_raster(raster) as a, open_raster(mask) as b:
            if (a.height, a.width) != (b.height, b.width):
                raise PointTrainingError(f"{mask} is {b.width}x{b.height} pixels, its raster "
                                         f"{raster} {a.width}x{a.height}")
    return dict(zip(rasters, masks))


def read_mask(path: Path, window: Optional[Any], table: ClassTable) -> np.ndarray:
    """(h, w) uint8 class ids (255: no label) of ``window`` (None: whole) of a mask file: one band
    of ids, or three bands coloured as in ``table``."""
    with open_raster(path) as src:
        if src.count >= 3:
            rgb = np.moveaxis(src.read([1, 2, 3], window=window), 0, -1).astype(np.uint8)
            try:
                return table.mask_from_colors(rgb)
            except ValueError as exc:
                raise PointTrainingError(f"{path}: {exc}") from None
        ids = src.read(1, window=window)
    bad = (ids >= table.num_classes) & (ids != IGNORE_INDEX)
    if bad.any():
        raise PointTrainingError(f"{path}: class id {int(ids[bad][0])} is not in the class table "
                                 f"(0..{table.num_classes - 1}, 255 = no label)")
    return ids.astype(np.uint8)


def windows_to_predict(height: int, width: int, points: Points, everything: bool,
                       config: HandlerConfig) -> list[SceneWindow]:
    """The windows to predict: the whole raster when small, else the windows of
    ``geoseg predict``'s plan whose kept area holds points (all of them when ``everything``)."""
    if height * width <= WHOLE_RASTER_PIXELS:
        whole = Window(0, height, 0, width)
        return [SceneWindow(0, whole, whole, 1)]
    windows = plan_windows(height, width, config.tile_size, config.tile_overlap,
                           TILES_PER_WINDOW, config.blended)
    if everything:
        return windows
    return [w for w in windows
            if len(points_in_window(points, w.keep.y0, w.keep.x0, w.keep.y1 - w.keep.y0,
                                    w.keep.x1 - w.keep.x0))]


def predict_window(predict: Predictor, source: SceneSource, window: SceneWindow
                   ) -> np.ndarray:
    """Predicted ids (h, w) uint8 of the area ``window`` keeps: a whole raster as one image (its
    edges reflected, as the server does), a window of a larger one from its read extent, which
    carries its own context (margin 0, as ``geoseg predict`` segments it)."""
    whole = window.read == Window(0, source.height, 0, source.width)
    bands, _ = source.read(window.read)
    image = source.rgb(bands)
    x, _ = to_tensors(image, np.zeros(image.shape[:2], np.uint8))
    ids = predict(x.unsqueeze(0)) if whole else predict(x.unsqueeze(0), margin=0)
    rows, cols = keep_in_read(window)
    return ids[0].numpy().astype(np.uint8)[rows, cols]


def validate_points(predict: Predictor, rasters: Sequence[ValidationRaster], table: ClassTable,
                    scaling: Optional[BandScaling] = None, picture_dir: Optional[Path] = None,
                    max_pictures: int = 0, progress: bool = True,
                    config: Optional[HandlerConfig] = None) -> PointValidation:
    """Predict every validation raster where needed (module doc); score the held-out points,
    and the masks when given. The first ``max_pictures`` rasters also get a picture
    ``<picture_dir>/<stem>.png`` (image | held-out points | prediction | mask, and the legend) of
    the whole raster, shrunk to at most :data:`PICTURE_SIDE` px a side; windows not predicted
    show black."""
    from rasterio.windows import Window as RioWindow

    true: list[np.ndarray] = []
    pred: list[np.ndarray] = []
    dense = None
    if any(r.mask is not None for r in rasters):
        dense = np.zeros((table.num_classes, table.num_classes), dtype=np.int64)
    bar = tqdm(rasters, desc="validate", unit="raster", disable=not progress, leave=False)
    for k, raster in enumerate(bar):
        with SceneSource(raster.path, scaling) as source:
            windows = windows_to_predict(source.height, source.width, raster.points,
                                         raster.mask is not None, config or HandlerConfig())
            canvas = None
            if picture_dir is not None and k < max_pictures:
                canvas = RasterCanvas(source.height, source.width, PICTURE_SIDE)
            for window in windows:
                ids = predict_window(predict, source, window)
                keep = window.keep
                y0, x0, h, w = keep.y0, keep.x0, keep.y1 - keep.y0, keep.x1 - keep.x0
                inside = points_in_window(raster.points, y0, x0, h, w)
                true.append(inside[:, 2])
                pred.append(ids[inside[:, 0], inside[:, 1]].astype(np.int64))
                truth = None
                if raster.mask is not None and dense is not None:
                    truth = read_mask(raster.mask, RioWindow(x0, y0, w, h), table)
                    dense += confusion_matrix(ids, truth, table.num_classes)
                if canvas is not None:
                    canvas.paste(y0, x0, ids, truth)
            if canvas is not None and picture_dir is not None:
                bands = source.dataset.read(source.bands, out_shape=(len(source.bands), *canvas.shape))
                save_picture(picture_dir / f"{raster.path.stem}.png",
                             canvas.picture(source.rgb(bands), raster.points, table))
    empty = np.zeros(0, dtype=np.int64)
    return PointValidation(np.concatenate(true) if true else empty,
                           np.concatenate(pred) if pred else empty, dense)
