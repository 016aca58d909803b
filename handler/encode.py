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
- ``npy``: the class ids (H, W) uint8 as a NumPy ``.npy`` array, the bulk format's answer
  (nothing to encode or decode);
- ``overlay``: the input image with the class colours blended over it, as JPEG (no-data pixels
  shown unblended), with a legend of the class colours in its lower left corner (when the
  picture is at least twice the legend's size: :func:`add_legend`).

Legends (:func:`legend_box`, :func:`legend_strip`) are drawn with Pillow's built-in bitmap font
(no font file, the same pixels everywhere) and cached per class table, so the overlay pays a
copy of a few thousand pixels for its legend.
"""
from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from handler.decode import GeoReference
from model.class_table import IGNORE_INDEX, ClassTable

OVERLAY_ALPHA = 0.45
NODATA = IGNORE_INDEX
"""Class id of a pixel with no data in the input."""
GDAL_METADATA, GDAL_NODATA = 42112, 42113
"""GDAL's private TIFF tags (ASCII): XML metadata, and the nodata value."""


def mark_nodata(classes: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
    """(H, W) class ids with :data:`NODATA` where ``valid`` (H, W) bool is False (in place);
    any shape, ``valid`` of the same."""
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


def encode_npy(classes: np.ndarray) -> bytes:
    """(H, W) uint8 ids, or (N, H, W) for a stack of images -> ``.npy`` bytes (the bulk
    format's answer: no encoder, 128-byte header)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(classes, dtype=np.uint8),
                              allow_pickle=False)
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


LEGEND_SWATCH = 12
"""Side in pixels of a legend's colour swatch (before scaling); the bitmap font is 11 px tall."""
LEGEND_ROW = 15
"""Height in pixels of one legend line (before scaling)."""
LEGEND_PAD = 4
"""Pixels around a legend's entries and between a swatch and its name (before scaling)."""


def _legend_entries(names: tuple[str, ...]) -> tuple[ImageFont.ImageFont, list[int]]:
    """Pillow's bitmap font and the width in pixels of each entry (swatch, gap, name)."""
    font = ImageFont.load_default_imagefont()
    return font, [LEGEND_SWATCH + LEGEND_PAD + int(font.getbbox(n)[2]) for n in names]


def _draw_entry(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, x: int, y: int, name: str,
                color: tuple[int, int, int]) -> None:
    """A swatch (black outline, class colour inside) and the class name, top left at (x, y)."""
    top = y + (LEGEND_ROW - LEGEND_SWATCH) // 2
    draw.rectangle((x, top, x + LEGEND_SWATCH - 1, top + LEGEND_SWATCH - 1), fill=color,
                   outline=(0, 0, 0))
    draw.text((x + LEGEND_SWATCH + LEGEND_PAD, y + 1), name, fill=(0, 0, 0), font=font)


@functools.lru_cache(maxsize=32)
def _box(names: tuple[str, ...], colors: tuple[tuple[int, int, int], ...], scale: int
         ) -> np.ndarray:
    font, widths = _legend_entries(names)
    w, h = max(widths) + 2 * LEGEND_PAD, len(names) * LEGEND_ROW + LEGEND_PAD
    im = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, w - 1, h - 1), outline=(90, 90, 90))
    for k, (name, color) in enumerate(zip(names, colors)):
        _draw_entry(draw, font, LEGEND_PAD, LEGEND_PAD // 2 + k * LEGEND_ROW, name, color)
    out = np.asarray(im)
    if scale != 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    out.setflags(write=False)
    return out


def legend_box(table: ClassTable, scale: int = 1) -> np.ndarray:
    """(h, w, 3) uint8, read-only: a white box, one line per class (colour swatch and name),
    enlarged ``scale`` times (nearest neighbour). About 84 x 79 px for five classes at scale 1.
    Cached per table and scale: a served overlay pays only for pasting it."""
    return _box(table.names, table.colors, scale)


def legend_strip(table: ClassTable, width: int, scale: int = 1) -> np.ndarray:
    """(h, width, 3) uint8: the class swatches and names left to right on white, wrapped onto
    more lines when ``width`` is too narrow (an entry wider than the strip is cut off)."""
    font, widths = _legend_entries(tuple(table.names))
    inner = max(1, width // scale - 2 * LEGEND_PAD)
    rows: list[list[int]] = [[]]
    used = 0
    for k, w in enumerate(widths):
        if rows[-1] and used + w > inner:
            rows.append([])
            used = 0
        rows[-1].append(k)
        used += w + 3 * LEGEND_PAD
    im = Image.new("RGB", (max(1, width // scale), len(rows) * LEGEND_ROW + LEGEND_PAD),
                   (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for r, row in enumerate(rows):
        x = LEGEND_PAD
        for k in row:
            _draw_entry(draw, font, x, LEGEND_PAD // 2 + r * LEGEND_ROW, table.names[k],
                        table.colors[k])
            x += widths[k] + 3 * LEGEND_PAD
    strip = np.asarray(im).repeat(scale, axis=0).repeat(scale, axis=1)
    out = np.full((strip.shape[0], width, 3), 255, np.uint8)
    out[:, :strip.shape[1]] = strip
    return out


def legend_scale(height: int, width: int) -> int:
    """How many times to enlarge a legend on an (height, width) picture: 1 up to about 1000 px
    on the longest side, then one more per 700 px (3 on a 2048 px preview)."""
    return max(1, round(max(height, width) / 700))


def add_legend(picture: np.ndarray, table: ClassTable, margin: int = 6) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 with :func:`legend_box` (scaled by :func:`legend_scale`)
    copied into its lower left corner, ``margin`` px from the edges. A picture less than twice
    the legend's size in either direction is returned unchanged: the legend would hide it."""
    h, w = picture.shape[:2]
    box = legend_box(table, legend_scale(h, w))
    bh, bw = box.shape[:2]
    if 2 * bh > h or 2 * bw > w:
        return picture
    out = picture if picture.flags.writeable else picture.copy()
    out[h - margin - bh:h - margin, margin:margin + bw] = box
    return out


def encode_overlay(rgb: np.ndarray, classes: np.ndarray, table: ClassTable) -> bytes:
    """:func:`overlay_rgb` with :func:`add_legend`, as JPEG (quality 90)."""
    buf = io.BytesIO()
    picture = add_legend(overlay_rgb(rgb, classes, table), table)
    Image.fromarray(picture).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


Encoder = Callable[[np.ndarray, np.ndarray, ClassTable, Optional[GeoReference]], bytes]
"""(classes (H, W) uint8, rgb (H, W, 3) uint8, class table, georeference or None) -> body."""


@dataclass(frozen=True)
class OutputFormat:
    """A response format: its ``name``, other names a client may ask for (``aliases``), the
    ``Accept`` media types that choose it, the ``content_type`` it is answered with, and its
    ``encoder``."""

    name: str
    content_type: str
    encoder: Encoder
    aliases: tuple[str, ...] = ()
    accept: tuple[str, ...] = ()


FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("png", "image/png", lambda c, rgb, t, g: encode_png(c, t),
                 accept=("image/png", "image/*", "*/*")),
    OutputFormat("geotiff", "image/tiff", lambda c, rgb, t, g: encode_geotiff(c, t, g),
                 aliases=("tiff", "tif"), accept=("image/tiff", "image/geotiff")),
    OutputFormat("json", "application/json",
                 lambda c, rgb, t, g: json.dumps(class_summary(c, t, g)).encode(),
                 accept=("application/json",)),
    OutputFormat("overlay", "image/jpeg", lambda c, rgb, t, g: encode_overlay(rgb, c, t),
                 aliases=("jpeg", "jpg"), accept=("image/jpeg",)),
    OutputFormat("npy", "application/x-npy", lambda c, rgb, t, g: encode_npy(c),
                 aliases=("numpy",), accept=("application/x-npy",)),
)}
"""Every response format, the one table that request parsing and encoding read."""


def encode(fmt: str, classes: np.ndarray, rgb: np.ndarray, table: ClassTable,
           georef: Optional[GeoReference]) -> tuple[bytes, str]:
    """(body, content type) of ``classes`` in format ``fmt`` (a key of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    found = FORMATS[fmt]
    return found.encoder(classes, rgb, table, georef), found.content_type
