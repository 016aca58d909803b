"""Class raster -> land-cover polygons for GIS users (GeoPackage, GeoJSON or Shapefile).

:func:`polygonize` reads the one-band class raster that ``geoseg predict`` writes (uint8 class ids
0..C-1, 255 = no data, any CRS), optionally removes regions smaller than a ground area with
``rasterio.features.sieve``, turns every connected region of one class into one polygon with
``rasterio.features.shapes`` and writes them with pyogrio, each with its ``class_id``,
``class_name`` and ``area_m2``.

Regions are **4-connected** (pixels that share an edge), for sieving and polygons alike: two
pixels that touch only at a corner belong to different polygons, so every polygon is valid.
No-data pixels (255) are never polygonised, never filled by sieving and never absorb a small
region; a small region whose only neighbours are no data is kept.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Polygon, shape
from shapely.geometry.polygon import orient

from handler.decode import metres_per_unit, pixel_area_m2
from model.class_table import IGNORE_INDEX, ClassTable

CONNECTIVITY = 4
"""Pixel connectivity of regions (sieve and polygons): 4 = edge neighbours only."""

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile"}
"""Output format by file extension (lower case)."""

FIELDS = ("class_id", "class_name", "area_m2")
"""Attribute fields of every feature, in order (all fit the Shapefile's 10-character limit)."""

LONLAT = pyproj.CRS.from_epsg(4326)
"""CRS of GeoJSON output (RFC 7946): WGS84 longitude, latitude in degrees."""

_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")


@dataclass(frozen=True)
class VectorSummary:
    """What :func:`polygonize` wrote.

    ``crs`` is the output file's CRS (``"EPSG:4326"`` for GeoJSON, else the raster's);
    ``area_m2`` maps every class name of the table to its total polygon area in square metres
    (0.0 for classes that do not occur).
    """

    path: Path
    layer: str
    driver: str
    features: int
    crs: str
    area_m2: dict[str, float]


def polygonize(
    class_raster: str | Path,
    out: str | Path,
    table: ClassTable,
    min_area_m2: float = 0.0,
    layer: str = "landcover",
    *,
    overwrite: bool = False,
) -> VectorSummary:
    """Write one polygon per connected region of one class of ``class_raster`` to ``out``.

    Args:
        class_raster: one-band uint8 GeoTIFF (or COG) of class ids 0..C-1 with 255 = no data, in a
            projected or geographic CRS. Band 1 is read whole into memory: 1 byte per pixel
            (a 20 000 x 20 000 scene takes 400 MB, plus about as much again while sieving).
        out: output file; the extension picks the format: ``.gpkg`` GeoPackage (one layer named
            ``layer``, in the raster's CRS), ``.geojson`` / ``.json`` RFC 7946 GeoJSON (reprojected
            to EPSG:4326 longitude/latitude), ``.shp`` ESRI Shapefile (in the raster's CRS).
        table: the classes the ids refer to; gives ``class_name``.
        min_area_m2: regions smaller than this ground area (m², compared with whole pixels) are
            merged into their largest neighbouring class region (``rasterio.features.sieve``);
            0 keeps every region. Needs a projected CRS.
        layer: layer name in a GeoPackage (GeoJSON stores it as the collection's name; a
            Shapefile's layer is always named after the file).
        overwrite: replace an existing ``out`` (for a Shapefile, all its side files).

    Each feature is a Polygon (holes kept) with ``class_id`` (int), ``class_name`` (str) and
    ``area_m2`` (float, m²): the planar area in the raster's CRS times the square of its linear
    unit in metres for a projected CRS, the geodesic area on the CRS's ellipsoid for a
    geographic one; always computed in the raster's CRS, before any reprojection.

    Raises:
        ValueError: unknown extension; a raster that is not one band of uint8, has no CRS, has a
            nodata value other than 255, or holds ids outside the table; ``min_area_m2`` < 0, or
            > 0 with a geographic CRS.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    driver = driver_for(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
    if min_area_m2 < 0:
        raise ValueError(f"min_area_m2 must be >= 0, got {min_area_m2}")
    classes, transform, crs = read_classes(class_raster, table)
    if min_area_m2 > 0:
        classes = sieve_classes(classes, min_pixels(min_area_m2, transform, crs))
    ids, polygons = regions(classes, transform)
    areas = areas_m2(polygons, crs)
    out_crs = crs_to_pyproj(crs)
    if driver == "GeoJSON":
        polygons = to_crs(polygons, out_crs, LONLAT)
        out_crs = LONLAT
    names = np.array([table.names[i] for i in ids], dtype=object)
    written = write_layer(out, driver, layer, polygons, [ids, names, areas], out_crs, overwrite)
    per_class = {name: float(areas[ids == k].sum()) for k, name in enumerate(table.names)}
    return VectorSummary(out, written, driver, len(ids), out_crs.to_string(), per_class)


def driver_for(out: Path) -> str:
    """OGR driver name for ``out``'s extension; ValueError listing the accepted ones otherwise."""
    try:
        return DRIVERS[out.suffix.lower()]
    except KeyError:
        accepted = ", ".join(DRIVERS)
        raise ValueError(f"{out}: unknown vector format {out.suffix!r} (accepted: {accepted})") from None


def read_classes(path: str | Path, table: ClassTable) -> tuple[np.ndarray, Affine, CRS]:
    """Band 1 of a class raster as (H, W) uint8 ids, its affine transform and its CRS.

    Checks what :func:`polygonize` relies on: one uint8 band, a CRS, nodata unset or 255, and
    no value other than 0..C-1 and 255 (the error names the first bad value and its count).
    """
    with rasterio.open(path) as src:
        if src.count != 1 or src.dtypes[0] != "uint8":
            raise ValueError(f"{path}: expected one uint8 band of class ids, got {src.count} "
                             f"band(s) of {src.dtypes[0]}")
        if src.crs is None:
            raise ValueError(f"{path}: the raster has no CRS, so areas in m² are unknown")
        if src.nodata is not None and src.nodata != IGNORE_INDEX:
            raise ValueError(f"{path}: nodata is {src.nodata:g}; class rasters use {IGNORE_INDEX}")
        classes = src.read(1)
        transform, crs = src.transform, src.crs
    counts = np.bincount(classes.ravel(), minlength=256)
    bad = np.flatnonzero(counts[table.num_classes:IGNORE_INDEX]) + table.num_classes
    if bad.size:
        raise ValueError(f"{path}: value {bad[0]} ({counts[bad[0]]} pixels) is not a class of table "
                         f"{table.name!r} (ids 0..{table.num_classes - 1}, {IGNORE_INDEX} = no data)")
    return classes, transform, crs


def min_pixels(min_area_m2: float, transform: Affine, crs: CRS) -> int:
    """Smallest region size in pixels whose area is >= ``min_area_m2`` (m²). Raises ValueError
    for a CRS that is not projected (a degree-sized pixel has no single area)."""
    area = pixel_area_m2(crs, transform)
    if area is None:
        raise ValueError(f"min_area_m2 needs a projected CRS (e.g. UTM), the raster's is "
                         f"{crs.to_string()}; reproject it or use min_area_m2=0")
    return max(1, math.ceil(min_area_m2 / area - 1e-9))


def sieve_classes(classes: np.ndarray, size: int) -> np.ndarray:
    """Merge regions of fewer than ``size`` pixels into their largest valid neighbour.

    ``classes``: (H, W) uint8 ids with 255 = no data. No-data pixels are masked out: they are
    neither filled nor merged into, and stay 255 in the (H, W) uint8 result.
    """
    if size <= 1:
        return classes
    valid = classes != IGNORE_INDEX
    sieved = rasterio.features.sieve(classes, size, mask=valid, connectivity=CONNECTIVITY)
    sieved[~valid] = IGNORE_INDEX
    return sieved


def regions(classes: np.ndarray, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Connected regions of (H, W) uint8 ``classes`` (no data left out) in the raster's CRS.

    Returns ``class_id`` as (N,) int32 and the regions as (N,) object array of shapely Polygons.
    """
    valid = classes != IGNORE_INDEX
    ids: list[int] = []
    polygons: list[Polygon] = []
    for geom, value in rasterio.features.shapes(classes, mask=valid, connectivity=CONNECTIVITY,
                                                transform=transform):
        ids.append(int(value))
        polygons.append(shape(geom))
    geoms = np.empty(len(polygons), dtype=object)
    geoms[:] = polygons
    return np.asarray(ids, dtype=np.int32), geoms


def areas_m2(polygons: np.ndarray, crs: CRS) -> np.ndarray:
    """Area of each polygon (coordinates in ``crs``) in m², as (N,) float64.

    Projected CRS: planar area x (metres per unit)². Geographic CRS: geodesic area on the CRS's
    ellipsoid (``pyproj.Geod``), x = longitude, y = latitude in degrees.
    """
    metres = metres_per_unit(crs)
    if metres is not None:
        return np.asarray(shapely.area(polygons), dtype=np.float64) * metres**2
    if crs.is_geographic:
        geod = crs_to_pyproj(crs).get_geod()
        if geod is None:
            raise ValueError(f"CRS {crs.to_string()} has no ellipsoid")
        return np.array([abs(geod.geometry_area_perimeter(orient(p))[0]) for p in polygons],
                        dtype=np.float64)
    raise ValueError(f"CRS {crs.to_string()} is neither projected nor geographic")


def crs_to_pyproj(crs: CRS) -> pyproj.CRS:
    """The same CRS as a pyproj object."""
    return pyproj.CRS.from_wkt(crs.to_wkt())


def to_crs(polygons: np.ndarray, src: pyproj.CRS, dst: pyproj.CRS) -> np.ndarray:
    """Reproject the vertices of (N,) polygons from ``src`` to ``dst`` (x, y = east, north order)."""
    transformer = pyproj.Transformer.from_crs(src, dst, always_xy=True)

    def move(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    return shapely.transform(polygons, move)


def write_layer(out: Path, driver: str, layer: str, polygons: np.ndarray, columns: list[np.ndarray],
                crs: pyproj.CRS, overwrite: bool) -> str:
    """Write ``polygons`` with ``columns`` (one array per name in :data:`FIELDS`) to ``out``.

    The file is written in a temporary folder beside ``out`` and then moved into place, so a
    failed write leaves an older ``out`` untouched. Returns the layer name as stored.
    """
    options = {"RFC7946": "YES"} if driver == "GeoJSON" else None
    name = out.stem if driver == "ESRI Shapefile" else layer
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        pyogrio.raw.write(str(staged), shapely.to_wkb(polygons), columns, list(FIELDS), layer=name,
                          driver=driver, geometry_type="Polygon", crs=crs.to_wkt(),
                          promote_to_multi=False, layer_options=options)
        written = str(pyogrio.list_layers(staged)[0][0])
        if overwrite and driver == "ESRI Shapefile":
            for part in _SHAPEFILE_PARTS:
                out.with_suffix(part).unlink(missing_ok=True)
        for produced in Path(tmp).iterdir():
            os.replace(produced, out.parent / produced.name)
    return written
