"""``geoseg train --images ... --points LAYER``: the data the point-layer options describe (class
table, matched and split points, band scaling, validation); the options are in
:mod:`training.points.options`."""
from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
from tqdm import tqdm

from common.cli import warn
from handler.scaling import BandScaling
from model.artifact import BAND_SCALING
from model.class_table import IGNORE_INDEX, ClassTable
from scene.source import SceneError, cap_gdal_cache, list_rasters, open_raster, reading_note
from training.labels.forest import ForestSamples
from training.labels.fusion import ForestFusion
from training.points.evaluation import ValidationRaster, pair_masks, validate_points
from training.points.layer import (
    MatchResult,
    match_points,
    read_point_layer,
    require_usable,
    resolve_classes,
)
from training.points.options import Validation
from training.points.rasters import (
    PointSplit,
    PointTrainingError,
    RasterPointDataset,
    split_points,
    training_scaling,
)
from training.points.validation import default_block_size
from training.run.evaluate import predictor

LOG = logging.getLogger(__name__)

MIN_CLASS_POINTS = 3
"""A class that the layer's own values make (no --classes) with fewer points than this is
warned about: most often a misspelt name, which would otherwise become a class of its own."""

if TYPE_CHECKING:
    from training.config import TrainConfig


def rare_classes(values: list[Any], table: ClassTable, mapping: dict[Any, int]) -> dict[str, int]:
    """Classes of ``table`` with some, but fewer than :data:`MIN_CLASS_POINTS`, of the layer's ``values``
    (mapped by ``mapping``), with their counts."""
    counts = [0] * table.num_classes
    for value in values:
        if value in mapping:
            counts[mapping[value]] += 1
    return {name: n for name, n in zip(table.names, counts) if 0 < n < MIN_CLASS_POINTS}


def reading_notes(rasters: list[Path], scaling: Optional[BandScaling]) -> list[str]:
    """One ``note:`` line per kind of raster that is not 8-bit RGB (how it is read)."""
    kinds: dict[tuple[str, int], list[Path]] = {}
    for path in rasters:
        with open_raster(path) as src:
            kinds.setdefault((src.dtypes[0], src.count), []).append(path)
    rule = ("one 2-98 % stretch per band over all the training rasters that are not 8-bit, "
            "stored in the model")
    notes = []
    for (dtype, count), paths in kinds.items():
        what = str(paths[0]) if len(paths) == 1 else f"{len(paths)} rasters ({paths[0].name}...)"
        note = reading_note(what, dtype, count, rule)
        if note:
            notes.append(note)
    return notes


@dataclass
class PointData:
    """What a point-layer run trains and validates on."""

    table: ClassTable
    match: MatchResult
    split: PointSplit
    scaling: Optional[BandScaling]
    masks: dict[Path, Path]
    forest_stats: Optional[dict[str, Any]] = None
    """What ``--expand forest`` labelled (set by :meth:`dataset`)."""
    forest_samples: Optional[ForestSamples] = None
    """What that forest was fitted on (set by :meth:`dataset`)."""

    def dataset(self, args: argparse.Namespace | TrainConfig, pad_label: int = IGNORE_INDEX) -> RasterPointDataset:
        """The training crops: rasters that hold training points."""
        keep = [j for j, p in enumerate(self.split.train) if len(p)]
        dataset = RasterPointDataset([self.split.rasters[j] for j in keep],
                                     [self.split.train[j] for j in keep], args.seed, args.crop_size,
                                     self.scaling, args.random_crops, augment=True,
                                     pad_label=pad_label)
        if args.expand == "forest":
            from training.labels.raster_forest import RasterForestLabels

            bar = None if args.no_progress else partial(tqdm, unit="raster", leave=False)
            sources = [dataset.source(j) for j in range(len(dataset))]
            forest = RasterForestLabels(sources, dataset.points, self.table.num_classes,
                                        args.forest_threshold, progress=bar, reach=args.crop_size)
            dataset.use_forest_labels(forest.labels)
            stats = forest.stats()
            self.forest_stats = asdict(stats)
            self.forest_samples = forest.samples
            LOG.info(stats.summary(f"the pixels near the points of {stats.images} rasters"))
        return dataset

    def validation_rasters(self) -> list[ValidationRaster]:
        return [ValidationRaster(path, points, self.masks.get(path))
                for path, points in zip(self.split.rasters, self.split.val)
                if len(points) or path in self.masks]

    def validation(self, amp: bool) -> Validation:
        rasters, table, scaling = self.validation_rasters(), self.table, self.scaling

        def run(model: torch.nn.Module, device: torch.device, progress: bool,
                pictures: Optional[Path], max_pictures: int,
                fusion: Optional[ForestFusion] = None) -> dict[str, Any]:
            found = validate_points(predictor(model, device, amp, fusion=fusion), rasters, table,
                                    scaling, pictures, max_pictures, progress)
            return found.record(table)
        return run

    def config(self) -> dict[str, Any]:
        """The run's point-layer facts, for metrics.json."""
        return {"point_layer": str(self.match.layer.path), "class_field": self.match.layer.class_field,
                "point_counts": self.match.counts(), "train_points": self.split.num_train,
                "val_points": self.split.num_val, "val_block_pixels": self.split.block_pixels,
                "rasters": [str(p) for p in self.split.rasters],
                BAND_SCALING: self.scaling.to_meta() if self.scaling else None} | (
                    {"forest_labels": self.forest_stats} if self.forest_stats else {})


def prepare_points(args: argparse.Namespace | TrainConfig, table: Optional[ClassTable]) -> PointData:
    """Read the layer, choose the class table (``table``: from --classes), match the points to
    the rasters (their rejects printed one per line), split them, measure the band scaling."""
    cap_gdal_cache()
    if args.images is None or args.points is None:
        raise PointTrainingError("give --images and --points (rasters and the points clicked on them)")
    try:
        rasters = list(dict.fromkeys(list_rasters(args.images, "--images")))
        val_paths = list(dict.fromkeys(list_rasters(args.val_images, "--val-images"))
                         if args.val_images else [])
    except SceneError as exc:
        raise PointTrainingError(str(exc)) from None
    rasters += [p for p in val_paths if p not in rasters]
    layer = read_point_layer(args.points, args.class_field, args.csv_crs)
    given = table is not None
    table, mapping = resolve_classes(layer.values(), table)
    if not given:
        for name, count in rare_classes(layer.values(), table, mapping).items():
            warn(f"class {name!r} has only {count} point{'s' if count != 1 else ''} (fewer than "
                 f"{MIN_CLASS_POINTS}): a misspelt class name? It is trained as a class of its "
                 f"own; pass --classes with the class table to refuse unknown names")
    match = require_usable(match_points(layer, rasters, table, mapping))
    LOG.info(match.report())
    block = args.val_block or int(default_block_size(1.0, args.crop_size))
    split = split_points(match, args.val_fraction, block, args.seed,
                         [rasters.index(p) for p in val_paths])
    LOG.info(split.summary(table.names))
    masks = pair_masks(val_paths, args.val_masks) if args.val_masks else {}
    scaling = training_scaling(rasters)
    for note in reading_notes(rasters, scaling):
        LOG.info(note)
    return PointData(table, match, split, scaling, masks)

