"""The clicks of a labelling page, kept in a GeoPackage point layer that ``geoseg train`` reads.

Every change (add, move, delete) rewrites the layer at once: written to a temporary file beside
it, then renamed over it (``os.replace``), so a crash or a closed tab loses nothing and a reader
never sees half a file. Points are stored at pixel centres in the rasters' CRS, with the class
name in :data:`CLASS_FIELD` and the raster's file stem in :data:`IMAGE_FIELD` (so that
``geoseg train --images ... --points layer.gpkg --class-field landcover`` places each point on the
raster it was clicked on). A lock file (``layer.gpkg.lock``, the page's process id) keeps a
second page off the same layer.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from pyproj import CRS

from model.class_table import ClassTable
from training.points.files import PointLayerError
from training.points.layer import read_point_layer

CLASS_FIELD = "landcover"
IMAGE_FIELD = "image"
LAYER_NAME = "points"


class StoreError(ValueError):
    """A layer that cannot be used: another CRS, a class not in the table, locked."""


@dataclass(frozen=True)
class Click:
    """One click: ``id`` unique in the layer, ``image`` the raster's stem, ``x``, ``y`` map
    coordinates (CRS units) of the pixel centre, ``class_id`` in the class table."""

    id: int
    image: str
    x: float
    y: float
    class_id: int


class LayerLock:
    """``<layer>.lock`` holding this process's id; a lock whose process is gone is taken over."""

    def __init__(self, layer: Path) -> None:
        self.path = layer.with_name(layer.name + ".lock")

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreError` naming the process that holds it."""
        try:
            other = int(self.path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            other = 0
        if other and other != os.getpid() and _alive(other):
            raise StoreError(f"{self.path.with_suffix('')} is open in another labelling page "
                             f"(process {other}); close that one first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(str(os.getpid()))

    def release(self) -> None:
        """Remove the lock if it is this process's."""
        try:
            if int(self.path.read_text().strip() or 0) == os.getpid():
                self.path.unlink()
        except (FileNotFoundError, ValueError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ClickStore:
    """The clicks of one layer, in memory and on disk after every change (thread-safe)."""

    def __init__(self, path: Path, crs: CRS, table: ClassTable,
                 locate: Callable[[float, float], str] = lambda x, y: "") -> None:
        """``locate(x, y)``: the name of the raster that holds map point x, y ("" for none),
        for points of an existing layer that name no raster (a layer drawn in QGIS)."""
        self.path, self.crs, self.table = path, crs, table
        self._lock = threading.Lock()
        self._clicks: dict[int, Click] = {}
        if path.exists():
            for click in self._read(locate):
                self._clicks[click.id] = click
        self._next = max(self._clicks, default=0) + 1

    def _read(self, locate: Callable[[float, float], str]) -> list[Click]:
        """The clicks of an existing layer; :class:`StoreError` for another CRS or an unknown
        class."""
        try:
            layer = read_point_layer(self.path, CLASS_FIELD)
        except PointLayerError as exc:
            raise StoreError(str(exc)) from None
        if layer.crs is not None and not CRS(layer.crs).equals(self.crs):
            raise StoreError(f"{self.path} is in {CRS(layer.crs).to_string()}, the rasters in "
                             f"{self.crs.to_string()}: use another layer file or reproject it")
        clicks = []
        for feature in layer.features:
            name = str(feature.value) if feature.value is not None else ""
            if name not in self.table.names:
                raise StoreError(f"{layer.where(feature.fid)}: class {name!r} is not in the class "
                                 f"table ({', '.join(self.table.names)})")
            image = feature.image or locate(feature.x, feature.y)
            clicks.append(Click(feature.fid, image, feature.x, feature.y,
                                self.table.names.index(name)))
        return clicks

    def all(self) -> list[Click]:
        """Every click, oldest first."""
        with self._lock:
            return sorted(self._clicks.values(), key=lambda c: c.id)

    def add(self, image: str, x: float, y: float, class_id: int) -> Click:
        """A new click, saved before it is returned."""
        self._check_class(class_id)
        with self._lock:
            click = Click(self._next, image, float(x), float(y), int(class_id))
            self._clicks[click.id] = click
            self._next += 1
            self._save()
            return click

    def move(self, click_id: int, x: float, y: float, class_id: int | None = None) -> Click:
        """Click ``click_id`` at a new place (and class), saved; KeyError if there is none."""
        with self._lock:
            old = self._clicks[click_id]
            new_class = old.class_id if class_id is None else class_id
            self._check_class(new_class)
            click = Click(old.id, old.image, float(x), float(y), int(new_class))
            self._clicks[click_id] = click
            self._save()
            return click

    def delete(self, click_id: int) -> None:
        """Remove click ``click_id``, saved; KeyError if there is none."""
        with self._lock:
            del self._clicks[click_id]
            self._save()

    def _check_class(self, class_id: int) -> None:
        if not 0 <= class_id < self.table.num_classes:
            raise StoreError(f"class id {class_id} is not in the class table "
                             f"(0..{self.table.num_classes - 1})")

    def _save(self) -> None:
        """Write every click to a temporary GeoPackage, then rename it over the layer."""
        clicks = sorted(self._clicks.values(), key=lambda c: c.id)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp.gpkg")
        tmp.unlink(missing_ok=True)
        xy = np.array([[c.x, c.y] for c in clicks], np.float64).reshape(-1, 2)
        geoms = np.array(shapely.to_wkb(shapely.points(xy)), dtype=object) if clicks else \
            np.zeros(0, dtype=object)
        names = np.array([self.table.names[c.class_id] for c in clicks], dtype=object)
        images = np.array([c.image for c in clicks], dtype=object)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pyogrio.raw.write(tmp, geoms, [names, images], [CLASS_FIELD, IMAGE_FIELD],
                          geometry_type="Point", crs=self.crs.to_wkt(), driver="GPKG",
                          layer=LAYER_NAME)
        os.replace(tmp, self.path)

    def as_json(self) -> list[dict[str, object]]:
        """Every click as a dict (for the page)."""
        return [asdict(c) for c in self.all()]
