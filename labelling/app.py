"""What the labelling page asks of the server, as plain methods (the HTTP layer is
``labelling.server``): the rasters and classes, tiles, clicks (saved at once), the quick map and
suggestions. Errors are :class:`PageError` with the HTTP status and a one-line message."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelling.jobs import Job, Step
from labelling.quickmap import OVERVIEW_SIDE, QuickMapError, QuickMapper, class_map_png
from labelling.raster import RasterView
from labelling.store import ClickStore, LayerLock, StoreError
from model.class_table import ClassTable
from scene.source import SceneError


class PageError(Exception):
    """An answer other than 200: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class TrainingSettings:
    """What the page's "Train" button runs: ``geoseg train`` on the layer with these options
    (MobileNetV3 by default: the network that trains on a CPU), then export."""

    arch: str = "deeplabv3_mobilenet_v3_large"
    epochs: int = 8
    steps_per_epoch: int = 50
    extra: tuple[str, ...] = ()


class LabellingApp:
    """Rasters, class table and the click layer of one page. Raises SceneError / StoreError (one
    line) when a raster cannot be read, the rasters' CRSs differ, the layer is in another CRS,
    holds a class not in the table, or is open in another page.

    ``model``: an exported GeoSeg model (TorchScript or ONNX) whose maps the page can show;
    ``work``: where the page's runs, maps and logs go (default ``<layer>-geoseg/`` beside the
    layer)."""

    def __init__(self, rasters: list[Path], layer: Path, table: ClassTable,
                 model: Path | None = None, work: Path | None = None,
                 training: TrainingSettings = TrainingSettings()) -> None:
        self.table, self.model, self.training = table, model, training
        self.work = work or layer.with_name(layer.stem + "-geoseg")
        self.job = Job()
        self.views: dict[str, RasterView] = {}
        for path in rasters:
            view = RasterView(path)
            if view.name in self.views:
                raise SceneError(f"two rasters named {view.name}: give each raster its own name")
            self.views[view.name] = view
        first = next(iter(self.views.values()))
        for view in self.views.values():
            if not view.crs.equals(first.crs):
                raise SceneError(f"{view.path} is in {view.crs.to_string()}, {first.path} in "
                                 f"{first.crs.to_string()}: label rasters of one CRS at a time")
        self.lock = LayerLock(layer)
        self.lock.acquire()
        try:
            self.store = ClickStore(layer, first.crs, table, self._raster_at)
        except StoreError:
            self.lock.release()
            raise
        self.mapper = QuickMapper(self.views, table)
        self._map_lock = threading.Lock()

    def _raster_at(self, x: float, y: float) -> str:
        """The first raster whose extent holds map point x, y; "" for none."""
        for view in self.views.values():
            row, col = view.pixel(x, y)
            if 0 <= row < view.height and 0 <= col < view.width:
                return view.name
        return ""

    def close(self) -> None:
        """Stop a running job, release the layer's lock and the rasters."""
        self.job.stop()
        self.lock.release()
        for view in self.views.values():
            view.close()

    def state(self) -> dict[str, Any]:
        """Rasters, classes, clicks (each with its raster position) and the layer's path."""
        return {"rasters": [v.info() for v in self.views.values()],
                "classes": [{"id": i, "name": n, "color": list(c)}
                            for i, (n, c) in enumerate(zip(self.table.names, self.table.colors))],
                "clicks": [self._click_json(c) for c in self.store.all()],
                "layer": str(self.store.path),
                "model": str(self.model) if self.model else None,
                "job": self.job.status()}

    def _view(self, name: object) -> RasterView:
        if not isinstance(name, str) or name not in self.views:
            raise PageError(404, f"no raster named {name!r}")
        return self.views[name]

    def _click_json(self, click: Any) -> dict[str, Any]:
        out = {"id": click.id, "image": click.image, "class_id": click.class_id,
               "x": click.x, "y": click.y, "row": None, "col": None}
        if click.image in self.views:
            out["row"], out["col"] = self.views[click.image].pixel(click.x, click.y)
        return out

    def tile(self, name: str, level: int, tx: int, ty: int) -> bytes:
        """PNG tile of raster ``name``."""
        try:
            return self._view(name).tile_png(level, tx, ty)
        except ValueError as exc:
            raise PageError(404, str(exc)) from None

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        """A click at raster position ``row``, ``col`` (pixel units) of ``image``, class
        ``class_id``: saved at the centre of that pixel."""
        view = self._view(body.get("image"))
        x, y = self._pixel_centre(view, body)
        class_id = _class(body, self.table)
        return self._click_json(self.store.add(view.name, x, y, class_id))

    def move(self, click_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """Click ``click_id`` moved to ``row``, ``col`` and/or given ``class_id``."""
        clicks = {c.id: c for c in self.store.all()}
        if click_id not in clicks:
            raise PageError(404, f"no click {click_id}")
        old = clicks[click_id]
        x, y = old.x, old.y
        if "row" in body or "col" in body:
            x, y = self._pixel_centre(self._view(old.image), body)
        class_id = _class(body, self.table) if "class_id" in body else None
        return self._click_json(self.store.move(click_id, x, y, class_id))

    @staticmethod
    def _pixel_centre(view: RasterView, body: dict[str, Any]) -> tuple[float, float]:
        """Map x, y of the centre of the pixel at ``body``'s ``row``, ``col``; PageError for a
        position outside the raster or on no data."""
        row, col = _number(body, "row"), _number(body, "col")
        if not (0 <= row < view.height and 0 <= col < view.width):
            raise PageError(400, f"({row:.0f}, {col:.0f}) is outside {view.name} "
                                 f"({view.height} x {view.width} px)")
        if not view.read((int(col), int(row), 1, 1), (1, 1))[1][0, 0]:
            raise PageError(400, f"({row:.0f}, {col:.0f}) of {view.name} is no data: click on "
                                 f"the photo")
        return view.map_xy(int(row) + 0.5, int(col) + 0.5)

    def delete(self, click_id: int) -> None:
        """Remove click ``click_id``."""
        try:
            self.store.delete(click_id)
        except KeyError:
            raise PageError(404, f"no click {click_id}") from None

    def quick_map(self, name: str) -> tuple[bytes, float, int]:
        """The quick map of raster ``name`` from every click: PNG, seconds, overview step."""
        view = self._view(name)
        with self._map_lock:
            try:
                result = self.mapper.map(view.name, self.store.all())
            except QuickMapError as exc:
                raise PageError(409, str(exc)) from None
        return result.png(self.table), result.seconds, result.step

    def suggest(self, name: str, count: int) -> list[dict[str, float]]:
        """The next ``count`` suggested clicks on raster ``name``."""
        view = self._view(name)
        if not 1 <= count <= 100:
            raise PageError(400, "ask for 1 to 100 suggestions")
        with self._map_lock:
            try:
                return self.mapper.suggestions(view.name, self.store.all(), count,
                                               network=self._network_classes(view.name))
            except QuickMapError as exc:
                raise PageError(409, str(exc)) from None


    def map_path(self, name: str) -> Path:
        """Where the model's map of raster ``name`` is written."""
        return self.work / "maps" / f"{name}.tif"

    def start_model_map(self, name: str) -> dict[str, object]:
        """Start ``geoseg predict`` of raster ``name`` with the current model."""
        view = self._view(name)
        if self.model is None:
            raise PageError(409, "no GeoSeg model yet: train one (button below) or start the "
                                 "page with --model model.pt")
        return self._start("map", [self._predict_step(view)])

    def _predict_step(self, view: RasterView, model: Path | None = None) -> Step:
        return Step("mapping " + view.name, [
            "predict", str(view.path), str(self.map_path(view.name)), "--model",
            str(model or self.model), "--overwrite"])

    def start_training(self, name: str) -> dict[str, object]:
        """Start ``geoseg train`` on every raster and the layer, export its best checkpoint, map
        raster ``name`` with it; the new model becomes the page's model."""
        view = self._view(name)
        clicks = self.store.all()
        if len({c.class_id for c in clicks}) < 2:
            raise PageError(409, "click at least two classes before training")
        run = self.work / "runs" / time.strftime("%Y%m%d-%H%M%S")
        table_file = run.with_name(run.name + "-classes.json")
        table_file.parent.mkdir(parents=True, exist_ok=True)
        self.table.save(table_file)
        model = run / "model.pt"
        s = self.training
        train = ["train", "--images", *[str(v.path) for v in self.views.values()],
                 "--points", str(self.store.path), "--class-field", "landcover",
                 "--classes", str(table_file), "--arch", s.arch, "--epochs", str(s.epochs),
                 "--steps-per-epoch", str(s.steps_per_epoch), "--out", str(run),
                 "--no-progress", *s.extra]
        steps = [Step("training", train),
                 Step("export", ["export", "--checkpoint", str(run / "best.pt"), "--out",
                                 str(model)]),
                 self._predict_step(view, model)]

        def adopt() -> None:
            self.model = model
        return self._start("training", steps, adopt)

    def _start(self, kind: str, steps: list[Step],
               on_done: Callable[[], None] = lambda: None) -> dict[str, object]:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            self.job.start(kind, steps, self.work / "logs" / f"{kind}-{stamp}.log", on_done)
        except RuntimeError as exc:
            raise PageError(409, str(exc)) from None
        return self.job.status()

    def _network_classes(self, name: str) -> np.ndarray | None:
        """The model's map of raster ``name`` read at the quick map's overview size, (h, w)
        uint8, when it exists and is newer than the model; else None."""
        import rasterio

        path = self.map_path(name)
        if self.model is None or not path.is_file() or (
                self.model.is_file() and path.stat().st_mtime < self.model.stat().st_mtime):
            return None
        with rasterio.open(path) as src:
            return np.asarray(src.read(1, out_shape=self.mapper.overview_shape(name)), np.uint8)

    def model_map(self, name: str) -> tuple[bytes, int]:
        """The model's map of raster ``name`` (written by the last map or training job) as an
        RGBA PNG of at most OVERVIEW_SIDE px a side, and its step (raster pixels per PNG pixel)."""
        import rasterio

        view = self._view(name)
        path = self.map_path(view.name)
        if not path.is_file():
            raise PageError(404, f"no model map of {view.name} yet")
        with rasterio.open(path) as src:
            step = max(1, math.ceil(max(src.width, src.height) / OVERVIEW_SIDE))
            classes = src.read(1, out_shape=(math.ceil(src.height / step),
                                             math.ceil(src.width / step)))
        return class_map_png(np.asarray(classes, np.uint8), self.table), step


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PageError(400, f"{key} must be a number")
    return float(value)


def _class(body: dict[str, Any], table: ClassTable) -> int:
    value = body.get("class_id")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < table.num_classes:
        raise PageError(400, f"class {value!r} is not in the class table "
                             f"(0..{table.num_classes - 1}: {', '.join(table.names)})")
    return value


__all__ = ["LabellingApp", "PageError", "SceneError", "StoreError"]
