"""Point labels: simulate them from dense masks, or read real annotations from files.

Points are int64 arrays of shape (K, 3) with columns (row y, column x, class id); a sparse
label is a uint8 (H, W) array holding the class id at each point and 255 elsewhere.

Readers (every bad row is reported with file and line, never dropped):

- CSV with header ``image,x,y,class`` (x = column, y = row, in pixels; class = id or name;
  names matched case-insensitively, ``col`` / ``column`` and ``row`` taken for x and y);
- GeoJSON FeatureCollection of Point features with properties ``image`` and ``class``;
  coordinates are map coordinates when the image is georeferenced (converted with its affine
  transform), pixel (x, y) otherwise; a top-level ``"geoseg:coordinates": "pixel"`` forces pixels;
- sparse label PNGs: one band, class ids at labelled pixels, 255 elsewhere.
"""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import numpy as np
from PIL import Image

from model.class_table import IGNORE_INDEX, ClassTable

Points = np.ndarray  # (K, 3) int64: y, x, class id
Transform = Callable[[float, float], tuple[float, float]]  # map (X, Y) -> pixel (col, row)


class PointFileError(ValueError):
    """A point file with a bad row; the message starts with ``file:line:``."""


def simulate_points(mask: np.ndarray, points_per_class: int, seed: int | list[int]) -> Points:
    """Pick ``points_per_class`` random pixels of each class present in ``mask`` (H, W).

    Pixels equal to 255 are never picked. A class with fewer pixels gives all of them.
    Deterministic in ``seed``. Returns (K, 3) int64 rows (y, x, class), sorted by class.
    """
    if points_per_class < 1:
        raise ValueError("points_per_class must be at least 1")
    rng = np.random.default_rng(seed)
    flat = mask.reshape(-1)
    chosen: list[np.ndarray] = []
    for class_id in np.unique(flat):
        if class_id == IGNORE_INDEX:
            continue
        where = np.flatnonzero(flat == class_id)
        pick = rng.choice(where, size=min(points_per_class, where.size), replace=False)
        chosen.append(np.sort(pick))
    if not chosen:
        return np.zeros((0, 3), dtype=np.int64)
    idx = np.concatenate(chosen)
    ys, xs = np.divmod(idx, mask.shape[1])
    return np.stack([ys, xs, flat[idx].astype(np.int64)], axis=1).astype(np.int64)


def points_to_label(points: Points, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise points (K, 3) into a sparse label (H, W) uint8 with 255 elsewhere."""
    label = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    if len(points):
        label[points[:, 0], points[:, 1]] = points[:, 2].astype(np.uint8)
    return label


def label_to_points(label: np.ndarray) -> Points:
    """Inverse of :func:`points_to_label`: the labelled pixels of a sparse label."""
    ys, xs = np.nonzero(label != IGNORE_INDEX)
    return np.stack([ys, xs, label[ys, xs].astype(np.int64)], axis=1).astype(np.int64)


def image_key(name: str) -> str:
    """The key an annotation's image name is matched by: posix path without extension."""
    return str(PurePosixPath(name.replace("\\", "/")).with_suffix(""))


def _check_point(where: str, key: str, col: float, row: float, class_value: Any,
                 table: ClassTable, image_sizes: Optional[Mapping[str, tuple[int, int]]]
                 ) -> tuple[int, int, int]:
    """Validate one point; returns (y, x, class id) or raises PointFileError at ``where``."""
    try:
        class_id = table.class_id(class_value)
    except KeyError as exc:
        raise PointFileError(f"{where}: {exc.args[0]}") from None
    x, y = int(np.floor(col)), int(np.floor(row))
    if image_sizes is not None:
        if key not in image_sizes:
            raise PointFileError(f"{where}: image {key!r} is not in the dataset")
        h, w = image_sizes[key]
        if not (0 <= x < w and 0 <= y < h):
            raise PointFileError(f"{where}: point x={col:g}, y={row:g} is outside image "
                                 f"{key!r} ({w}x{h} pixels)")
    elif x < 0 or y < 0:
        raise PointFileError(f"{where}: negative pixel coordinate x={col:g}, y={row:g}")
    return y, x, class_id


def _group(rows: dict[str, list[tuple[int, int, int]]]) -> dict[str, Points]:
    return {k: np.asarray(v, dtype=np.int64).reshape(-1, 3) for k, v in rows.items()}


def read_points_csv(path: str | Path, table: ClassTable,
                    image_sizes: Optional[Mapping[str, tuple[int, int]]] = None
                    ) -> dict[str, Points]:
    """Read ``image,x,y,class`` rows; returns points per image key (see :func:`image_key`)."""
    path = Path(path)
    rows: dict[str, list[tuple[int, int, int]]] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = _pixel_csv_columns(path, [(f or "").strip() for f in reader.fieldnames or []])
        for raw in reader:
            row = {columns.get(k.strip().lower(), ""): (v or "").strip()
                   for k, v in raw.items() if k is not None}
            where = f"{path}:{reader.line_num}"
            try:
                col, r = float(row["x"]), float(row["y"])
            except ValueError:
                raise PointFileError(f"{where}: x and y must be numbers, got "
                                     f"x={row['x']!r}, y={row['y']!r}") from None
            if not row["image"]:
                raise PointFileError(f"{where}: empty image name")
            key = image_key(row["image"])
            rows.setdefault(key, []).append(
                _check_point(where, key, col, r, row["class"], table, image_sizes))
    return _group(rows)


PIXEL_CSV_COLUMNS = {"image": ("image",), "x": ("x", "col", "column"), "y": ("y", "row"),
                     "class": ("class",)}
"""The columns of a pixel CSV and the names (any case) each may go by."""


def _pixel_csv_columns(path: Path, fields: list[str]) -> dict[str, str]:
    """Lower-cased header name -> its column (image, x, y, class); PointFileError naming the
    missing or doubled ones."""
    columns: dict[str, str] = {}
    for column, names in PIXEL_CSV_COLUMNS.items():
        found = [f for f in fields if f.lower() in names]
        if len(found) != 1:
            problem = "misses" if not found else f"has {len(found)} ({', '.join(found)}) of"
            raise PointFileError(f"{path}:1: header {problem} the column {column} "
                                 f"(image,x,y,class; got {','.join(fields) or 'nothing'})")
        columns[found[0].lower()] = column
    return columns


_FEATURE_RE = re.compile(r'"type"\s*:\s*"Feature"')


def read_points_geojson(path: str | Path, table: ClassTable,
                        image_sizes: Optional[Mapping[str, tuple[int, int]]] = None,
                        transforms: Optional[Mapping[str, Transform]] = None
                        ) -> dict[str, Points]:
    """Read Point features (properties ``image``, ``class``); returns points per image key.

    ``transforms`` maps an image key to a function map (X, Y) -> pixel (col, row) for
    georeferenced images; their points are taken as map coordinates.
    """
    path = Path(path)
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PointFileError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" \
            or not isinstance(data.get("features"), list):
        raise PointFileError(f"{path}:1: expected a GeoJSON FeatureCollection")
    force_pixel = data.get("geoseg:coordinates") == "pixel"
    feature_lines = [text.count("\n", 0, m.start()) + 1 for m in _FEATURE_RE.finditer(text)]
    rows: dict[str, list[tuple[int, int, int]]] = {}
    for k, feature in enumerate(data["features"]):
        line = feature_lines[k] if k < len(feature_lines) else 1
        where = f"{path}:{line} (feature {k})"
        geometry = feature.get("geometry") or {}
        props = feature.get("properties") or {}
        coords = geometry.get("coordinates")
        if geometry.get("type") != "Point" or not isinstance(coords, list) or len(coords) < 2:
            raise PointFileError(f"{where}: geometry must be a Point with coordinates [x, y]")
        if "image" not in props or "class" not in props:
            raise PointFileError(f"{where}: properties need 'image' and 'class'")
        key = image_key(str(props["image"]))
        try:
            col, row = float(coords[0]), float(coords[1])
        except (TypeError, ValueError):
            raise PointFileError(f"{where}: coordinates must be numbers, got {coords}") from None
        to_pixel = None if force_pixel or transforms is None else transforms.get(key)
        if to_pixel is not None:
            col, row = to_pixel(col, row)
        rows.setdefault(key, []).append(
            _check_point(where, key, col, row, props["class"], table, image_sizes))
    return _group(rows)


def read_sparse_png(path: str | Path, table: ClassTable,
                    shape: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Read a sparse label PNG (H, W) uint8; values must be class ids or 255."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise PointFileError(f"{path}: sparse labels must be one band (mode L or P), "
                                     f"got mode {im.mode}")
            label = np.array(im)
    except (OSError, SyntaxError) as exc:
        raise PointFileError(f"{path}: not a readable PNG ({exc})") from None
    if shape is not None and label.shape != tuple(shape):
        raise PointFileError(f"{path}: label is {label.shape[1]}x{label.shape[0]} pixels, "
                             f"its image {shape[1]}x{shape[0]}")
    bad = (label >= table.num_classes) & (label != IGNORE_INDEX)
    if bad.any():
        y, x = np.argwhere(bad)[0]
        raise PointFileError(f"{path}: row {y}, column {x}: value {label[y, x]} is neither a "
                             f"class id (0..{table.num_classes - 1}) nor {IGNORE_INDEX}")
    return label


def georeferencing(path: str | Path) -> Optional[Transform]:
    """Map (X, Y) -> pixel (col, row) of a georeferenced raster, or None for plain images."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    import rasterio  # GDAL is needed only for georeferenced rasters

    with rasterio.open(path) as src:
        if src.crs is None and src.transform.is_identity:
            return None
        inverse = ~src.transform
    return lambda x, y: inverse @ (x, y)


def read_point_annotations(path: str | Path, table: ClassTable,
                           image_sizes: Mapping[str, tuple[int, int]],
                           transforms: Optional[Mapping[str, Transform]] = None
                           ) -> dict[str, Points]:
    """Read a CSV, a GeoJSON, or a folder of sparse PNGs named ``<image key>.png``."""
    path = Path(path)
    if path.is_dir():
        out: dict[str, Points] = {}
        for png in sorted(path.rglob("*.png")):
            key = image_key(str(png.relative_to(path)))
            if key not in image_sizes:
                raise PointFileError(f"{png}: no image {key!r} in the dataset")
            out[key] = label_to_points(read_sparse_png(png, table, image_sizes[key]))
        return out
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_points_csv(path, table, image_sizes)
    if suffix in (".geojson", ".json"):
        return read_points_geojson(path, table, image_sizes, transforms)
    raise PointFileError(f"{path}: unknown point file type {suffix!r} (use .csv, .geojson, "
                         f"or a folder of sparse .png labels)")
