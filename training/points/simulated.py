"""A dataset with dense masks, rewritten as what a user of the point-layer path has.

Writes every image of the training and validation splits (as ``--data`` and its options read
them, ``--scale`` included) as a lossless GeoTIFF in UTM zone 40N, each at its own place (a row
of images 1 km apart, :data:`PIXEL_M` m pixels), the validation masks as one-band GeoTIFFs of
class ids, and one GeoPackage point layer in EPSG:4326 with the class name in the field
``landcover``: the points ``geoseg train --points-per-class N`` simulates for each training
image and shows on each validation picture (same function, same seeds). Training from these
files (``--images``, ``--points``, ``--val-images``, ``--val-masks``, ``--random-crops 1``) sees
the same pixels, labels and crops as the simulated-points run, so the two paths can be compared.

    python -m training.points.simulated --data DUBAI --dataset folders \\
        --classes training/tables/dubai-aerial.json --train-dirs tile1 tile2 tile3 tile4 \\
        --val-dirs tile5 tile6 --scale 0.5 --points-per-class 10 --out runs/dubai-geo \\
        --layer docs/results/dubai-points-10.gpkg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

from common.cli import at_least, fail, parser
from model.class_table import IGNORE_INDEX, ClassTable
from training.data.options import add_data_args, load_table, open_source
from training.data.sources import DatasetError, SampleSource
from training.points.files import simulate_points

CRS = "EPSG:32640"
ORIGIN = (300000.0, 2780000.0)
"""Upper-left corner (m, UTM 40N) of the first image; image k is ``k`` km east of it."""
PIXEL_M = 0.5
CLASS_FIELD = "landcover"


def write_geotiff(path: Path, bands: np.ndarray, k: int) -> None:
    """(B, H, W) uint8 as a deflate-compressed GeoTIFF at image slot ``k``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, h, w = bands.shape
    transform = from_origin(ORIGIN[0] + 1000.0 * k, ORIGIN[1], PIXEL_M, PIXEL_M)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype="uint8",
                       crs=CRS, transform=transform, compress="deflate") as dst:
        dst.write(bands)


def pixel_centres(points: np.ndarray, k: int) -> np.ndarray:
    """(K, 2) map x, y (m) of the centres of pixels (row, col, ...) of image slot ``k``."""
    x = ORIGIN[0] + 1000.0 * k + (points[:, 1] + 0.5) * PIXEL_M
    y = ORIGIN[1] - (points[:, 0] + 0.5) * PIXEL_M
    return np.stack([x, y], axis=1)


def write_split(source: SampleSource, folder: Path, masks: Path | None, first_slot: int,
                per_class: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Images (and masks) of one split as GeoTIFFs; returns the map x, y (K, 2) and class ids of
    the points simulated on them, as training (``[seed, index]``) simulates them."""
    xy, ids = [np.zeros((0, 2))], []
    for index in range(len(source)):
        sample = source.load(index)
        name = sample.key.replace("/", "_") + ".tif"
        write_geotiff(folder / name, np.moveaxis(sample.image, -1, 0), first_slot + index)
        if masks is not None:
            write_geotiff(masks / name, sample.mask[None], first_slot + index)
        points = simulate_points(sample.mask, per_class, [seed, index])
        xy.append(pixel_centres(points, first_slot + index))
        ids += points[:, 2].tolist()
    return np.concatenate(xy), ids


def write_layer(path: Path, xy: np.ndarray, ids: list[int], table: ClassTable) -> None:
    """Points at UTM ``xy`` (K, 2) as a GeoPackage in EPSG:4326 with the class names."""
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(xy[:, 0], xy[:, 1])
    geoms = np.array(shapely.to_wkb(shapely.points(np.stack([lon, lat], axis=1))), dtype=object)
    names = np.array([table.names[i] for i in ids], dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    pyogrio.raw.write(path, geoms, [names], [CLASS_FIELD], geometry_type="Point", crs="EPSG:4326",
                      driver="GPKG", layer="points")


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.points.simulated", __doc__)
    add_data_args(p)
    p.add_argument("--points-per-class", type=at_least(1), default=10)
    p.add_argument("--seed", type=int, default=0, help="the training run's --seed")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for train/, val/ and val-masks/ GeoTIFFs")
    p.add_argument("--layer", type=Path, required=True, help="GeoPackage to write")
    args: argparse.Namespace = p.parse_args(argv)
    if args.layer.exists():
        return fail(f"{args.layer} exists; remove it first")
    try:
        table = load_table(args)
        train, val = open_source(args, "train", table), open_source(args, "val", table)
        xy_t, ids_t = write_split(train, args.out / "train", None, 0, args.points_per_class, args.seed)
        xy_v, ids_v = write_split(val, args.out / "val", args.out / "val-masks", len(train),
                                  args.points_per_class, args.seed)
    except DatasetError as exc:
        return fail(str(exc))
    write_layer(args.layer, np.concatenate([xy_t, xy_v]), ids_t + ids_v, table)
    print(f"wrote {len(train)} + {len(val)} GeoTIFFs under {args.out} and {len(ids_t)} + "
          f"{len(ids_v)} points to {args.layer} (no-label value {IGNORE_INDEX} in the masks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
