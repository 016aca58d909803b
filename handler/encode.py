"""Encode a class map (H, W) uint8 into the response formats.

Class id :data:`NODATA` (255) marks pixels with no data in the input (nodata value, alpha,
mask); its palette entry is black.

- ``png``: palette PNG; pixel values are the class ids, the palette paints them in the class
  colours (looks right in any viewer, still holds the ids);
- ``geotiff``: one-band uint8 class ids with the colour map, zlib-compressed, carrying the
  input's GeoTIFF tags unchanged (georeferencing survives byte for byte), nodata 255 and the
  class names as GDAL band metadata (``CLASS_<id>``); no other tags;
- ``json``: per-class pixel count, fraction and, for projected GeoTIFF input, area in m^2,
  no-data pixels left out (counted in ``nodata_pixels``);
- ``overlay``: the input image with the class colours blended over it, as JPEG (no-data pixels
  shown unblended).
"""
from __future__ import annotations

import io
import json
from typing import Optional

import numpy as np
from PIL import Image

from handler.decode import GeoReference
from model.class_table import IGNORE_INDEX, ClassTable

CONTENT_TYPES = {"png": "image/png", "geotiff": "image/tiff", "json": "application/json",
                 "overlay": "image/jpeg"}
OVERLAY_ALPHA = 0.45
NODATA = IGNORE_INDEX
"""Class id of a pixel with no data in the input."""
GDAL_METADATA, GDAL_NODATA = 42112, 42113
"""GDAL's private TIFF tags (ASCII): XML metadata, and the nodata value."""


def mark_nodata(classes: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
    """(H, W) class ids with :data:`NODATA` where ``valid`` (H, W) bool is False (in place)."""
    if valid is not None:
        classes[~valid] = NODATA
    return classes


BAND_DESCRIPTION = "land cover class"


def class_tags(table: ClassTable) -> dict[str, str]:
    """Band metadata naming each class id, and 255: ``{"CLASS_0": "background", ...,
    "CLASS_255": "no data"}``."""
    return {**{f"CLASS_{i}": name for i, name in enumerate(table.names)},
            f"CLASS_{NODATA}": "no data"}


def gdal_metadata(table: ClassTable) -> str:
    """GDAL_METADATA XML naming band 1 and each class id, read by GDAL (``gdalinfo``, QGIS's
    layer properties, ``rasterio`` ``tags(1)``) as band metadata (:func:`class_tags`)."""
    from xml.sax.saxutils import escape

    items = [f'<Item name="{key}" sample="0">{escape(name)}</Item>'
             for key, name in class_tags(table).items()]
    items.append(f'<Item name="DESCRIPTION" sample="0" role="description">{BAND_DESCRIPTION}</Item>')
    return "<GDALMetadata>" + "".join(items) + "</GDALMetadata>"


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
    tags = [(code, dtype, count, value, True)
            for code, dtype, count, value in (georef.tags if georef else [])]
    tags += [(GDAL_METADATA, 2, 0, gdal_metadata(table), True),  # 2: TIFF ASCII
             (GDAL_NODATA, 2, 0, str(NODATA), True)]
    buf = io.BytesIO()
    tifffile.imwrite(buf, classes, photometric="palette", colormap=colormap,
                     compression="zlib", metadata=None, software=False, extratags=tags)
    return buf.getvalue()


def class_counts(classes: np.ndarray) -> np.ndarray:
    """(256,) int64 pixel count of each id in (H, W) uint8 ``classes`` (255: no data)."""
    return np.bincount(classes.reshape(-1), minlength=256).astype(np.int64)


def summary_from_counts(counts: np.ndarray, width: int, height: int, table: ClassTable,
                        crs: Optional[str], pixel_area_m2: Optional[float],
                        georeferenced: bool) -> dict:
    """The JSON summary from (256,) pixel counts per id: per class pixels, fraction of the
    valid pixels and area in m^2 where the pixel area is known; ``nodata_pixels`` apart."""
    nodata = int(counts[NODATA])
    total = int(counts.sum()) - nodata
    return {
        "width": int(width), "height": int(height),
        "georeferenced": georeferenced, "crs": crs, "pixel_area_m2": pixel_area_m2,
        "nodata_pixels": nodata,
        "classes": [{"id": i, "name": name, "color": list(c), "pixels": int(counts[i]),
                     "fraction": float(counts[i] / total) if total else 0.0,
                     "area_m2": None if pixel_area_m2 is None else float(counts[i] * pixel_area_m2)}
                    for i, (name, c) in enumerate(zip(table.names, table.colors))],
    }


def class_summary(classes: np.ndarray, table: ClassTable,
                  georef: Optional[GeoReference]) -> dict:
    """:func:`summary_from_counts` of one (H, W) class map."""
    return summary_from_counts(class_counts(classes), classes.shape[1], classes.shape[0], table,
                               georef.crs if georef else None,
                               georef.pixel_area_m2 if georef else None, georef is not None)


def overlay_rgb(rgb: np.ndarray, classes: np.ndarray, table: ClassTable) -> np.ndarray:
    """(H, W, 3) uint8: the input with the class colours blended over it (no data unblended)."""
    painted = table.palette()[classes].astype(np.float32)
    blend = rgb.astype(np.float32) * (1 - OVERLAY_ALPHA) + painted * OVERLAY_ALPHA
    nodata = classes == NODATA
    blend[nodata] = rgb[nodata]
    return np.clip(blend, 0, 255).astype(np.uint8)


def encode_overlay(rgb: np.ndarray, classes: np.ndarray, table: ClassTable) -> bytes:
    """:func:`overlay_rgb` as JPEG (quality 90)."""
    buf = io.BytesIO()
    Image.fromarray(overlay_rgb(rgb, classes, table)).save(buf, format="JPEG", quality=90)
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
