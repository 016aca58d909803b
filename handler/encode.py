"""Encode a class map (H, W) uint8 into the response formats.

- ``png``: palette PNG; pixel values are the class ids, the palette paints them in the class
  colours (looks right in any viewer, still holds the ids);
- ``geotiff``: one-band uint8 class ids with the colour map, zlib-compressed, carrying the
  input's GeoTIFF tags unchanged (georeferencing survives byte for byte);
- ``json``: per-class pixel count, fraction and, for projected GeoTIFF input, area in m^2;
- ``overlay``: the input image with the class colours blended over it, as JPEG.
"""
from __future__ import annotations

import io
import json
from typing import Optional

import numpy as np
from PIL import Image

from handler.decode import GeoReference
from model.class_table import ClassTable

CONTENT_TYPES = {"png": "image/png", "geotiff": "image/tiff", "json": "application/json",
                 "overlay": "image/jpeg"}
OVERLAY_ALPHA = 0.45


def encode_png(classes: np.ndarray, table: ClassTable, compress_level: int = 3) -> bytes:
    """(H, W) uint8 ids -> palette PNG whose palette is the table's colours (zlib level 3:
    1.1 ms and 11.4 kB for a 512 tile, against 3.0 ms and 8.5 kB at 6; docs/gpu.md)."""
    im = Image.fromarray(classes, mode="L").convert("P")
    im.putpalette(table.palette().reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_geotiff(classes: np.ndarray, table: ClassTable,
                   georef: Optional[GeoReference]) -> bytes:
    """(H, W) uint8 ids -> one-band GeoTIFF with the table's colour map and ``georef``'s tags."""
    import tifffile

    colormap = table.palette().T.astype(np.uint16) * 257  # (3, 256), 16-bit per TIFF
    buf = io.BytesIO()
    tifffile.imwrite(buf, classes, photometric="palette", colormap=colormap,
                     compression="zlib",
                     extratags=[(code, dtype, count, value, True)
                                for code, dtype, count, value in (georef.tags if georef else [])])
    return buf.getvalue()


def class_summary(classes: np.ndarray, table: ClassTable,
                  georef: Optional[GeoReference]) -> dict:
    """Per-class pixel count, fraction of the image, and area in m^2 where known."""
    n = table.num_classes
    counts = np.bincount(classes.reshape(-1), minlength=n)[:n]
    total = int(classes.size)
    area = georef.pixel_area_m2 if georef else None
    return {
        "width": int(classes.shape[1]), "height": int(classes.shape[0]),
        "georeferenced": georef is not None, "crs": georef.crs if georef else None,
        "pixel_area_m2": area,
        "classes": [{"id": i, "name": name, "color": list(c), "pixels": int(counts[i]),
                     "fraction": counts[i] / total if total else 0.0,
                     "area_m2": None if area is None else float(counts[i] * area)}
                    for i, (name, c) in enumerate(zip(table.names, table.colors))],
    }


def encode_overlay(rgb: np.ndarray, classes: np.ndarray, table: ClassTable) -> bytes:
    """The (H, W, 3) input with the class colours blended over it, as JPEG."""
    painted = table.palette()[classes].astype(np.float32)
    blend = rgb.astype(np.float32) * (1 - OVERLAY_ALPHA) + painted * OVERLAY_ALPHA
    buf = io.BytesIO()
    Image.fromarray(np.clip(blend, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def encode(fmt: str, classes: np.ndarray, rgb: np.ndarray, table: ClassTable,
           georef: Optional[GeoReference]) -> tuple[bytes, str]:
    """(body, content type) of ``classes`` in format ``fmt`` (a key of CONTENT_TYPES)."""
    if fmt == "png":
        body = encode_png(classes, table)
    elif fmt == "geotiff":
        body = encode_geotiff(classes, table, georef)
    elif fmt == "json":
        body = json.dumps(class_summary(classes, table, georef)).encode()
    elif fmt == "overlay":
        body = encode_overlay(rgb, classes, table)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return body, CONTENT_TYPES[fmt]
