"""A raster as the labelling page shows it: a pyramid of 256 px PNG tiles and a small overview.

Level 0 is the raster at full resolution, level L every 2**L-th pixel (read decimated by GDAL,
from the raster's overviews where it has them), cut in :data:`TILE` x :data:`TILE` tiles; tile
(L, tx, ty) covers raster pixels [tx * TILE * 2**L, (tx + 1) * TILE * 2**L) across and the same
down. Bands become RGB by GeoSeg's one rule (``scene.source.SceneSource``: 8-bit as is, wider
types by their percentile stretch over the whole scene); nodata is transparent.
"""
from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pyproj import CRS

from handler.decode import valid_mask
from scene.source import SceneError, SceneSource

TILE = 256


@dataclass(frozen=True)
class Overview:
    """The raster decimated by ``step`` (an integer >= 1): ``rgb`` (h, w, 3) uint8 and ``valid``
    (h, w) bool; overview pixel (r, c) covers raster pixels from (r * step, c * step)."""

    rgb: np.ndarray
    valid: np.ndarray
    step: int


class RasterView:
    """One georeferenced raster opened for the page. SceneError (one line) when it cannot be
    read or has no CRS."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.source = SceneSource(self.path)
        dataset = self.source.dataset
        if dataset.crs is None:
            self.source.close()
            raise SceneError(f"{self.path}: not georeferenced (no CRS): the clicks are saved in "
                             f"map coordinates; give a GeoTIFF with a CRS")
        self.crs = CRS.from_wkt(dataset.crs.to_wkt())
        self.transform = dataset.transform
        self.width, self.height = dataset.width, dataset.height
        self.name = self.path.stem
        self.levels = max(0, math.ceil(math.log2(max(self.width, self.height) / TILE)))
        self._read_lock = threading.Lock()  # one GDAL dataset handle is not safe across threads

    def info(self) -> dict[str, object]:
        """What the page needs to lay the raster out."""
        return {"name": self.name, "width": self.width, "height": self.height,
                "levels": self.levels, "tile": TILE, "crs": self.crs.to_string()}

    def read(self, box: tuple[int, int, int, int], out: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (col0, row0, width, height) of the raster decimated to ``out`` (h, w):
        (h, w, 3) uint8 RGB and (h, w) bool valid."""
        from rasterio.windows import Window

        window = Window(*box)
        with self._read_lock:  # the page's tiles are requested in parallel
            bands = self.source.dataset.read(self.source.bands, window=window, out_shape=(
                len(self.source.bands), *out))
            valid = valid_mask(self.source.dataset, window, out)
        return self.source.rgb(bands), (np.ones(out, bool) if valid is None else valid)

    def tile_png(self, level: int, tx: int, ty: int) -> bytes:
        """PNG (RGBA, at most TILE x TILE) of tile (level, tx, ty); ValueError outside."""
        step = 2 ** level
        if not 0 <= level <= self.levels:
            raise ValueError(f"level {level} is outside 0..{self.levels}")
        span = TILE * step
        col0, row0 = tx * span, ty * span
        if tx < 0 or ty < 0 or col0 >= self.width or row0 >= self.height:
            raise ValueError(f"tile {tx}, {ty} of level {level} is outside the raster")
        w, h = min(span, self.width - col0), min(span, self.height - row0)
        out = (max(1, math.ceil(h / step)), max(1, math.ceil(w / step)))
        rgb, valid = self.read((col0, row0, w, h), out)
        rgba = np.dstack([rgb, np.where(valid, 255, 0).astype(np.uint8)])
        buffer = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def overview(self, max_side: int) -> Overview:
        """The whole raster decimated by the smallest integer step that fits ``max_side``."""
        step = max(1, math.ceil(max(self.width, self.height) / max_side))
        out = (math.ceil(self.height / step), math.ceil(self.width / step))
        rgb, valid = self.read((0, 0, self.width, self.height), out)
        return Overview(rgb, valid, step)

    def map_xy(self, row: float, col: float) -> tuple[float, float]:
        """Map coordinates of raster position (row, col) (pixel units, 0.5 = a pixel's centre)."""
        x, y = self.transform @ (col, row)
        return float(x), float(y)

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        """Raster position (row, col) (float pixel units) of map coordinates ``x``, ``y``."""
        col, row = ~self.transform @ (x, y)
        return float(row), float(col)

    def close(self) -> None:
        self.source.close()
