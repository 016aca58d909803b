"""Small georeferenced rasters for the labelling page's tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

PIXEL_M = 0.5
ORIGIN = (300000.0, 2780000.0)
LEFT_RGB, RIGHT_RGB = (40, 100, 200), (200, 180, 120)


def two_halves(path: Path, height: int = 300, width: int = 400, crs: str = "EPSG:32640",
               seed: int = 0, left: tuple[int, int, int] = LEFT_RGB,
               right: tuple[int, int, int] = RIGHT_RGB, noise: float = 12.0) -> Path:
    """A GeoTIFF whose left half is noisy blue and right half noisy sand (or ``left`` and
    ``right`` with Gaussian ``noise`` of that standard deviation): (3, H, W) uint8 at
    ``ORIGIN``, ``PIXEL_M`` m pixels."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), np.float64)
    rgb[:, : width // 2] = left
    rgb[:, width // 2:] = right
    rgb += rng.normal(0, noise, rgb.shape)
    bands = np.moveaxis(np.clip(rgb, 0, 255).astype(np.uint8), -1, 0)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3,
                       dtype="uint8", crs=crs, transform=from_origin(*ORIGIN, PIXEL_M, PIXEL_M)) as dst:
        dst.write(bands)
    return path


def pixel_centre(row: int, col: int) -> tuple[float, float]:
    """Map x, y of the centre of pixel (row, col) of :func:`two_halves`' rasters."""
    return ORIGIN[0] + (col + 0.5) * PIXEL_M, ORIGIN[1] - (row + 0.5) * PIXEL_M
