"""Point labels: simulate them from dense masks, or read real annotations from files.

Points are int64 arrays of shape (K, 3) with columns (row y, column x, class id); a sparse
label is a uint8 (H, W) array holding the class id at each point and 255 elsewhere.

:func:`read_point_annotations` reads the points of ``geoseg train --point-file`` on the images of
a dataset. CSV and GeoJSON go through the point-layer reader (:mod:`training.points.layer`,
loaded only then), with its rules:

- CSV with header ``image,x,y,class`` (x = column, y = row, in pixels; class = id or name;
  names matched case-insensitively, ``col`` / ``column`` and ``row`` taken for x and y);
- GeoJSON FeatureCollection of Point features with properties ``image`` and ``class``;
  coordinates are map coordinates in the image's own CRS when the image is georeferenced
  (converted with its affine transform, not reprojected), pixel (x, y) otherwise; a top-level
  ``"geoseg:coordinates": "pixel"`` forces pixels;
- sparse label PNGs: one band, class ids at labelled pixels, 255 elsewhere.

Every bad point (or label file) is reported with its reason and where it is (``file:line`` for
CSV rows, ``file: feature N`` for GeoJSON features, ``file: row, column`` for PNG pixels), all in
one :class:`PointLayerError`; none is dropped.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np
from PIL import Image

from model.class_table import IGNORE_INDEX, ClassTable
from training.points.options import PointInputError

Points = np.ndarray  # (K, 3) int64: y, x, class id
Transform = Callable[[float, float], tuple[float, float]]  # map (X, Y) -> pixel (col, row)

POINT_FILE_SUFFIXES = (".csv", ".geojson", ".json")
"""File types of a point file; a folder holds sparse label PNGs."""

SHOWN_PROBLEMS = 10
"""Problems named one by one in a :class:`PointLayerError`; beyond, only their number."""


class PointLayerError(PointInputError):
    """A point file, point layer or raster that cannot be used; the message is one line naming
    the file and, for bad points, each point (up to :data:`SHOWN_PROBLEMS`) with its reason.

    Defined here, away from the GIS stack that :mod:`training.points.layer` loads, so that a
    trainer can catch it without importing GDAL; that module exports it under the same name."""


PointFileError = PointLayerError
"""The former name of the point-file error, kept for old callers: the same class."""


def problems_error(problems: Sequence[str], what: str = "bad points", hint: str = "",
                   total: Optional[int] = None) -> PointLayerError:
    """One error for every problem of a point input, each ``where: reason[: detail]``.

    The message is the one problem, or ``<total> <what>: first; second; ...; and N more``
    naming the first :data:`SHOWN_PROBLEMS`. ``total`` is the number of problems when
    ``problems`` holds only the first ones (default ``len(problems)``); ``hint`` (how to fix
    them all) ends the message.
    """
    total = len(problems) if total is None else total
    shown = list(problems[:SHOWN_PROBLEMS])
    if total > len(shown):
        shown.append(f"and {total - len(shown)} more")
    head = f"{total} {what}: " if total > 1 else ""
    return PointLayerError(head + "; ".join([*shown, *([hint] if hint else [])]))


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


def read_sparse_png(path: str | Path, table: ClassTable,
                    shape: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Read a sparse label PNG (H, W) uint8; values must be class ids or 255.

    ``shape`` (H, W) is its image's size in pixels. Raises :class:`PointLayerError` naming every
    bad pixel (the first :data:`SHOWN_PROBLEMS` and their number).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise PointLayerError(f"{path}: sparse labels must be one band (mode L or P), "
                                      f"got mode {im.mode}")
            label = np.array(im)
    except (OSError, SyntaxError) as exc:
        raise PointLayerError(f"{path}: not a readable PNG ({exc})") from None
    if shape is not None and label.shape != tuple(shape):
        raise PointLayerError(f"{path}: label is {label.shape[1]}x{label.shape[0]} pixels, "
                              f"its image {shape[1]}x{shape[0]}")
    bad = np.argwhere((label >= table.num_classes) & (label != IGNORE_INDEX))
    if len(bad):
        problems = [f"{path}: row {y}, column {x}: value {label[y, x]} is neither a class id "
                    f"(0..{table.num_classes - 1}) nor {IGNORE_INDEX}" for y, x in bad[:SHOWN_PROBLEMS]]
        raise problems_error(problems, "bad pixels", total=len(bad))
    return label


def read_sparse_folder(folder: str | Path, table: ClassTable,
                       image_sizes: Mapping[str, tuple[int, int]]) -> dict[str, Points]:
    """The points of a folder of sparse label PNGs named ``<image key>.png`` (subfolders = the
    key's folders); ``image_sizes`` maps image keys to (H, W) pixels. Returns points (K, 3) per
    image key; raises :class:`PointLayerError` naming every bad file."""
    folder = Path(folder)
    out: dict[str, Points] = {}
    problems: list[str] = []
    for png in sorted(folder.rglob("*.png")):
        key = image_key(str(png.relative_to(folder)))
        if key not in image_sizes:
            problems.append(f"{png}: no image {key!r} in the dataset")
            continue
        try:
            out[key] = label_to_points(read_sparse_png(png, table, image_sizes[key]))
        except PointLayerError as exc:
            problems.append(str(exc))
    if problems:
        raise problems_error(problems, "bad sparse label files")
    return out


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
    """Read a CSV, a GeoJSON, or a folder of sparse PNGs named ``<image key>.png``.

    ``image_sizes`` maps every image key a point may name to its (H, W) in pixels;
    ``transforms`` maps the keys of georeferenced images to map (X, Y) -> pixel (col, row).
    Returns (K, 3) int64 rows (row, col, class id) per image key holding points, in file order.
    Raises :class:`PointLayerError` listing every bad point with its reason.
    """
    path = Path(path)
    if path.is_dir():
        return read_sparse_folder(path, table, image_sizes)
    suffix = path.suffix.lower()
    if suffix not in POINT_FILE_SUFFIXES:
        raise PointLayerError(f"{path}: unknown point file type {suffix!r} (use .csv, .geojson, "
                              f"or a folder of sparse .png labels)")
    from training.points.layer import read_image_points  # loads GDAL / PROJ: only for point files

    return read_image_points(path, table, image_sizes, transforms)
