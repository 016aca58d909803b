"""A raster opened for windowed reads, with the handler's reflection at its edges.

Windows are given in image coordinates and may reach past the raster: those pixels are
reflections (``handler.tiling.reflect_index``), exactly what the handler builds for one
request, so a scene read window by window gives the same tiles as one giant request. Only the
rows and columns a window needs are read (never the whole raster).
"""
from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from handler.decode import bands_to_rgb, raster_bands, valid_mask
from handler.scaling import BandScaling, percentile_scaling, to_uint8
from handler.tiling import reflect_index

GDAL_CACHE_MB = "256"
"""GDAL's block cache for windowed work (its default is 5 % of the machine's memory, which a large
scene fills): windows reuse few blocks, a few hundred MB is plenty."""

SAMPLE_PIXELS = 4_000_000
"""Pixels read (decimated) to measure band statistics: the percentile fallback over a whole
scene here, the band scaling over all training rasters together in training."""


class SceneError(ValueError):
    """An input or output a user must fix; the message is one line."""


@dataclass(frozen=True)
class Window:
    """Rows ``y0:y1`` and columns ``x0:x1`` (image coordinates, possibly outside the raster)."""

    y0: int
    y1: int
    x0: int
    x1: int


class SceneSource:
    """``path`` opened with rasterio. ``read`` gives (B, h, w) raw bands and the (h, w) valid
    mask (None: all valid) of any window; ``rgb`` the (h, w, 3) uint8 image the network sees."""

    def __init__(self, path: str | Path, scaling: Optional[BandScaling] = None) -> None:
        self.path = Path(path)
        self.dataset: Any = open_raster(self.path)
        self.bands = raster_bands(self.dataset)
        self.height, self.width = self.dataset.height, self.dataset.width
        self.dtype = np.dtype(self.dataset.dtypes[0])
        self.scaling = self._scaling(scaling)

    def _scaling(self, model_scaling: Optional[BandScaling]) -> Optional[BandScaling]:
        """The model's statistics when it has them (a band-count mismatch is an error), else
        for rasters that are not 8-bit the percentile fallback over the whole scene."""
        if self.dtype == np.uint8:
            return None
        if model_scaling is not None:
            try:
                return model_scaling.for_bands(len(self.bands))
            except ValueError as exc:
                raise SceneError(f"{self.path}: {exc}") from None
        return percentile_scaling(*decimated_sample(self.dataset, self.bands, SAMPLE_PIXELS))

    @property
    def georeferenced(self) -> bool:
        return self.dataset.crs is not None

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> SceneSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, window: Window) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(B, h, w) raw bands and (h, w) bool valid mask (None: all valid) of ``window``."""
        from rasterio.windows import Window as RioWindow

        rows = reflect_index(np.arange(window.y0, window.y1), self.height)
        cols = reflect_index(np.arange(window.x0, window.x1), self.width)
        r0, c0 = int(rows.min()), int(cols.min())
        box = RioWindow(c0, r0, int(cols.max()) + 1 - c0, int(rows.max()) + 1 - r0)
        bands = self.dataset.read(self.bands, window=box)
        valid = valid_mask(self.dataset, box)
        inside = (0 <= window.y0 and window.y1 <= self.height
                  and 0 <= window.x0 and window.x1 <= self.width)
        if not inside:
            ry, rx = (rows - r0)[:, None], (cols - c0)[None, :]
            bands = bands[:, ry, rx]
            valid = None if valid is None else valid[ry, rx]
        return bands, valid

    def rgb(self, bands: np.ndarray) -> np.ndarray:
        """(B, h, w) raw bands -> (h, w, 3) uint8, by the scene's one scaling rule."""
        return bands_to_rgb(to_uint8(bands, self.scaling))


def reading_note(what: str, dtype: np.dtype | str, count: int, scaling: str) -> Optional[str]:
    """One line ``note: ...`` on how a raster that is not 8-bit RGB is read (``what`` names it,
    ``scaling`` says how values that are not 8-bit reach 0-255), or None for 8-bit RGB(A)."""
    ways = []
    if np.dtype(dtype) != np.uint8:
        ways.append(f"its {np.dtype(dtype)} values are scaled to 0-255 by {scaling}")
    if count == 1:
        ways.append("its one band is read as grey (repeated into R, G, B)")
    elif count == 2:
        ways.append("its first band is read as grey (repeated into R, G, B), the second as alpha")
    elif count > 4:
        ways.append(f"its first 3 of {count} bands are read as R, G, B")
    return f"note: {what}: {'; '.join(ways)}" if ways else None


def cap_gdal_cache() -> None:
    """Set GDAL_CACHEMAX to :data:`GDAL_CACHE_MB` unless the environment sets it; call before
    GDAL's first read."""
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)


def decimated_sample(dataset: Any, bands: list[int], pixels: int
                     ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """About ``pixels`` pixels of the whole raster, read decimated (GDAL's overviews where
    present): (B, h, w) raw ``bands`` and the (h, w) valid mask (None: all valid)."""
    step = max(1, int(np.sqrt(dataset.height * dataset.width / max(1, pixels))))
    shape = (len(bands), max(1, dataset.height // step), max(1, dataset.width // step))
    return dataset.read(bands, out_shape=shape), valid_mask(dataset, out_shape=shape[1:])


RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
"""File names taken from a folder given as input."""


def list_rasters(paths: Sequence[str | Path], what: str = "input") -> list[Path]:
    """Files as given, folders expanded to the rasters inside them, glob patterns (``*``, ``?``,
    ``[``) expanded; each group sorted. SceneError (one line) for a path
    that does not exist, a pattern that matches nothing, or no raster at all."""
    found: list[Path] = []
    for text in map(str, paths):
        path = Path(text)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        elif path.is_file():
            found.append(path)
        elif any(c in text for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise SceneError(f"{what} {text}: the pattern matches no file")
            found += matches
        else:
            raise SceneError(f"{what} {text}: no such file or folder")
    if not found:
        raise SceneError(f"no rasters ({', '.join(RASTER_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def open_raster(path: Path) -> Any:
    """``path`` opened with rasterio; SceneError (one line) when it is not a readable raster."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning on plain images
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise SceneError(f"{path}: not a readable raster ({str(exc).splitlines()[0]})") from None
