"""A picture of what ``geoseg predict`` made of a scene: photo | class map | polygons over the photo.

    python -m tools.figure_map SCENE.tif CLASSES.tif POLYGONS.gpkg OUT.png [--width 480]

The class map is read with its colour table; the polygons (any layer pyogrio reads, in the
raster's CRS) are drawn as outlines in their class colour; below, the legend of the classes
(names from the map's ``CLASS_<id>`` band metadata). For the README and the docs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from PIL import Image, ImageDraw

from common.cli import at_least, existing_file, fail, parser
from handler.decode import bands_to_rgb, raster_bands
from handler.scaling import to_uint8
from model.class_table import ClassTable
from training.run.pictures import titled_panels, with_legend

TITLES = ("photo", "class map (geoseg predict)", "polygons (--vector)")


def read_photo(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, rasterio.Affine]:
    """(h, w, 3) uint8 of the scene resampled to ``size`` (w, h), and its inverse transform."""
    with rasterio.open(path) as src:
        bands = src.read(raster_bands(src), out_shape=(len(raster_bands(src)), size[1], size[0]))
        scale = rasterio.Affine.scale(src.width / size[0], src.height / size[1])
        return bands_to_rgb(to_uint8(bands)), ~(src.transform @ scale)


def read_classes(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 colours of the class map (nearest resampling; nodata black)."""
    with rasterio.open(path) as src:
        ids = src.read(1, out_shape=(size[1], size[0]))
        lut = np.zeros((256, 3), dtype=np.uint8)
        for value, rgba in src.colormap(1).items():
            lut[value] = rgba[:3]
        return lut[ids]


def draw_polygons(photo: np.ndarray, path: Path, to_pixel: rasterio.Affine,
                  colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """The photo, dimmed, with every polygon's rings outlined in its class colour."""
    canvas = Image.fromarray((photo * 0.6).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    geoms, class_ids = read_polygons(path)
    for geom, class_id in zip(geoms, class_ids):
        for polygon in getattr(geom, "geoms", [geom]):
            for ring in [polygon.exterior, *polygon.interiors]:
                xy = [to_pixel @ (float(x), float(y)) for x, y in ring.coords]
                draw.line(xy, fill=colours.get(int(class_id), (255, 255, 255)), width=1)
    return np.asarray(canvas)


def read_polygons(path: Path) -> tuple[list, list]:
    """The (multi)polygons of a --vector layer and their ``class_id`` attributes."""
    meta, _, wkb, data = pyogrio.raw.read(path)
    names = [str(f) for f in meta["fields"]]
    return list(shapely.from_wkb(wkb)), list(data[names.index("class_id")])


def class_colours(path: Path) -> dict[int, tuple[int, int, int]]:
    with rasterio.open(path) as src:
        return {int(v): tuple(rgba[:3]) for v, rgba in src.colormap(1).items()}


def class_table(path: Path) -> ClassTable:
    """The classes of a map written by geoseg predict: names from its ``CLASS_<id>`` band
    metadata, colours from its colour table."""
    with rasterio.open(path) as src:
        tags, colours = src.tags(1), src.colormap(1)
    ids = sorted(int(k[6:]) for k in tags if k.startswith("CLASS_") and k[6:].isdigit()
                 and int(k[6:]) != 255)
    return ClassTable(names=tuple(tags[f"CLASS_{i}"] for i in ids),
                      colors=tuple(tuple(colours[i][:3]) for i in ids))


def figure(scene: Path, classes: Path, polygons: Path, width: int) -> np.ndarray:
    """Three panels with titles above the class legend: (h + 16 + L, 3 width + 8, 3) uint8 (h:
    the scene's aspect, L: the legend's height)."""
    with rasterio.open(scene) as src:
        height = max(1, round(src.height * width / src.width))
    photo, to_pixel = read_photo(scene, (width, height))
    panels = [photo, read_classes(classes, (width, height)),
              draw_polygons(photo, polygons, to_pixel, class_colours(classes))]
    return with_legend(titled_panels(panels, TITLES), class_table(classes))


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m tools.figure_map", __doc__)
    p.add_argument("scene", type=existing_file)
    p.add_argument("classes", type=existing_file, help="class COG written by geoseg predict")
    p.add_argument("polygons", type=existing_file, help="--vector output (GeoPackage / Shapefile)")
    p.add_argument("out", type=Path)
    p.add_argument("--width", type=at_least(16), default=480, help="panel width in pixels")
    args: argparse.Namespace = p.parse_args(argv)
    try:
        picture = figure(args.scene, args.classes, args.polygons, args.width)
    except (OSError, KeyError, ValueError) as exc:
        return fail(f"{exc}")
    Image.fromarray(picture).save(args.out)
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
