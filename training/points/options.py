"""The options of ``geoseg train --images ... --points LAYER`` and the errors of that path.

Kept apart from :mod:`training.points.run` so that ``geoseg train`` on a mask dataset loads none of
the GIS stack (GDAL through rasterio and pyogrio, PROJ, GEOS) that reading a point layer needs."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

import torch

from common.cli import at_least, existing_file

if TYPE_CHECKING:
    from training.labels.fusion import ForestFusion

RANDOM_CROP_SHARE = 0.2
"""Default share of the training crops placed anywhere on a raster (the rest hold a point)."""


class PointInputError(ValueError):
    """A point-layer run cannot start: unreadable layer, no usable point, bad rasters."""


DEFAULT_VAL_FRACTION = 0.2

class Validation(Protocol):
    """(model, device, progress, picture folder, max pictures) -> the epoch record's val_*
    fields; with ``fusion``, those of the map of the network and the forest together
    (:mod:`training.labels.fusion`)."""

    def __call__(self, model: torch.nn.Module, device: torch.device, progress: bool,
                 pictures: Optional[Path], max_pictures: int,
                 fusion: Optional[ForestFusion] = None) -> dict[str, Any]: ...


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
    if args.expand == "superpixels":
        return "--expand superpixels is not available with --points yet (forest and --crf-weight are)"
    if not 0.0 <= args.val_fraction < 1.0:
        return f"--val-fraction must be in [0, 1), got {args.val_fraction}"
    if args.random_crops > 1.0:
        return f"--random-crops is a share in [0, 1], got {args.random_crops}"
    if args.val_masks and not args.val_images:
        return "--val-masks needs --val-images (the rasters they cover, in the same order)"
    if args.val_fraction == 0 and not args.val_images:
        return "--val-fraction 0 leaves nothing to validate on: pass --val-images instead"
    return None
