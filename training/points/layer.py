"""Point layers from QGIS (GeoPackage, Shapefile, GeoJSON, CSV) matched to rasters.

A user labels land cover by clicking points in QGIS over their rasters and stores the class in an
attribute of their choice. This module turns such a layer into GeoSeg's sparse labels:

1. :func:`read_point_layer` reads every feature: id, x, y, the layer's CRS, the raw class value
   and an optional ``image`` value. Vector files are read with pyogrio (GDAL), so a GeoJSON
   without a ``crs`` member is RFC 7946 longitude/latitude and an older one with a ``crs``
   member is read in that CRS. CSV files are read here: ``x,y,<class>`` in the CRS given as
   ``csv_crs`` (``--csv-crs``), or ``image,x,y,<class>`` in pixel coordinates of the named
   image; the coordinate columns may also be named as in :data:`X_COLUMNS` / :data:`Y_COLUMNS`
   (``lon,lat``, ``easting,northing``..., any case; pixel CSVs also ``col``, ``column``, ``row``).
   A GeoJSON with the top-level member ``"geoseg:coordinates": "pixel"`` holds pixel coordinates
   too. Every unreadable row or non-point feature is named in one :class:`PointLayerError`.
2. :func:`resolve_classes` decides the class table and maps every raw value to a class id.
3. :func:`match_points` reprojects the points to each raster and finds their pixels, reading
   only 1x1 windows of the rasters' validity masks; every point ends either usable or rejected
   with a reason (:class:`Reason`). :meth:`MatchResult.report` says which and why;
   :func:`require_usable` stops when none is usable.
4. :func:`read_image_points` is the same reader for the images of a dataset (``geoseg train
   --point-file``): :func:`match_images` places the points by image key and size, and every
   point it rejects is an error, all named in one :class:`PointLayerError`.

Usable points per raster are int64 arrays (K, 3) with columns (row y, column x, class id), the
:data:`training.points.files.Points` layout, so :func:`training.points.files.points_to_label` rasterises
them into a sparse label window.
"""
from __future__ import annotations

import colorsys
import csv
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Union

import numpy as np
import pyogrio
import pyogrio.errors
import rasterio
import rasterio.warp
import shapely
import shapely.errors
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from handler.decode import valid_mask
from model.class_table import ClassTable, ClassTableError
from training.points.files import PointLayerError, Transform, image_key, problems_error

ClassValue = Union[str, int, float, None]
"""A raw class attribute as read: a name, an id, or None when the field is empty (null, NaN, blank)."""

CLASS_FIELD_CANDIDATES = ("class", "landcover", "label", "type", "class_id", "category")
"""Attribute names tried, case-insensitively, when no class field is given."""

_INTEGER = re.compile(r"-?[0-9]+")
"""A class value spelled as an integer (an id, not a name)."""

SUMMARY_RASTERS = 8
"""Rasters named one by one in :meth:`MatchResult.summary`; beyond, only their number."""

X_COLUMNS = ("x", "lon", "lng", "long", "longitude", "easting", "east")
Y_COLUMNS = ("y", "lat", "latitude", "northing", "north")
"""CSV column names taken, case-insensitively, for a point's x (east) and y (north)."""

PIXEL_X_COLUMNS = (*X_COLUMNS, "col", "column")
PIXEL_Y_COLUMNS = (*Y_COLUMNS, "row")
"""The same for a CSV without CRS (pixel coordinates): x = column, y = row."""

PIXEL_SWITCH = ("geoseg:coordinates", "pixel")
"""Top-level GeoJSON member (name, value) saying that the coordinates are pixels (col, row)."""

IMAGE_FIELD = "image"
"""Attribute (or CSV column) naming the raster a point belongs to; matched case-insensitively."""

DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)
"""Colours of a class table built from a layer's values: matplotlib's ``tab20`` reordered as the
ten ``tab10`` colours followed by their ten light variants. Classes beyond 20 get colours from
:func:`default_colors` (golden-angle hues)."""


class Reason(StrEnum):
    """Why a point was not used."""

    OUTSIDE = "outside every raster"
    NODATA = "on nodata"
    UNKNOWN_CLASS = "unknown class"
    EMPTY_CLASS = "empty class field"
    UNKNOWN_IMAGE = "image not among the rasters"


@dataclass(frozen=True)
class PointFeature:
    """One point of a layer.

    ``fid`` is the feature id (GeoPackage / Shapefile / GeoJSON, as GDAL and QGIS number them) or
    the 1-based line number (CSV, header = line 1). ``x``, ``y`` are in the layer's CRS, or pixel
    column / row (float, 0 = the top-left pixel's top-left corner) when the layer holds pixel
    coordinates. ``value`` is the class attribute, None when empty; ``image`` the image attribute.
    """

    fid: int
    x: float
    y: float
    value: ClassValue
    image: str | None = None


@dataclass(frozen=True)
class PointLayer:
    """The features of a point layer and how to read their coordinates.

    ``crs`` is None for a layer without a CRS (then coordinates are taken in each raster's own CRS)
    and for pixel coordinates. ``pixel_coordinates`` is True for a CSV ``image,x,y,<class>``
    without a CRS and for a GeoJSON carrying :data:`PIXEL_SWITCH`. ``id_kind`` is ``"feature"``
    or ``"line"`` (CSV).
    """

    path: Path
    class_field: str
    crs: CRS | None
    features: tuple[PointFeature, ...]
    pixel_coordinates: bool = False
    id_kind: str = "feature"

    def __len__(self) -> int:
        return len(self.features)

    def values(self) -> list[ClassValue]:
        """The class value of every feature, in layer order."""
        return [f.value for f in self.features]

    def where(self, fid: int) -> str:
        """``file:line`` for CSV rows, ``file: feature N`` otherwise."""
        return f"{self.path}:{fid}" if self.id_kind == "line" else f"{self.path}: feature {fid}"

    def describe(self, rejected: Rejected) -> str:
        """``where: reason: detail`` of a rejected point of this layer."""
        return f"{self.where(rejected.feature_id)}: {rejected.reason}: {rejected.detail}"


class Rejected(NamedTuple):
    """A point that is not used: its feature id (or CSV line), the reason, and a detail."""

    feature_id: int
    reason: Reason
    detail: str


@dataclass(frozen=True)
class MatchResult:
    """Points matched to rasters.

    ``points[i]`` is an int64 array (K_i, 3) of (row, col, class id) on ``rasters[i]``, in layer
    order; ``feature_ids[i]`` (K_i,) int64 holds their feature ids (CSV: line numbers).
    ``rejected`` lists the unused points in layer order.
    """

    layer: PointLayer
    rasters: tuple[Path, ...]
    points: tuple[np.ndarray, ...]
    feature_ids: tuple[np.ndarray, ...]
    rejected: tuple[Rejected, ...]

    @property
    def num_usable(self) -> int:
        return int(sum(len(p) for p in self.points))

    def counts(self) -> dict[str, int]:
        """``{"usable": n, <reason>: n, ...}`` for every reason that occurred."""
        out = {"usable": self.num_usable}
        for reason in Reason:
            n = sum(1 for r in self.rejected if r.reason is reason)
            if n:
                out[str(reason)] = n
        return out

    def summary(self) -> str:
        """One line: how many points are usable (per raster) and how many were rejected why."""
        holding = [(path, pts) for path, pts in zip(self.rasters, self.points) if len(pts)]
        line = f"{self.layer.path}: {len(self.layer)} points, {self.num_usable} usable"
        if len(holding) > SUMMARY_RASTERS:
            line += f" (on {len(holding)} of {len(self.rasters)} rasters)"
        elif holding:
            line += " (" + ", ".join(f"{path.name}: {len(pts)}" for path, pts in holding) + ")"
        rejected = [f"{n} {reason}" for reason, n in self.counts().items() if reason != "usable"]
        return line + ("; rejected: " + ", ".join(rejected) if rejected else "")

    def report(self) -> str:
        """One line per rejected point (``where: reason: detail``), then :meth:`summary`."""
        lines = [self.layer.describe(r) for r in self.rejected]
        return "\n".join([*lines, self.summary()])


# --------------------------------------------------------------------------------------------
# Reading


def read_point_layer(path: str | Path, class_field: str | None = None, csv_crs: str | None = None,
                     *, layer: str | int | None = None, need_image: bool = False) -> PointLayer:
    """Read a point layer: GeoPackage, Shapefile, GeoJSON (any vector format GDAL reads) or CSV.

    ``class_field`` names the class attribute (matched case-insensitively); None picks the one
    field among :data:`CLASS_FIELD_CANDIDATES`. ``csv_crs`` (e.g. ``"EPSG:32640"``) is the CRS of a
    CSV's ``x,y``; without it a CSV needs an ``image`` column and holds pixel coordinates (x =
    column, y = row). For a vector layer without a CRS (a Shapefile without ``.prj``) ``csv_crs``
    is used as its CRS; for one with a different CRS it is an error. ``layer`` picks a layer of a
    multi-layer file (GeoPackage). ``need_image``: a CSV must have an ``image`` column (points on
    the images of a dataset). Raises :class:`PointLayerError` for unreadable files and missing
    fields, and one naming every row with unreadable coordinates or every non-point geometry.
    """
    path = Path(path)
    if not path.is_file():
        raise PointLayerError(f"{path}: no such file")
    fallback = _parse_crs(csv_crs, f"{path}: --csv-crs") if csv_crs else None
    if path.suffix.lower() in (".csv", ".txt"):
        return _read_csv(path, class_field, fallback, need_image)
    return _read_vector(path, class_field, fallback, layer)


def _parse_crs(text: str, where: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError as exc:
        raise PointLayerError(f"{where}: not a CRS: {text!r} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pick_field(fields: Sequence[str], wanted: str | None, where: str) -> str:
    """The class field: ``wanted`` (case-insensitive) or the one common class name present."""
    by_lower: dict[str, list[str]] = {}
    for f in fields:
        by_lower.setdefault(f.lower(), []).append(f)
    if wanted is not None:
        if wanted in fields:
            return wanted
        hits = by_lower.get(wanted.lower(), [])
        if len(hits) == 1:
            return hits[0]
        raise PointLayerError(f"{where}: no class field {wanted!r}; the layer's fields are "
                              f"{', '.join(fields) or '(none)'}")
    found = [f for name in CLASS_FIELD_CANDIDATES for f in by_lower.get(name, [])]
    if len(found) == 1:
        return found[0]
    what = "several class fields (" + ", ".join(found) + ")" if found else "no class field"
    raise PointLayerError(f"{where}: {what} among the fields {', '.join(fields) or '(none)'}; "
                          f"name it with --class-field")


def _clean_value(value: object) -> ClassValue:
    """None for null / NaN / blank; integral floats (nullable integer fields) become int."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return None
        return int(v) if v.is_integer() else v
    text = str(value).strip()
    return text or None


def _clean_image(value: object) -> str | None:
    cleaned = _clean_value(value)
    return None if cleaned is None else str(cleaned)


class _CsvColumns(NamedTuple):
    """The header names of a point CSV's columns; ``image`` None when it has none."""

    x: str
    y: str
    value: str
    image: str | None


def _read_csv(path: Path, class_field: str | None, crs: CRS | None, need_image: bool) -> PointLayer:
    """The rows of a point CSV as features (fid = line number); one error for every bad row."""
    features: list[PointFeature] = []
    problems: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = _csv_columns(path, reader.fieldnames, class_field, crs, need_image)
            for row in _stripped_rows(reader):
                try:
                    features.append(_csv_feature(path, reader.line_num, row, columns))
                except PointLayerError as exc:
                    problems.append(str(exc))
    except UnicodeDecodeError as exc:
        raise PointLayerError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except (OSError, csv.Error) as exc:
        raise PointLayerError(f"{path}: cannot read as CSV ({_first_line(exc)})") from None
    if problems:
        raise problems_error(problems, "rows with unreadable coordinates")
    return PointLayer(path=path, class_field=columns.value, crs=crs, features=tuple(features),
                      pixel_coordinates=crs is None, id_kind="line")


def _csv_columns(path: Path, header: Sequence[str] | None, class_field: str | None, crs: CRS | None,
                 need_image: bool) -> _CsvColumns:
    """Find the coordinate, class and image columns in a CSV ``header``; errors name line 1."""
    fields = [(f or "").strip() for f in header or []]
    if not any(fields):
        raise PointLayerError(f"{path}:1: empty CSV; expected a header such as x,y,class")
    pixels = crs is None
    x_col = _coordinate_column(path, fields, PIXEL_X_COLUMNS if pixels else X_COLUMNS, "x (east)")
    y_col = _coordinate_column(path, fields, PIXEL_Y_COLUMNS if pixels else Y_COLUMNS, "y (north)")
    image_col = {f.lower(): f for f in fields}.get(IMAGE_FIELD)
    others = [f for f in fields if f not in (x_col, y_col, image_col)]
    value_col = _pick_field(others, class_field, f"{path}:1")
    if image_col is None and need_image:
        raise PointLayerError(f"{path}:1: header has no image column: a point file holds "
                              f"image,x,y,class (x = column, y = row in pixels; got {','.join(fields)})")
    if image_col is None and pixels:
        example = "EPSG:4326" if x_col.lower() not in ("x", "easting", "east") else "EPSG:32640"
        raise PointLayerError(f"{path}: the CSV's {x_col},{y_col} need a CRS: pass "
                              f"--csv-crs (e.g. {example}), or give an image column for "
                              f"pixel coordinates")
    return _CsvColumns(x_col, y_col, value_col, image_col)


def _coordinate_column(path: Path, fields: Sequence[str], names: Sequence[str], axis: str) -> str:
    """The one column of ``fields`` named as one of ``names`` (case-insensitive)."""
    found = [f for f in fields if f.lower() in names]
    if len(found) == 1:
        return found[0]
    if found:
        raise PointLayerError(f"{path}:1: columns {', '.join(found)} could each be the {axis} "
                              f"coordinate; keep one")
    raise PointLayerError(f"{path}:1: header has no {axis} column: a point CSV needs one named "
                          f"one of {', '.join(names)} (got {', '.join(fields)})")


def _stripped_rows(reader: csv.DictReader[str]) -> Iterable[dict[str, str]]:
    for row in reader:
        yield {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}


def _csv_feature(path: Path, line: int, row: dict[str, str], columns: _CsvColumns) -> PointFeature:
    """The feature of CSV row ``line``; PointLayerError ``file:line: ...`` for unreadable x, y."""
    x_col, y_col = columns.x, columns.y
    try:
        x, y = float(row[x_col]), float(row[y_col])
    except ValueError:
        raise PointLayerError(f"{path}:{line}: {x_col} and {y_col} must be numbers, got "
                              f"{x_col}={row[x_col]!r}, {y_col}={row[y_col]!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise PointLayerError(f"{path}:{line}: {x_col} and {y_col} must be finite, got "
                              f"{x_col}={x}, {y_col}={y}")
    value = _clean_value(row[columns.value])
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    image = _clean_image(row[columns.image]) if columns.image else None
    return PointFeature(fid=line, x=x, y=y, value=value, image=image)


def _read_vector(path: Path, class_field: str | None, fallback: CRS | None,
                 layer: str | int | None) -> PointLayer:
    """The features of a vector layer read with pyogrio (fid = GDAL's feature id)."""
    try:
        layers = pyogrio.list_layers(path)
        if layer is None and len(layers) > 1:
            names = ", ".join(str(n) for n in layers[:, 0])
            raise PointLayerError(f"{path}: holds {len(layers)} layers ({names}); save the "
                                  "points as a file of their own (one layer)")
        meta, fids, geoms, data = pyogrio.raw.read(path, layer=layer, return_fids=True, force_2d=True)
    except PointLayerError:
        raise
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError,
            pyogrio.errors.GeometryError, pyogrio.errors.FeatureError, pyogrio.errors.CRSError,
            OSError) as exc:
        raise PointLayerError(f"{path}: not a readable point layer ({_first_line(exc)})") from None
    fields = [str(f) for f in meta["fields"]]
    value_field = _pick_field(fields, class_field, str(path))
    pixels = _declares_pixels(path)
    crs = None if pixels else _layer_crs(path, meta.get("crs"), fallback)
    xy = _point_coordinates(path, fids, geoms)
    values = data[fields.index(value_field)]
    lower = {f.lower(): i for i, f in enumerate(fields)}
    images = data[lower[IMAGE_FIELD]] if IMAGE_FIELD in lower else [None] * len(fids)
    features = tuple(
        PointFeature(fid=int(fid), x=float(x), y=float(y), value=_clean_value(v), image=_clean_image(im))
        for fid, (x, y), v, im in zip(fids, xy, values, images)
    )
    return PointLayer(path=path, class_field=value_field, crs=crs, features=features,
                      pixel_coordinates=pixels)


def _declares_pixels(path: Path) -> bool:
    """Whether a GeoJSON file carries the top-level member :data:`PIXEL_SWITCH`.

    GDAL does not pass on a FeatureCollection's foreign members, so this one is looked up in the
    file's JSON; the points themselves are read by GDAL.
    """
    if path.suffix.lower() not in (".geojson", ".json"):
        return False
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    name, value = PIXEL_SWITCH
    return isinstance(document, dict) and document.get(name) == value


def _layer_crs(path: Path, text: str | None, fallback: CRS | None) -> CRS | None:
    if not text:
        return fallback
    crs = _parse_crs(text, f"{path}: layer CRS")
    if fallback is not None and not crs.equals(fallback):
        raise PointLayerError(f"{path}: the layer carries its own CRS ({crs.to_string()}), "
                              f"which differs from --csv-crs ({fallback.to_string()})")
    return crs


def _point_coordinates(path: Path, fids: np.ndarray, wkb: np.ndarray) -> np.ndarray:
    """(N, 2) float64 x, y of Point (or single-part MultiPoint) geometries; one error naming every
    feature without geometry or with another geometry."""
    try:
        geoms = shapely.from_wkb(wkb)
    except shapely.errors.GEOSException as exc:
        raise PointLayerError(f"{path}: unreadable geometry ({_first_line(exc)})") from None
    out = np.empty((len(fids), 2), dtype=np.float64)
    problems: list[str] = []
    for k, (fid, geom) in enumerate(zip(fids, geoms)):
        if geom is not None and geom.geom_type == "MultiPoint" and len(geom.geoms) == 1:
            geom = geom.geoms[0]
        if geom is None or geom.is_empty:
            problems.append(f"{path}: feature {fid} has no geometry")
        elif geom.geom_type != "Point":
            problems.append(f"{path}: feature {fid} is a {geom.geom_type}")
        else:
            out[k] = (geom.x, geom.y)
    if problems:
        raise problems_error(problems, "features that are not points", hint="the layer must hold points "
                             "(QGIS: Vector > Geometry Tools > Centroids for polygons)")
    return out


# --------------------------------------------------------------------------------------------
# Classes


def default_colors(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` colours: :data:`DEFAULT_PALETTE`, then golden-angle hues (HSV s=0.65, v=0.85)."""
    colors = list(DEFAULT_PALETTE[:n])
    for k in range(n - len(colors)):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.65, 0.85)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colors)


def _as_id(value: ClassValue) -> int | None:
    """The class id a value spells (int, or a string of digits), else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def _lookup(table: ClassTable, value: ClassValue) -> int | None:
    """Id of ``value`` in ``table`` by id (numbers) or name (case-insensitive); None if absent."""
    as_id = _as_id(value)
    if as_id is not None:
        return as_id if 0 <= as_id < table.num_classes else None
    try:
        return table.class_id(str(value))
    except (KeyError, ValueError):  # ValueError: a non-ASCII digit string such as "²"
        return None


def resolve_classes(values: Iterable[ClassValue], table: ClassTable | None
                    ) -> tuple[ClassTable, dict[str | int | float, int]]:
    """Choose the class table and map each distinct non-empty raw value to a class id.

    - ``table`` given (``--classes``): values match its names case-insensitively, or its ids when
      they are numbers (ints or digit strings); values it does not hold are left out of the
      mapping, so :func:`match_points` rejects their points as :attr:`Reason.UNKNOWN_CLASS`.
    - else the LandCover.ai table (``model/classes.json``) when every value is one of its names
      or ids (0..4);
    - else a table built from the distinct names, sorted case-insensitively (spelling of the
      first occurrence; values differing only in case are one class), coloured with
      :func:`default_colors` (:data:`DEFAULT_PALETTE` first). A layer holding ids (numbers) that
      are not LandCover.ai ids cannot be given names and raises :class:`PointLayerError`: pass a
      class table for it.

    Returns (table, mapping raw value -> class id). Empty values (None) are never in the mapping.
    """
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    if table is not None:
        return table, _mapping(table, distinct)
    landcover = ClassTable.load()
    if all(_lookup(landcover, v) is not None for v in distinct):
        return landcover, _mapping(landcover, distinct)
    numeric = [v for v in distinct if _as_id(v) is not None]
    if numeric:
        shown = ", ".join(repr(v) for v in numeric[:10])
        raise PointLayerError(f"class values {shown} are ids, but not all values are LandCover.ai classes "
                              f"({', '.join(landcover.names)}); pass a class table (--classes) naming them")
    built = _table_from_names([str(v) for v in distinct])
    return built, _mapping(built, distinct)


def _mapping(table: ClassTable, distinct: Sequence[str | int | float]) -> dict[str | int | float, int]:
    out: dict[str | int | float, int] = {}
    for v in distinct:
        idx = _lookup(table, v)
        if idx is not None:
            out[v] = idx
    return out


def _table_from_names(names: Sequence[str]) -> ClassTable:
    first: dict[str, str] = {}
    for n in names:
        first.setdefault(n.lower(), n)
    ordered = [first[k] for k in sorted(first)]
    try:
        return ClassTable(names=tuple(ordered), colors=default_colors(len(ordered)), name="point-layer")
    except ClassTableError as exc:
        raise PointLayerError(f"cannot build a class table from the layer's values: {exc}") from None


# --------------------------------------------------------------------------------------------
# Matching


def match_points(layer: PointLayer, rasters: Sequence[str | Path], table: ClassTable,
                 mapping: dict[str | int | float, int]) -> MatchResult:
    """Find every point's pixel and class; reject the others with a :class:`Reason`.

    Classes first: an empty value is :attr:`Reason.EMPTY_CLASS`, a value not in ``mapping``
    :attr:`Reason.UNKNOWN_CLASS`.

    A point **without an image value** is reprojected (pyproj, ``always_xy``) to each
    georeferenced raster's CRS in turn (a layer without CRS, or a raster with a transform but no
    CRS, is taken to share the other's CRS) and goes to the first raster that contains it with a
    valid pixel there; pixel = floor of ``~transform * (x, y)`` as (col, row). Rasters without
    georeferencing (plain PNG / JPEG tiles) never receive such points. A point inside some raster
    but on nodata in each is :attr:`Reason.NODATA`; one inside none :attr:`Reason.OUTSIDE`.

    A point **with an image value** goes only to the raster it names (its path without
    extension ends with the value's, see :func:`training.points.files.image_key`): in pixel
    coordinates (x = column, y = row) when that raster is not georeferenced or the layer holds
    pixel coordinates (CSV ``image,x,y`` without CRS), else in map coordinates as above. A name
    matching no raster, or several, is :attr:`Reason.UNKNOWN_IMAGE`. In pixel coordinates a
    negative y is taken as a row counted downwards from 0: QGIS shows an image without
    georeferencing with its top-left corner at (0, 0) and its rows at y = -row, so points
    clicked there carry y = -row (a row itself is never negative).

    Validity is the raster's dataset mask (nodata value, alpha band or internal mask), read as a
    1x1 window per point; rasters whose bands are all valid are not read at all.
    """
    paths = tuple(Path(r) for r in rasters)
    for idx in mapping.values():
        if not 0 <= idx < table.num_classes:
            raise ValueError(f"mapping holds class id {idx}, outside table {table.name!r} "
                             f"(0..{table.num_classes - 1})")
    state = _MatchState(layer, len(paths))
    state.check_classes(table, mapping)
    state.check_images(paths)
    for j, raster in enumerate(paths):
        with _open_raster(raster) as src:
            state.place_on(j, raster, src)
    state.finish_unplaced()
    return state.result(paths)


class _MatchState:
    """Book-keeping of :func:`match_points`: per feature its class, target raster and fate."""

    def __init__(self, layer: PointLayer, num_rasters: int) -> None:
        n = len(layer)
        self.layer = layer
        self.xs = np.array([f.x for f in layer.features], dtype=np.float64).reshape(n)
        self.ys = np.array([f.y for f in layer.features], dtype=np.float64).reshape(n)
        self.class_ids = np.full(n, -1, dtype=np.int64)
        self.target = np.full(n, -1, dtype=np.int64)  # raster named by the image value, -1: none
        self.open = np.ones(n, dtype=bool)  # neither placed nor rejected yet
        self.nodata_on: dict[int, str] = {}  # free points seen on nodata: feature index -> raster name
        self.placed: list[list[tuple[int, int, int, int]]] = [[] for _ in range(num_rasters)]
        self.rejected: dict[int, tuple[Reason, str]] = {}

    def reject(self, k: int, reason: Reason, detail: str) -> None:
        self.rejected[k] = (reason, detail)
        self.open[k] = False

    def check_classes(self, table: ClassTable, mapping: dict[str | int | float, int]) -> None:
        for k, f in enumerate(self.layer.features):
            if f.value is None:
                self.reject(k, Reason.EMPTY_CLASS, f"field {self.layer.class_field!r} is empty")
            elif f.value not in mapping:
                self.reject(k, Reason.UNKNOWN_CLASS, _not_in_table(f.value, table))
            else:
                self.class_ids[k] = mapping[f.value]

    def check_images(self, paths: Sequence[Path]) -> None:
        keys = [p.with_suffix("").as_posix().split("/") for p in paths]
        for k, f in enumerate(self.layer.features):
            if not self.open[k]:
                continue
            if f.image is None:
                if self.layer.pixel_coordinates:
                    self.reject(k, Reason.UNKNOWN_IMAGE, "empty image value (pixel coordinates need one)")
                continue
            want = PurePosixPath(image_key(f.image)).parts
            hits = [j for j, parts in enumerate(keys) if tuple(parts[-len(want):]) == want]
            if len(hits) == 1:
                self.target[k] = hits[0]
            else:
                what = "no raster" if not hits else f"{len(hits)} rasters"
                self.reject(k, Reason.UNKNOWN_IMAGE, f"image {f.image!r} matches {what}")

    def place_on(self, j: int, raster: Path, src: DatasetReader) -> None:
        """Place the open points that name raster ``j``, then the open points that name none."""
        georeferenced = _is_georeferenced(src)
        named = np.flatnonzero(self.open & (self.target == j))
        if len(named):
            self.place_named(j, raster, src, named, pixels=self.layer.pixel_coordinates or not georeferenced)
        free = np.flatnonzero(self.open & (self.target < 0))
        if len(free) and georeferenced and not self.layer.pixel_coordinates:
            self.place_free(j, raster, src, free)

    def place_named(self, j: int, raster: Path, src: DatasetReader, named: np.ndarray, pixels: bool) -> None:
        """Points (indices ``named``) that belong to this raster: placed, or rejected here."""
        if pixels:
            cols, rows = self.xs[named], np.abs(self.ys[named])  # QGIS: y = -row (match_points)
        else:
            cols, rows = _map_to_pixel(src, self.layer.crs, self.xs[named], self.ys[named])
        inside, valid, ci, ri = _inspect(src, cols, rows)
        for k, ins, ok, c, r in zip(map(int, named), inside, valid, ci, ri):
            if not ins:
                size = f"{src.width}x{src.height} pixels"
                self.reject(k, Reason.OUTSIDE,
                            f"x={self.xs[k]:g}, y={self.ys[k]:g} is outside image {raster.name} ({size})")
            elif not ok:
                self.reject(k, Reason.NODATA, f"row {r}, column {c} of {raster.name} is nodata")
            else:
                self.place(k, j, int(r), int(c))

    def place_free(self, j: int, raster: Path, src: DatasetReader, free: np.ndarray) -> None:
        """Points (indices ``free``) naming no raster: placed where valid, else left for later rasters."""
        cols, rows = _map_to_pixel(src, self.layer.crs, self.xs[free], self.ys[free])
        inside, valid, ci, ri = _inspect(src, cols, rows)
        for k, ins, ok, c, r in zip(map(int, free), inside, valid, ci, ri):
            if ins and ok:
                self.place(k, j, int(r), int(c))
            elif ins:
                self.nodata_on.setdefault(k, f"row {r}, column {c} of {raster.name}")

    def place(self, k: int, j: int, row: int, col: int) -> None:
        self.placed[j].append((k, row, col, int(self.class_ids[k])))
        self.open[k] = False

    def finish_unplaced(self) -> None:
        crs = self.layer.crs.to_string() if self.layer.crs is not None else "raster CRS"
        for k in map(int, np.flatnonzero(self.open)):
            if k in self.nodata_on:
                self.reject(k, Reason.NODATA, f"{self.nodata_on[k]} is nodata (and no later raster has data)")
            else:
                self.reject(k, Reason.OUTSIDE, f"x={self.xs[k]:g}, y={self.ys[k]:g} ({crs}) is outside "
                                               f"every georeferenced raster")

    def check_image_keys(self, keys: Sequence[str]) -> None:
        """Open points target the image whose key (:func:`training.points.files.image_key`) their
        image value spells exactly; the others are rejected."""
        index = {key: j for j, key in enumerate(keys)}
        for k, f in enumerate(self.layer.features):
            if not self.open[k]:
                continue
            key = None if f.image is None else image_key(f.image)
            if key is None:
                self.reject(k, Reason.UNKNOWN_IMAGE, "empty image value")
            elif key not in index:
                self.reject(k, Reason.UNKNOWN_IMAGE, f"image {f.image!r} is not in the dataset")
            else:
                self.target[k] = index[key]

    def place_on_images(self, keys: Sequence[str], sizes: Sequence[tuple[int, int]],
                        to_pixel: Sequence[Transform | None]) -> None:
        """Place every open point on its target image ``j`` (``keys[j]``, ``sizes[j]`` = (H, W)
        pixels): map (x, y) through ``to_pixel[j]``, or pixel coordinates without one (x =
        column, y = row, a negative y counted downwards as in :meth:`place_named`)."""
        for k in map(int, np.flatnonzero(self.open)):
            j = int(self.target[k])
            (h, w), convert = sizes[j], to_pixel[j]
            x, y = float(self.xs[k]), float(self.ys[k])
            col, row = (float(v) for v in convert(x, y)) if convert is not None else (x, abs(y))
            if math.isfinite(col) and math.isfinite(row) and 0 <= col < w and 0 <= row < h:
                self.place(k, j, math.floor(row), math.floor(col))
            else:
                self.reject(k, Reason.OUTSIDE, f"x={x:g}, y={y:g} is outside image {keys[j]!r} "
                                               f"({w}x{h} pixels)")

    def placed_points(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per raster: its points (K_j, 3) int64 (row, col, class id) in layer order, and their
        feature ids (K_j,) int64."""
        fids = np.array([f.fid for f in self.layer.features], dtype=np.int64)
        points, ids = [], []
        for placed in self.placed:
            arr = np.array(sorted(placed), dtype=np.int64).reshape(-1, 4)
            points.append(np.ascontiguousarray(arr[:, 1:]))
            ids.append(fids[arr[:, 0]])
        return points, ids

    def rejections(self) -> tuple[Rejected, ...]:
        """The rejected points in layer order."""
        return tuple(Rejected(self.layer.features[k].fid, reason, detail)
                     for k, (reason, detail) in sorted(self.rejected.items()))

    def result(self, paths: tuple[Path, ...]) -> MatchResult:
        points, ids = self.placed_points()
        return MatchResult(layer=self.layer, rasters=paths, points=tuple(points), feature_ids=tuple(ids),
                           rejected=self.rejections())


def _not_in_table(value: ClassValue, table: ClassTable) -> str:
    """Why ``value`` names no class of ``table`` (ids and names spelled as such)."""
    as_id = _as_id(value)
    if as_id is not None:
        return (f"class id {as_id} is not in class table {table.name!r} (ids 0..{table.num_classes - 1}: "
                f"{', '.join(table.names)})")
    return f"{value!r} is not in class table {table.name!r} ({', '.join(table.names)})"


def _open_raster(path: Path) -> DatasetReader:
    if not path.is_file():
        raise PointLayerError(f"{path}: no such raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise PointLayerError(f"{path}: not a readable raster ({_first_line(exc)})") from None


def _is_georeferenced(src: DatasetReader) -> bool:
    """A CRS or a non-identity transform (plain PNG / JPEG tiles have neither)."""
    return src.crs is not None or not src.transform.is_identity


def _map_to_pixel(src: DatasetReader, layer_crs: CRS | None, xs: np.ndarray,
                  ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map (x, y) in ``layer_crs`` -> float pixel (col, row) of ``src``; unprojectable points -> inf."""
    if layer_crs is not None and src.crs is not None:
        transformer = Transformer.from_crs(layer_crs, CRS.from_user_input(src.crs.to_wkt()), always_xy=True)
        xs, ys = transformer.transform(xs, ys)
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    inv = ~src.transform
    return inv.a * xs + inv.b * ys + inv.c, inv.d * xs + inv.e * ys + inv.f


def _inspect(src: DatasetReader, cols: np.ndarray, rows: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For float pixel positions (K,): inside (K,) bool, valid (K,) bool, int col (K,), int row (K,).

    ``valid`` is meaningful where ``inside``; it reads one 1x1 dataset-mask window per distinct pixel.
    """
    finite = np.isfinite(cols) & np.isfinite(rows)
    ci = np.floor(np.clip(np.where(finite, cols, -1.0), -1.0, 2.0**52)).astype(np.int64)
    ri = np.floor(np.clip(np.where(finite, rows, -1.0), -1.0, 2.0**52)).astype(np.int64)
    inside = finite & (ci >= 0) & (ci < src.width) & (ri >= 0) & (ri < src.height)
    valid = np.ones(len(cols), dtype=bool)
    if not all(MaskFlags.all_valid in flags for flags in src.mask_flag_enums):
        seen: dict[tuple[int, int], bool] = {}
        for k in np.flatnonzero(inside):
            key = (int(ri[k]), int(ci[k]))
            if key not in seen:
                mask = valid_mask(src, Window(key[1], key[0], 1, 1))
                seen[key] = mask is None or bool(mask[0, 0])
            valid[k] = seen[key]
    return inside, valid, ci, ri


# --------------------------------------------------------------------------------------------
# Dataset images (geoseg train --point-file)


def read_image_points(path: str | Path, table: ClassTable, sizes: Mapping[str, tuple[int, int]],
                      transforms: Mapping[str, Transform] | None = None) -> dict[str, np.ndarray]:
    """The points of a point file on the images of a dataset: a CSV ``image,x,y,class`` in
    pixels or a GeoJSON of Points with properties ``image`` and ``class``, read by
    :func:`read_point_layer` (class field ``class``) and placed by :func:`match_images`.

    Returns (K, 3) int64 rows (row, col, class id) per image key holding points, in file order.
    Raises :class:`PointLayerError` naming every rejected point (``where: reason: detail``).
    """
    layer = read_point_layer(path, class_field="class", need_image=True)
    points, rejected = match_images(layer, table, sizes, transforms)
    if rejected:
        raise problems_error([layer.describe(r) for r in rejected])
    return points


def match_images(layer: PointLayer, table: ClassTable, sizes: Mapping[str, tuple[int, int]],
                 transforms: Mapping[str, Transform] | None = None
                 ) -> tuple[dict[str, np.ndarray], tuple[Rejected, ...]]:
    """Place every point of ``layer`` on the dataset image its ``image`` value names.

    ``sizes`` maps image keys (:func:`training.points.files.image_key` of the names points may
    use) to (H, W) in pixels; the image value's key must be one of them, else
    :attr:`Reason.UNKNOWN_IMAGE`. ``transforms`` maps the keys of georeferenced images to map
    (X, Y) -> pixel (col, row); their points are map coordinates in the image's own CRS (the
    layer's CRS is not used), unless the layer holds pixel coordinates (CSV, or a GeoJSON with
    :data:`PIXEL_SWITCH`). Other points are pixel (x = column, y = row). Classes as in
    :func:`match_points` (ids or names of ``table``); pixel = floor of (col, row), else
    :attr:`Reason.OUTSIDE`.

    Returns ((K, 3) int64 (row, col, class id) per image key holding points, in layer order;
    the rejected points in layer order).
    """
    keys = tuple(sizes)
    _, mapping = resolve_classes(layer.values(), table)
    to_pixel = [None if transforms is None or layer.pixel_coordinates else transforms.get(key)
                for key in keys]
    state = _MatchState(layer, len(keys))
    state.check_classes(table, mapping)
    state.check_image_keys(keys)
    state.place_on_images(keys, [sizes[key] for key in keys], to_pixel)
    points, _ = state.placed_points()
    return {key: pts for key, pts in zip(keys, points) if len(pts)}, state.rejections()


def require_usable(result: MatchResult) -> MatchResult:
    """Return ``result`` when it holds a usable point; else raise ``PointLayerError("no usable points: ...")``
    with the counts per reason."""
    if result.num_usable:
        return result
    counts = [f"{n} {reason}" for reason, n in result.counts().items() if reason != "usable"]
    raise PointLayerError(f"no usable points: {len(result.layer)} in {result.layer.path}"
                          + (" (" + ", ".join(counts) + ")" if counts else "")
                          + f" on {len(result.rasters)} raster(s)" + outside_extents(result))


def outside_extents(result: MatchResult) -> str:
    """``; the points' bounds ... and the rasters' bounds ... in <CRS>`` for the points outside
    every raster (map coordinates), both in the first georeferenced raster's CRS; "" when no
    point is outside or the extents cannot be compared."""
    outside = {r.feature_id for r in result.rejected if r.reason == Reason.OUTSIDE}
    if not outside or result.layer.pixel_coordinates:
        return ""
    target, boxes = None, []
    for path in result.rasters:
        with _open_raster(path) as src:
            if src.crs is None:
                continue
            target = target or src.crs
            boxes.append(rasterio.warp.transform_bounds(src.crs, target, *src.bounds))
    if target is None:
        return ""
    xs = np.array([f.x for f in result.layer.features if f.fid in outside], dtype=np.float64)
    ys = np.array([f.y for f in result.layer.features if f.fid in outside], dtype=np.float64)
    if result.layer.crs is not None:
        to_target = Transformer.from_crs(result.layer.crs, CRS.from_user_input(target.to_wkt()),
                                         always_xy=True)
        xs, ys = (np.asarray(v, dtype=np.float64) for v in to_target.transform(xs, ys))
    finite = np.isfinite(xs) & np.isfinite(ys)
    if not finite.any():
        return ""
    digits = 6 if target.is_geographic else 1

    def bounds(x0: float, y0: float, x1: float, y1: float) -> str:
        return f"x {x0:.{digits}f} to {x1:.{digits}f}, y {y0:.{digits}f} to {y1:.{digits}f}"

    xs, ys = xs[finite], ys[finite]
    boxes_arr = np.array(boxes)
    rasters = bounds(boxes_arr[:, 0].min(), boxes_arr[:, 1].min(), boxes_arr[:, 2].max(),
                     boxes_arr[:, 3].max())
    return (f"; the points' bounds ({bounds(xs.min(), ys.min(), xs.max(), ys.max())}) and the "
            f"rasters' bounds ({rasters}) in the rasters' CRS {target.to_string()} do not meet: "
            f"check the layer's CRS (--csv-crs for a CSV)")
