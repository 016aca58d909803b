"""A raster opened for windowed reads, with the handler's reflection at its edges.

Windows are given in image coordinates and may reach past the raster: those pixels are
reflections (``handler.tiling.reflect_index``), exactly what the handler builds for one
request, so a scene read window by window gives the same tiles as one giant request. Only the
rows and columns a window needs are read (never the whole raster).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from handler.decode import bands_to_rgb, raster_bands, valid_mask
from handler.scaling import BandScaling, percentile_scaling, to_uint8
from handler.tiling import reflect_index

FALLBACK_SAMPLE_PIXELS = 4_000_000
"""Pixels read (decimated) to fit the percentile fallback over a whole scene."""


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
        step = max(1, int(np.sqrt(self.height * self.width / FALLBACK_SAMPLE_PIXELS)))
        shape = (len(self.bands), max(1, self.height // step), max(1, self.width // step))
        sample = self.dataset.read(self.bands, out_shape=shape)
        return percentile_scaling(sample, valid_mask(self.dataset, out_shape=shape[1:]))

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
