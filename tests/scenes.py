"""Georeferenced scenes on disk for the whole-scene tests: synthetic land cover in UTM 40N
(0.5 m pixels) with a nodata collar, 8-bit or 16-bit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from training.data.synthetic import generate_scene

ORIGIN = (300000.0, 2780000.0)
PIXEL_M = 0.5
COLLAR = 12


def scene_bands(height: int, width: int, seed: int = 7, collar: int = COLLAR) -> np.ndarray:
    """(3, height, width) uint8 synthetic scene, 0 (the nodata value) only on its top and left
    ``collar`` rows / columns."""
    rgb, _ = generate_scene((height, width), seed=seed)
    bands = np.moveaxis(rgb, -1, 0).copy()
    bands[bands == 0] = 1
    bands[:, :collar, :] = 0
    bands[:, :, :collar] = 0
    return bands


def write_scene(path: Path, bands: np.ndarray, nodata: float | None = 0,
                origin: tuple[float, float] = ORIGIN, crs: str = "EPSG:32640") -> Path:
    """``bands`` (B, H, W) as a tiled, compressed GeoTIFF at ``origin`` (upper left, metres)."""
    count, h, w = bands.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count,
                       dtype=bands.dtype, crs=crs, nodata=nodata, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate",
                       transform=from_origin(origin[0], origin[1], PIXEL_M, PIXEL_M)) as dst:
        dst.write(bands)
    return path
