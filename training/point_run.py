"""``geoseg train --images ... --points LAYER``: the options of training from a point layer, and
the data they describe (class table, matched and split points, band scaling, validation)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from common.cli import at_least, existing_file
from handler.scaling import BandScaling
from model.class_table import IGNORE_INDEX, ClassTable
from scene.source import SceneError, cap_gdal_cache, list_rasters
from training.evaluate import predictor
from training.point_evaluation import ValidationRaster, pair_masks, validate_points
from training.point_layer import (
    MatchResult,
    PointLayerError,
    match_points,
    read_point_layer,
    require_usable,
    resolve_classes,
)
from training.point_validation import default_block_size
from training.raster_points import (
    RANDOM_CROP_SHARE,
    PointSplit,
    PointTrainingError,
    RasterPointDataset,
    split_points,
    training_scaling,
)

DEFAULT_VAL_FRACTION = 0.2

Validation = Callable[[torch.nn.Module, torch.device, bool, Optional[Path], int], dict[str, Any]]
"""(model, device, progress, picture folder, max pictures) -> the epoch record's val_* fields."""


def add_point_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "point layer", "train from rasters and the points clicked on them (no masks): "
        "--images and --points instead of --data")
    group.add_argument("--images", nargs="+", default=None, metavar="RASTER",
                       help="rasters to train on: files, folders or glob patterns (GeoTIFF of "
                            "any size, or plain PNG / JPEG tiles)")
    group.add_argument("--points", type=existing_file, default=None, metavar="LAYER",
                       help="point layer: GeoPackage, Shapefile, GeoJSON or CSV (x,y,class in "
                            "--csv-crs, or image,x,y,class in pixels)")
    group.add_argument("--class-field", default=None,
                       help="attribute holding the class (default: the one of class, landcover, "
                            "label, type, class_id, category)")
    group.add_argument("--csv-crs", default=None,
                       help="CRS of a CSV's x,y (e.g. EPSG:32640); without it a CSV holds "
                            "pixel coordinates of the image it names")
    group.add_argument("--val-fraction", type=at_least(0.0, float), default=DEFAULT_VAL_FRACTION,
                       help="share of the points held out for validation, by spatial blocks")
    group.add_argument("--val-block", type=at_least(1), default=None,
                       help="side in pixels of the hold-out blocks (default: two crop sides, "
                            "512 px at --crop-size 256)")
    group.add_argument("--val-images", nargs="+", default=None, metavar="RASTER",
                       help="validate on every point of these rasters instead of a spatial split "
                            "(files, folders or globs; listing them in --images too is allowed)")
    group.add_argument("--val-masks", nargs="+", type=existing_file, default=None, metavar="MASK",
                       help="dense masks of the --val-images (one band of class ids, or the "
                            "class colours), paired by file stem, else in order: dense mIoU is "
                            "reported beside the point estimate")
    group.add_argument("--random-crops", type=at_least(0.0, float), default=RANDOM_CROP_SHARE,
                       help="share of crops placed anywhere on a raster; the others hold a "
                            "training point (1: all random, as the simulated-points path)")


def point_arg_problem(args: argparse.Namespace) -> Optional[str]:
    """Why the point-layer options cannot go together (one line), or None."""
    if args.images is None:
        given = [f for f, v in (("--points", args.points), ("--val-images", args.val_images),
                                ("--val-masks", args.val_masks)) if v]
        return f"{', '.join(given)} need --images (the rasters)" if given else None
    if args.data is not None:
        return "give either --data (images with dense masks) or --images with --points, not both"
    if args.points is None:
        return "--images needs --points (the point layer clicked on them)"
    if args.dense or args.points_per_class is not None or args.point_file is not None:
        return "--dense, --points-per-class and --point-file go with --data, not --points"
    if args.scale != 1.0:
        return ("--scale does not apply to --points: point coordinates are in the rasters' own "
                "pixels or map units; resample the rasters instead (gdalwarp -tr)")
    if args.expand != "none":
        return "--expand superpixels is not available with --points yet (--crf-weight is)"
    if not 0.0 <= args.val_fraction < 1.0:
        return f"--val-fraction must be in [0, 1), got {args.val_fraction}"
    if args.random_crops > 1.0:
        return f"--random-crops is a share in [0, 1], got {args.random_crops}"
    if args.val_masks and not args.val_images:
        return "--val-masks needs --val-images (the rasters they cover, in the same order)"
    if args.val_fraction == 0 and not args.val_images:
        return "--val-fraction 0 leaves nothing to validate on: pass --val-images instead"
    return None


@dataclass
class PointData:
    """What a point-layer run trains and validates on."""

    table: ClassTable
    match: MatchResult
    split: PointSplit
    scaling: Optional[BandScaling]
    masks: dict[Path, Path]

    def dataset(self, args: argparse.Namespace, pad_label: int = IGNORE_INDEX) -> RasterPointDataset:
        """The training crops: rasters that hold training points."""
        keep = [j for j, p in enumerate(self.split.train) if len(p)]
        return RasterPointDataset([self.split.rasters[j] for j in keep],
                                  [self.split.train[j] for j in keep], args.seed, args.crop_size,
                                  self.scaling, args.random_crops, augment=True, pad_label=pad_label)

    def validation_rasters(self) -> list[ValidationRaster]:
        return [ValidationRaster(path, points, self.masks.get(path))
                for path, points in zip(self.split.rasters, self.split.val)
                if len(points) or path in self.masks]

    def validation(self, amp: bool) -> Validation:
        rasters, table, scaling = self.validation_rasters(), self.table, self.scaling

        def run(model: torch.nn.Module, device: torch.device, progress: bool,
                pictures: Optional[Path], max_pictures: int) -> dict[str, Any]:
            found = validate_points(predictor(model, device, amp), rasters, table, scaling,
                                    pictures, max_pictures, progress)
            return found.record(table)
        return run

    def config(self) -> dict[str, Any]:
        """The run's point-layer facts, for metrics.json."""
        return {"point_layer": str(self.match.layer.path), "class_field": self.match.layer.class_field,
                "point_counts": self.match.counts(), "train_points": self.split.num_train,
                "val_points": self.split.num_val, "val_block_pixels": self.split.block_pixels,
                "rasters": [str(p) for p in self.split.rasters],
                "band_scaling": self.scaling.to_meta() if self.scaling else None}


def prepare_points(args: argparse.Namespace, table: Optional[ClassTable]) -> PointData:
    """Read the layer, choose the class table (``table``: from --classes), match the points to
    the rasters (their rejects printed one per line), split them, measure the band scaling."""
    cap_gdal_cache()
    try:
        rasters = list(dict.fromkeys(list_rasters(args.images, "--images")))
        val_paths = list(dict.fromkeys(list_rasters(args.val_images, "--val-images"))
                         if args.val_images else [])
    except SceneError as exc:
        raise PointTrainingError(str(exc)) from None
    rasters += [p for p in val_paths if p not in rasters]
    layer = read_point_layer(args.points, args.class_field, args.csv_crs)
    table, mapping = resolve_classes(layer.values(), table)
    match = require_usable(match_points(layer, rasters, table, mapping))
    print(match.report(), flush=True)
    block = args.val_block or int(default_block_size(1.0, args.crop_size))
    split = split_points(match, args.val_fraction, block, args.seed,
                         [rasters.index(p) for p in val_paths])
    print(split.summary(table.names), flush=True)
    masks = pair_masks(val_paths, args.val_masks) if args.val_masks else {}
    return PointData(table, match, split, training_scaling(rasters), masks)


POINT_ERRORS = (PointLayerError, PointTrainingError)
