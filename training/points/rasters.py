"""Training from a point layer over rasters of any size: windowed crops and a spatial hold-out.

A user brings rasters (GeoTIFF orthophotos of any size, or plain tiles) and the points they
clicked (:mod:`training.points.layer` matches them to pixels). Nothing here loads a raster
whole: every crop is one windowed read through rasterio, so a 20000 x 20000 GeoTIFF trains in
the memory of a few crops (GDAL reads only the blocks a window touches).

- :func:`split_points` holds out whole square blocks of each raster (``--val-fraction``,
  block side ``--val-block`` pixels, default :func:`training.points.validation.default_block_size`
  = two crop sides), or every point of the rasters named for validation (``--val-images``).
- :class:`RasterPointDataset` makes the training crops. A share ``random_share`` of them
  (``--random-crops``, default :data:`RANDOM_CROP_SHARE`) lies anywhere on the raster, as
  :func:`training.data.sources.random_crop` places it, with the same random draws (so ``--random-crops 1``
  sees exactly the crops of the simulated-points path over the same images and seed); the
  others hold a training point of the raster at a uniformly drawn position of the crop. On a
  large raster a random crop rarely holds a point: random crops show the network the rest of
  the scene (its BatchNorm statistics) and feed the Gated CRF term, point crops carry the labels.
- :func:`training_scaling` measures the one :class:`handler.scaling.BandScaling` of rasters that
  are not 8-bit, over all the run's rasters (``--images`` and ``--val-images``); it travels into
  the exported model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from handler.decode import raster_bands, valid_mask
from handler.scaling import BandScaling, percentile_scaling
from model.class_table import IGNORE_INDEX
from scene.source import SAMPLE_PIXELS, SceneSource, decimated_sample, open_raster
from training.data.sources import augment, to_tensors
from training.labels.expansion import EXPANDED_OFFSET
from training.points.files import Points, points_to_label
from training.points.layer import MatchResult
from training.points.options import RANDOM_CROP_SHARE, PointInputError
from training.points.validation import block_ids, spatial_block_split


class PointTrainingError(PointInputError):
    """Rasters and points that cannot make a training run; the message is one line."""


@dataclass(frozen=True)
class PointSplit:
    """Points of each raster, split into training and validation.

    ``train[j]`` / ``val[j]``: int64 (K, 3) (row, col, class id) on ``rasters[j]``;
    ``train_ids[j]`` / ``val_ids[j]``: their feature ids (CSV: line numbers).
    """

    rasters: tuple[Path, ...]
    train: tuple[Points, ...]
    val: tuple[Points, ...]
    train_ids: tuple[np.ndarray, ...]
    val_ids: tuple[np.ndarray, ...]
    block_pixels: Optional[int] = None

    @property
    def num_train(self) -> int:
        return int(sum(len(p) for p in self.train))

    @property
    def num_val(self) -> int:
        return int(sum(len(p) for p in self.val))

    def summary(self, class_names: Sequence[str]) -> str:
        """One line: points per side and per class."""
        def per_class(parts: tuple[Points, ...]) -> str:
            ids = np.concatenate([p[:, 2] for p in parts]) if parts else np.zeros(0, np.int64)
            counts = np.bincount(ids, minlength=len(class_names))
            return ", ".join(f"{n} {c}" for n, c in zip(class_names, counts))
        how = (f"spatial blocks of {self.block_pixels} px" if self.block_pixels
               else "validation rasters")
        return (f"training points {self.num_train} ({per_class(self.train)}); validation points "
                f"{self.num_val} ({per_class(self.val)}), held out by {how}")


def split_points(match: MatchResult, val_fraction: float, block_pixels: int, seed: int,
                 val_rasters: Sequence[int] = ()) -> PointSplit:
    """Hold out validation points: every point of the rasters ``val_rasters`` (indices into
    ``match.rasters``) when given, else whole blocks of ``block_pixels`` x ``block_pixels`` pixels
    of each raster, about ``val_fraction`` of the points, drawn by ``seed``
    (:func:`training.points.validation.spatial_block_split`, blocks of different rasters apart).
    Raises :class:`PointTrainingError` when either side ends up empty."""
    counts = [len(p) for p in match.points]
    if val_rasters:
        chosen = set(val_rasters)
        is_val = [np.full(n, j in chosen, dtype=bool) for j, n in enumerate(counts)]
        block = None
    else:
        points = np.concatenate(match.points) if sum(counts) else np.zeros((0, 3), np.int64)
        groups = np.repeat(np.arange(len(counts)), counts)
        xy = points[:, [1, 0]].astype(np.float64)
        flat = spatial_block_split(xy, block_pixels, val_fraction, seed, groups)
        is_val = np.split(flat, np.cumsum(counts)[:-1])
        block = block_pixels
        if val_fraction > 0 and not flat.any():
            blocks = len(np.unique(block_ids(xy, block_pixels, groups)))
            raise PointTrainingError(
                f"cannot hold out validation points: the {len(flat)} usable points lie in "
                f"{blocks} block(s) of {block_pixels} px; pass a smaller --val-block or "
                f"--val-images")
    split = PointSplit(
        rasters=match.rasters,
        train=tuple(p[~v] for p, v in zip(match.points, is_val)),
        val=tuple(p[v] for p, v in zip(match.points, is_val)),
        train_ids=tuple(i[~v] for i, v in zip(match.feature_ids, is_val)),
        val_ids=tuple(i[v] for i, v in zip(match.feature_ids, is_val)),
        block_pixels=block,
    )
    if val_rasters and not split.num_val:
        raise PointTrainingError("the --val-images hold no usable point: validate with "
                                 "--val-fraction instead, or name rasters that hold points")
    if not split.num_train:
        raise PointTrainingError("no training points left after holding out the validation "
                                 "points; lower --val-fraction or name fewer --val-images")
    return split


def training_scaling(rasters: Sequence[Path]) -> Optional[BandScaling]:
    """The band scaling of the rasters that are not 8-bit (2nd-98th percentile per band over
    the valid pixels of a decimated read of each, :data:`scene.source.SAMPLE_PIXELS` in all), or
    None when every raster is 8-bit. Raises PointTrainingError when their band counts differ."""
    samples: list[np.ndarray] = []
    counts = set()
    wide = [r for r in rasters if _dtype(r) != np.uint8]
    for path in wide:
        with open_raster(path) as src:
            bands = raster_bands(src)
            counts.add(len(bands))
            sample, valid = decimated_sample(src, bands, SAMPLE_PIXELS // len(wide))
        flat = sample.reshape(len(bands), -1).astype(np.float64)
        if valid is not None:
            flat = flat[:, valid.reshape(-1)]
        samples.append(flat)
    if not samples:
        return None
    if len(counts) > 1:
        raise PointTrainingError(f"the training rasters that are not 8-bit have different band "
                                 f"counts ({sorted(counts)}); one model needs one band layout")
    joined = np.concatenate(samples, axis=1)
    return percentile_scaling(joined[:, None, :])


def _dtype(path: Path) -> np.dtype:
    with open_raster(path) as src:
        return np.dtype(src.dtypes[0])


def read_crop(source: SceneSource, y0: int, x0: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``crop`` x ``crop`` window at (``y0``, ``x0``) (inside the raster; a raster smaller
    than ``crop`` is padded at the bottom / right with 0): (crop, crop, 3) uint8 and the
    (crop, crop) bool valid mask (False on nodata and padding)."""
    from rasterio.windows import Window as RioWindow

    h, w = min(crop, source.height - y0), min(crop, source.width - x0)
    box = RioWindow(x0, y0, w, h)
    image = np.zeros((crop, crop, 3), dtype=np.uint8)
    image[:h, :w] = source.rgb(source.dataset.read(source.bands, window=box))
    valid = np.zeros((crop, crop), dtype=bool)
    inside = valid_mask(source.dataset, box)
    valid[:h, :w] = True if inside is None else inside
    return image, valid


def points_in_window(points: Points, y0: int, x0: int, height: int, width: int) -> Points:
    """The points (K, 3) inside rows ``y0 .. y0+height`` and columns ``x0 .. x0+width``, in the
    window's own coordinates."""
    rows, cols = points[:, 0] - y0, points[:, 1] - x0
    keep = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return np.stack([rows[keep], cols[keep], points[keep, 2]], axis=1).astype(np.int64)


class RasterPointDataset(Dataset):
    """Training crops of rasters read window by window, labelled by points.

    ``rasters[j]`` with its training points ``points[j]`` (K_j, 3) (row, col, class). Item
    ``draw`` is a crop of raster ``draw % len(rasters)``: image float32 (3, crop, crop) in [0, 1],
    label int64 (crop, crop): the class at the points inside the crop, 255 elsewhere, and
    ``pad_label`` on nodata and padding (255 for plain pfCE; the weakly supervised losses take
    :data:`training.labels.expansion.PADDING`). Its randomness comes from (seed, epoch, draw), as in
    :class:`training.data.sources.PointSupervisedDataset`: reproducible, fresh crops on every draw.
    """

    def __init__(self, rasters: Sequence[Path], points: Sequence[Points], seed: int, crop: int,
                 scaling: Optional[BandScaling] = None, random_share: float = RANDOM_CROP_SHARE,
                 augment: bool = True, pad_label: int = IGNORE_INDEX) -> None:
        if len(rasters) != len(points) or not rasters:
            raise ValueError("one array of points per raster, and at least one raster")
        self.rasters = tuple(Path(r) for r in rasters)
        self.points = tuple(np.asarray(p, dtype=np.int64).reshape(-1, 3) for p in points)
        self.seed, self.crop, self.scaling = seed, crop, scaling
        self.random_share, self.augment, self.pad_label = random_share, augment, pad_label
        self.epoch = 0
        self._sources: dict[int, SceneSource] = {}
        self.forest_labels: Optional[list[Any]] = None

    def use_forest_labels(self, labels: Sequence[Any]) -> None:
        """Label, besides the points, every pixel of raster ``j`` that ``labels[j]`` gives a class
        (``labels[j].window(y0, x0, h, w)`` -> (h, w) uint8, 255: none; see
        :class:`training.labels.raster_forest.BlockLabels`), as expanded labels (packed targets,
        see :mod:`training.labels.expansion`); needs ``pad_label`` PADDING."""
        self.forest_labels = list(labels)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sources"] = {}  # open datasets stay in their process (DataLoader workers)
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rasters)

    def source(self, index: int) -> SceneSource:
        """Raster ``index``, opened once per process."""
        if index not in self._sources:
            self._sources[index] = SceneSource(self.rasters[index], self.scaling)
        return self._sources[index]

    def crop_origin(self, index: int, draw: int, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left (row, col) of draw ``draw``'s crop of raster ``index``, inside the raster."""
        src, crop = self.source(index), self.crop
        span_y, span_x = max(src.height, crop) - crop + 1, max(src.width, crop) - crop + 1
        points = self.points[index]
        chooser = np.random.default_rng([self.seed, self.epoch, draw, 1])
        if len(points) and chooser.random() >= self.random_share:
            row, col, _ = points[int(chooser.integers(len(points)))]
            y = int(np.clip(row - chooser.integers(crop), 0, span_y - 1))
            x = int(np.clip(col - chooser.integers(crop), 0, span_x - 1))
            return y, x
        return int(rng.integers(span_y)), int(rng.integers(span_x))  # as training.data.sources.random_crop

    def __getitem__(self, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = draw % len(self.rasters)
        rng = np.random.default_rng([self.seed, self.epoch, draw])
        y0, x0 = self.crop_origin(index, draw, rng)
        image, valid = read_crop(self.source(index), y0, x0, self.crop)
        label = points_to_label(points_in_window(self.points[index], y0, x0, self.crop, self.crop),
                                (self.crop, self.crop))
        if self.forest_labels is not None:
            self._add_forest_labels(label, valid, index, y0, x0)
        label[~valid & (label == IGNORE_INDEX)] = self.pad_label
        if self.augment:
            image, label = augment(image, label, rng)
        return to_tensors(image, label)

    def _add_forest_labels(self, label: np.ndarray, valid: np.ndarray, index: int, y0: int,
                           x0: int) -> None:
        """Write raster ``index``'s forest labels of the crop at (``y0``, ``x0``) into ``label``
        (crop, crop) where it has no point, as expanded labels."""
        assert self.forest_labels is not None
        forest = self.forest_labels[index].window(y0, x0, self.crop, self.crop)
        take = (label == IGNORE_INDEX) & (forest != IGNORE_INDEX) & valid
        label[take] = forest[take] + EXPANDED_OFFSET
